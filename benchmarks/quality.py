"""Quality: hive's model and Resemblyzer's pretrained encoder under one protocol.

    python benchmarks/quality.py ROOT [--workdir pretrained/hive-mtl] [--split dev|all]

Both embed every utterance of ROOT (or the workdir's dev speakers in it) from
audio; the numbers are hive.evaluate's: EER and minDCF over all pairs (cosine),
one-shot identification accuracy (enrol each speaker's first utterance by
sorted id), and gender accuracy (hive's gender head; Resemblyzer has none, so
null). Updates the "Quality" section of RESULTS.md for ROOT; the last line is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import results  # noqa: E402

KEYS = ("eer", "min_dcf", "identification_accuracy", "gender_accuracy")


def utterances_of(root, workdir, split):
  """The reader's utterances of ROOT, restricted to the workdir's split speakers."""
  from hive import checkpoint
  from hive.data import readers
  corpus = readers.read_corpus(root)
  utts = sorted(corpus.utterances, key=lambda u: u.id)
  if split != "all":
    wanted = set(checkpoint.load_speakers(workdir)[split])
    prefix = pathlib.Path(root).resolve().name + "/"
    utts = [u for u in utts if u.speaker in wanted or prefix + u.speaker in wanted]
    if not utts:
      raise SystemExit(f"error: none of {workdir}'s {split} speakers are in {root}")
  return utts


def scores(embeddings, utts) -> dict:
  from hive import metrics
  speakers = [u.speaker for u in utts]
  out = metrics.verification(embeddings, speakers)
  out.update(metrics.one_shot_identification(embeddings, speakers, [u.id for u in utts]))
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("root")
  ap.add_argument("--workdir", default=str(REPO / "pretrained" / "hive-mtl"))
  ap.add_argument("--split", default="dev", choices=["dev", "all"])
  ap.add_argument("--no_write", action="store_true")
  args = ap.parse_args(argv)
  import numpy as np
  from hive.data import builder
  from hive.encoder import Encoder
  import reference_torch

  utts = utterances_of(args.root, args.workdir, args.split)
  paths = [u.path for u in utts]
  encoder = Encoder.from_workdir(args.workdir)
  hive_embeddings = encoder.embed_many(paths)
  rows = {"hive": scores(hive_embeddings, utts)}
  genders = np.array([builder.GENDER_CODES[u.gender] for u in utts])
  labelled = genders >= 0
  rows["hive"]["gender_accuracy"] = (float(np.mean(
      (encoder.gender_probability(hive_embeddings[labelled]) > 0.5) == (genders[labelled] == 1)))
      if labelled.any() else None)
  rows["Resemblyzer"] = scores(reference_torch.resemblyzer_embed_files(paths), utts)
  rows["Resemblyzer"]["gender_accuracy"] = None

  name = pathlib.Path(args.root).resolve().name
  fmt = lambda v: "n/a" if v is None else f"{v:.2%}"
  title = f"Quality: {name}"
  lines = [f"## {title}", "",
           f"{args.split} speakers: {len(utts)} utterances of {len({u.speaker for u in utts})} speakers; hive model "
           f"`{pathlib.Path(args.workdir).name}` step {encoder.step}; {results.machine()['date']}.",
           "", "| model | EER | minDCF (0.01) | one-shot ID accuracy | gender accuracy |",
           "|---|---:|---:|---:|---:|"]
  for model, r in rows.items():
    lines.append(f"| {model} | {r['eer']:.2%} | {r['min_dcf']:.3f} | "
                 f"{fmt(r['identification_accuracy'])} | {fmt(r['gender_accuracy'])} |")
  section = "\n".join(lines) + "\n"
  print(section)
  if not args.no_write:
    results.update_section(title, section)
  print(json.dumps({"root": name, "split": args.split, "utterances": len(utts),
                    **{m: {k: r.get(k) for k in KEYS} for m, r in rows.items()}}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
