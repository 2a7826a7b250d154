"""Does multi-task learning help? Same encoder, data and budget; one thing changed.

    python benchmarks/ablation.py [--config configs/release.py] [--steps 300] [--out runs/ablation]
        [--variants GE2E,triplet,speaker-ID,MTL] [--section "MTL ablation"]
        [--degrade none,telephone,noise:5]

Trains four models from the same config, differing only in the loss weights:
GE2E alone, triplet alone, speaker-ID alone, and the multi-task combination
(GE2E + triplet + speaker-ID + gender); `--variants` may add "triplet semi-hard"
(triplet alone with semi-hard mining) and "MTL semi-hard" (the combination with
semi-hard mining) and "no waveform augmentation" (the config without `augment.wave`, to
measure what waveform augmentation buys). Each is evaluated on the config's
held-out dev speakers of every corpus root with hive.evaluate's protocol (EER,
minDCF, one-shot identification; speakers with a single utterance as 3-s segments), clean and
under every `--degrade` condition (as `hive.evaluate --degrade`). Gender accuracy is a logistic-regression
probe fitted on training speakers' embeddings, the same for every variant (the
single-task models have no trained gender head); the MTL row also gives its
head's accuracy. Writes the "MTL ablation" section of RESULTS.md (or --section,
so a longer run of some variants keeps its own table); the last line is one
JSON object; the section is rewritten after each variant, so a long run that
stops keeps what it has. A variant whose workdir already holds its finished run
(`ablation_train.json`) is evaluated, not retrained.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import results  # noqa: E402


def _alone(term, **overrides):
  weights = {k: float(k == term) for k in ("ge2e", "triplet", "speaker_id", "gender")}
  return {**{f"loss.weights.{k}": v for k, v in weights.items()}, **overrides}


# Config overrides per variant. The default run is the first four.
VARIANTS = {
    "GE2E": _alone("ge2e"),
    "triplet": _alone("triplet"),  # Batch-hard, as in MTL.
    "speaker-ID": _alone("speaker_id"),
    "MTL": {},  # The config's own weights (GE2E + triplet + speaker-ID + gender).
    # Alone and from scratch, batch-hard mining collapses (every embedding alike, loss stuck
    # at the margin); semi-hard mining is the usual cure.
    "triplet semi-hard": _alone("triplet", **{"loss.triplet_mining": "semi_hard"}),
    # The combination with that cure in place of batch-hard: which mining suits MTL?
    "MTL semi-hard": {"loss.triplet_mining": "semi_hard"},
    # The recipe without corrupting the training waveforms (its dev scoring unchanged).
    "no waveform augmentation": {"augment.wave.enabled": False, "data.store_waveform": True},
}
DEFAULT_VARIANTS = ("GE2E", "triplet", "speaker-ID", "MTL")
RECORD = "ablation_train.json"  # A finished variant's training summary, in its workdir.
SEGMENT_SECONDS = 3.0


def train_variant(config_path, overrides, steps, workdir) -> dict:
  """Trains one variant and returns hive.main's summary; a variant already trained for
  `steps` into `workdir` is not retrained (its recorded summary keeps the training time of
  the hive.main call that finished it)."""
  record = pathlib.Path(workdir) / RECORD
  if record.is_file():
    summary = json.loads(record.read_text())
    if summary.get("steps") == steps:
      return summary
  flags = [f"--config={config_path}", f"--workdir={workdir}", f"--config.train.steps={steps}"]
  flags += [f"--config.{k}={v}" for k, v in overrides.items()]
  out = subprocess.run([sys.executable, "-m", "hive.main", *flags], cwd=REPO, text=True,
                       capture_output=True)
  if out.returncode:
    raise RuntimeError(f"training {workdir} failed:\n{out.stderr[-3000:]}")
  summary = json.loads(out.stdout.strip().splitlines()[-1])
  record.write_text(json.dumps(summary))
  return summary


def evaluate_variant(workdir, degrade=("none",)) -> dict:
  """Dev metrics per corpus root and condition ("<corpus>" clean, "<corpus>, <spec>"
  degraded), plus the train-speaker gender probe (clean)."""
  import numpy as np
  from sklearn.linear_model import LogisticRegression
  from hive import evaluate, workdir as workdir_lib
  from hive.data import builder, input_pipeline
  from hive.encoder import Encoder
  encoder = Encoder.from_workdir(workdir)
  config = workdir_lib.load_config(workdir)
  frames = round(SEGMENT_SECONDS * 1000 / encoder.feature_config.hop_ms)
  out = {}
  for root in input_pipeline.corpus_roots(config.data):
    degraded = [spec for spec in degrade if spec != "none"]
    storage = builder.Storage(store_waveform=bool(degraded))
    prepared, _ = builder.prepare(root, config.data.data_dir or None, encoder.feature_config,
                                  storage=storage)
    examples = builder.read_examples(prepared)
    dev = evaluate.select_split(examples, root, workdir, "dev")
    probe = None
    for spec in degrade:
      scored = dev if spec == "none" else evaluate.degraded(prepared, dev, spec,
                                                            encoder.feature_config)
      # Single-utterance speakers as segments, the others across utterances (quality.py).
      scored = scored.cut_segments(frames, single_utterance_only=True)
      report = evaluate.evaluate(encoder, scored)
      embeddings = report.pop("_embeddings")
      if probe is None and spec == "none":
        train = evaluate.select_split(examples, root, workdir, "train")
        known = train.genders >= 0
        if known.any() and len(set(train.genders[known])) > 1:
          probe = LogisticRegression(max_iter=2000).fit(
              encoder.embed_features(train.features)[known], train.genders[known])
      dev_known = scored.genders >= 0
      report["gender_probe_accuracy"] = (float(np.mean(
          probe.predict(embeddings[dev_known]) == scored.genders[dev_known]))
          if probe is not None and dev_known.any() and spec == "none" else None)
      name = pathlib.Path(root).name
      out[name if spec == "none" else f"{name}, {spec}"] = report
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--config", default="configs/release.py")
  ap.add_argument("--steps", type=int, default=300)
  ap.add_argument("--out", default="runs/ablation")
  ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                  help="comma-separated subset of " + ", ".join(VARIANTS))
  ap.add_argument("--section", default="MTL ablation", help="RESULTS.md section to write")
  ap.add_argument("--degrade", default="none",
                  help="Conditions the dev speakers are scored under: none, telephone, "
                       "noise:SNR, reverb (as hive.evaluate --degrade), comma-separated.")
  ap.add_argument("--no_write", action="store_true")
  args = ap.parse_args(argv)
  names = [n.strip() for n in args.variants.split(",") if n.strip()]
  unknown = [n for n in names if n not in VARIANTS]
  if unknown or not names:
    ap.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")

  rows = {}
  for name in names:
    workdir = REPO / args.out / name.lower().replace("-", "_").replace(" ", "_")
    print(f"training {name} -> {workdir}", file=sys.stderr, flush=True)
    summary = train_variant(args.config, VARIANTS[name], args.steps, workdir)
    rows[name] = {"train_seconds": summary["seconds"],
                  "corpora": evaluate_variant(workdir, [d.strip() for d in
                                                        args.degrade.split(",") if d.strip()])}
    section = section_text(args, rows, len(names))
    if not args.no_write:  # After every variant: a long run that stops keeps what it has.
      results.update_section(args.section, section)
  print(section)
  print(json.dumps({name: {c: {k: r.get(k) for k in ("eer", "min_dcf", "identification_accuracy",
                                                    "gender_probe_accuracy", "gender_accuracy")}
                           for c, r in row["corpora"].items()} for name, row in rows.items()}))
  return 0


def trains_gender_head(name: str) -> bool:
  """Whether the variant keeps the config's gender loss (the MTL ones do; the release
  recipe's gender weight is above 0, so a variant that does not set it trains the head)."""
  return VARIANTS[name].get("loss.weights.gender", 1.0) > 0


