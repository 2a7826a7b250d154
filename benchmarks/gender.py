"""Gender accuracy by age: hive's gender head against linear probes on two embeddings.

    python benchmarks/gender.py [ROOT] [--workdir pretrained/hive-mtl] [--child_age 15]

ROOT (default ../shared/data/speechocean762) is a Kaldi dir with `spk2gender` and
`spk2age`. On the workdir's dev speakers in it, split into children (aged
`--child_age` or under) and adults, this scores per utterance:
  * hive's gender head (what `hive.evaluate` reports as gender accuracy);
  * a logistic-regression probe (scikit-learn defaults) on hive's embeddings and one on
    Resemblyzer's, each fitted on the workdir's training speakers in ROOT.
The probe on Resemblyzer's embedding asks how much gender a strong speaker embedding
trained on thousands of speakers carries for these voices: a ceiling for what a gender
head can read from a speaker embedding. Updates the "Gender by age" section of
RESULTS.md; the last line is one JSON object. Needs requirements-bench.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

import numpy as np

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import results  # noqa: E402


def read_ages(root) -> dict[str, int]:
  """ROOT/spk2age as {speaker: years}; a bad line is an error naming file and line."""
  path = pathlib.Path(root) / "spk2age"
  if not path.is_file():
    raise SystemExit(f"error: {path}: not found; this benchmark needs the speakers' ages")
  ages = {}
  for number, line in enumerate(path.read_text().splitlines(), 1):
    fields = line.split()
    if not fields:
      continue
    if len(fields) != 2 or not fields[1].isdigit():
      raise SystemExit(f"error: {path}:{number}: expected '<speaker> <years>', got {line!r}")
    ages[fields[0]] = int(fields[1])
  return ages



def utterances_of(root, workdir, split):
  """The reader's utterances of ROOT, restricted to the workdir's split speakers."""
  from hive import workdir as workdir_lib
  from hive.data import readers
  corpus = readers.read_corpus(root)
  utts = sorted(corpus.utterances, key=lambda u: u.id)
  if split != "all":
    wanted = set(workdir_lib.load_speakers(workdir)[split])
    prefix = pathlib.Path(root).resolve().name + "/"
    utts = [u for u in utts if u.speaker in wanted or prefix + u.speaker in wanted]
    if not utts:
      raise SystemExit(f"error: none of {workdir}'s {split} speakers are in {root}")
  return utts

def accuracy_by_group(predicted_female, female, groups: dict) -> dict:
  """{group: accuracy} over the utterances each boolean mask selects (None if empty)."""
  return {name: (float(np.mean(predicted_female[mask] == female[mask])) if mask.any() else None)
          for name, mask in groups.items()}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("root", nargs="?", default=str(REPO.parent / "shared/data/speechocean762"))
  ap.add_argument("--workdir", default=str(REPO / "pretrained" / "hive-mtl"))
  ap.add_argument("--child_age", type=int, default=15, help="Children: this age or under.")
  ap.add_argument("--no_write", action="store_true")
  args = ap.parse_args(argv)
  ages = read_ages(args.root)
  dev = [u for u in utterances_of(args.root, args.workdir, "dev") if u.gender in ("m", "f")]
  train = [u for u in utterances_of(args.root, args.workdir, "train") if u.gender in ("m", "f")]
  if not dev:
    raise SystemExit(f"error: no dev utterance of {args.root} has a gender label (spk2gender)")
  if len({u.gender for u in train}) < 2:
    raise SystemExit(f"error: the training speakers of {args.root} need both genders labelled "
                     "(spk2gender) to fit a probe")
  missing = sorted({u.speaker for u in dev + train} - set(ages))
  if missing:
    raise SystemExit(f"error: {args.root}/spk2age has no age for speakers {missing[:5]}")
  female = {s: np.array([u.gender == "f" for u in utts]) for s, utts in
            (("dev", dev), ("train", train))}
  child = np.array([ages[u.speaker] <= args.child_age for u in dev])
  groups = {"all": np.ones_like(child), "children": child, "adults": ~child}

  from sklearn.linear_model import LogisticRegression  # After the checks: they are quick.
  from hive.encoder import Encoder
  import reference_torch

  encoder = Encoder.from_workdir(args.workdir)
  hive_dev, p_female = encoder.embed_many([u.path for u in dev], with_gender=True)
  hive_train = encoder.embed_many([u.path for u in train])
  reference_dev = reference_torch.resemblyzer_embed_files([u.path for u in dev])
  reference_train = reference_torch.resemblyzer_embed_files([u.path for u in train])

  rows = {"hive gender head": accuracy_by_group(np.asarray(p_female) > 0.5, female["dev"],
                                                groups)}
  for name, fit_on, score in (("probe on hive's embedding", hive_train, hive_dev),
                              ("probe on Resemblyzer's embedding", reference_train,
                               reference_dev)):
    probe = LogisticRegression(max_iter=5000).fit(fit_on, female["train"])
    rows[name] = accuracy_by_group(probe.predict(score).astype(bool), female["dev"], groups)

  counts = {g: (int(m.sum()), len({u.speaker for u, x in zip(dev, m) if x}))
            for g, m in groups.items()}
  name = pathlib.Path(args.root).resolve().name
  pct = lambda v: "n/a" if v is None else f"{v:.1%}"
  lines = ["## Gender by age", "",
           f"{results.machine()['date']}; {name}, dev speakers of `{pathlib.Path(args.workdir).name}`"
           f" (step {encoder.step}); children: aged {args.child_age} or under. Per-utterance "
           f"accuracy. Probes: logistic regression fitted on the {len(train)} utterances of "
           f"{len({u.speaker for u in train})} training speakers in {name}.", "",
           "| classifier | " + " | ".join(f"{g} ({n} utt, {s} spk)" for g, (n, s) in
                                          counts.items()) + " |",
           "|---|" + "---:|" * len(groups)]
  for row, accuracy in rows.items():
    lines.append(f"| {row} | " + " | ".join(pct(accuracy[g]) for g in groups) + " |")
  section = "\n".join(lines) + "\n"
  print(section)
  if not args.no_write:
    results.update_section("Gender by age", section)
  print(json.dumps({"root": name, "step": encoder.step, "child_age": args.child_age,
                    "counts": counts, **rows}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