def section_text(args, rows: dict, planned: int) -> str:
  pct = lambda v: "n/a" if v is None else f"{v:.2%}"
  lines = [f"## {args.section}", "",
           f"{results.machine()['date']}; `{args.config}` with {args.steps} steps for every "
           "variant (same encoder, data, batches and schedule; only the loss weights differ, "
           "and for the semi-hard variants the triplet mining, for 'no waveform augmentation' "
           "the waveform augmentation). "
           "Dev speakers only (speakers with a single utterance scored as 3-s segments, as "
           "in benchmarks/quality.py; a condition after the corpus: its dev audio corrupted "
           "as hive.evaluate --degrade does). Gender: logistic-regression "
           "probe on training speakers' embeddings (the MTL variants: their gender head in "
           "brackets)."
           + (f" {len(rows)} of {planned} variants so far." if len(rows) < planned else ""), "",
           "| variant | corpus | EER | minDCF | one-shot ID | gender | train s |",
           "|---|---|---:|---:|---:|---:|---:|"]
  for name, row in rows.items():
    for corpus, r in row["corpora"].items():
      gender = pct(r.get("gender_probe_accuracy"))
      if trains_gender_head(name) and r.get("gender_accuracy") is not None:
        gender += f" ({r['gender_accuracy']:.2%})"
      lines.append(f"| {name} | {corpus} | {r['eer']:.2%} | {r['min_dcf']:.3f} | "
                   f"{pct(r['identification_accuracy'])} | {gender} | "
                   f"{row['train_seconds']:.0f} |")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  sys.exit(main())
