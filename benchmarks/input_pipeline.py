"""Input-pipeline benchmark: corpus preparation speed and N x M batch throughput.

    python benchmarks/input_pipeline.py [--data_root ../shared/data] [--batches 100]

1. Prepares each shared corpus (librispeech/, speechocean762/) into a fresh
   temporary TFDS dir and reports hours of audio prepared per minute of wall
   time. The time includes TensorFlow/TFDS overhead (the first corpus also pays
   for importing TensorFlow), not only decoding and feature extraction.
2. From the prepared librispeech dataset, times
   `pipeline.make_dataset(pool, 64, 10, 160, seed=0)`: a warm-up, then
   `--batches` batches; reports batches/s and utterances (rows)/s.

Prints a markdown table, writes/updates the "## Input pipeline" section of
benchmarks/RESULTS.md, and prints one JSON object with the key figures as its
last line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import results  # noqa: E402

RESULTS = results.RESULTS
SECTION = "## Input pipeline"
CORPORA = ("librispeech", "speechocean762")
N_SPEAKERS, N_UTTERANCES, CROP_FRAMES = 64, 10, 160


def prepare_corpus(root: pathlib.Path, workers: int | None) -> dict:
  from hive.data import builder
  with tempfile.TemporaryDirectory(prefix="hive_bench_tfds_") as data_dir:
    start = time.perf_counter()
    prepared, report = builder.prepare(root, data_dir=data_dir, num_workers=workers)
    seconds = time.perf_counter() - start
    examples = builder.read_examples(prepared)  # Before the temporary dir goes.
  return {
      "utterances": report.utterances, "speakers": report.speakers,
      "skipped": len(report.skips), "hours": report.hours, "seconds": seconds,
      "hours_per_min": report.hours / (seconds / 60), "examples": examples,
  }


def time_batches(examples, batches: int, warmup: int) -> dict:
  from hive.data import batches
  pool = batches.FramePool.from_examples(examples)
  ds = batches.make_dataset(pool, N_SPEAKERS, N_UTTERANCES, CROP_FRAMES, seed=0)
  it = iter(ds)
  shape = None
  for _ in range(warmup):
    shape = tuple(next(it)["features"].shape)
  start = time.perf_counter()
  for _ in range(batches):
    batch = next(it)
  batch["features"].numpy()  # Make sure the last batch is materialised.
  seconds = time.perf_counter() - start
  return {"batches": batches, "seconds": seconds, "batches_per_s": batches / seconds,
          "utterances_per_s": batches * N_SPEAKERS * N_UTTERANCES / seconds,
          "batch_shape": list(shape or batch["features"].shape),
          "pool_frames": int(pool.frames.shape[0]), "pool_speakers": pool.num_speakers}


def time_consumption(steps: int = 3, warmup: int = 2) -> float:
  """Median seconds of hive's training step at the same batch shape (the fastest encoder
  setting of benchmarks/train_step.py): what the pipeline has to keep up with."""
  import numpy as np
  import train_step
  assert (train_step.N, train_step.M, train_step.T) == (N_SPEAKERS, N_UTTERANCES, CROP_FRAMES)
  step = train_step.HiveStep("lstm")
  for _ in range(warmup):
    step()
  return float(np.median([train_step.timed(step) for _ in range(steps)]))


def versions() -> dict:
  import librosa
  import tensorflow as tf
  import tensorflow_datasets as tfds
  return {"python": platform.python_version(), "tensorflow": tf.__version__,
          "tensorflow_datasets": tfds.__version__, "librosa": librosa.__version__}


def markdown(prepared: dict, batches: dict | None, skipped: list, env: dict,
             step_seconds: float | None = None) -> str:
  lines = [
      SECTION, "",
      f"Run {env['date']} on {env['platform']} ({env['cpu_count']} CPUs, "
      f"{env['machine']}); TensorFlow {env['tensorflow']}, TFDS "
      f"{env['tensorflow_datasets']}, librosa {env['librosa']}, Python {env['python']}. "
      "CPU only; the machine may be shared, so timings are indicative.",
      "",
      "Preparation (`builder.prepare` into a fresh TFDS dir; includes TF/TFDS overhead, "
      f"{env['workers']} worker threads):", "",
      "| corpus | utterances | speakers | skipped | hours of audio | wall s | hours / min |",
      "|---|---:|---:|---:|---:|---:|---:|",
  ]
  for name, p in prepared.items():
    lines.append(f"| {name} | {p['utterances']} | {p['speakers']} | {p['skipped']} | "
                 f"{p['hours']:.3f} | {p['seconds']:.1f} | {p['hours_per_min']:.3f} |")
  for name, why in skipped:
    lines.append(f"| {name} | skipped: {why} | | | | | |")
  lines.append("")
  if batches:
    lines += [
        f"Batches (`pipeline.make_dataset(pool, {N_SPEAKERS}, {N_UTTERANCES}, "
        f"{CROP_FRAMES}, seed=0)` on the prepared librispeech pool, "
        f"{batches['pool_speakers']} speakers, {batches['pool_frames']} frames; "
        f"batch {batches['batch_shape']}):", "",
        "| batches timed | seconds | batches / s | utterances / s |",
        "|---:|---:|---:|---:|",
        f"| {batches['batches']} | {batches['seconds']:.2f} | "
        f"{batches['batches_per_s']:.1f} | {batches['utterances_per_s']:.0f} |", "",
    ]
    if step_seconds:
      lines += [f"Consumption: hive's training step at this batch shape (3x256 LSTM, bf16 "
                f"matmuls) takes {step_seconds:.2f} s, i.e. {1 / step_seconds:.3f} batches/s; "
                f"the pipeline delivers **{batches['batches_per_s'] * step_seconds:.0f}x** "
                "that.", ""]
  else:
    lines += ["Batches: not timed (librispeech not prepared).", ""]
  return "\n".join(lines)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--data_root", default="../shared/data",
                  help="Folder holding librispeech/ and speechocean762/; a relative path "
                       "is taken from the repository root.")
  ap.add_argument("--batches", type=int, default=100, help="Batches timed after warm-up.")
  ap.add_argument("--warmup", type=int, default=10, help="Batches drawn before timing.")
  ap.add_argument("--num_workers", type=int, default=None,
                  help="Feature-extraction threads (default: all cores).")
  ap.add_argument("--no_step", action="store_true",
                  help="Do not time the training step (the consumption the ratio is against).")
  ap.add_argument("--no_write", action="store_true", help="Do not update RESULTS.md.")
  args = ap.parse_args(argv)

  data_root = pathlib.Path(args.data_root)
  if not data_root.is_absolute():
    data_root = (REPO / data_root).resolve()
  workers = args.num_workers or os.cpu_count() or 1

  prepared, skipped = {}, []
  for name in CORPORA:
    root = data_root / name
    if not root.is_dir():
      why = f"{root} not found"
      print(f"skipping {name}: {why}", file=sys.stderr)
      skipped.append((name, why))
      continue
    print(f"preparing {root} ...", file=sys.stderr, flush=True)
    prepared[name] = prepare_corpus(root, workers)

  batches = None
  if "librispeech" in prepared:
    print("timing batches ...", file=sys.stderr, flush=True)
    batches = time_batches(prepared["librispeech"]["examples"], args.batches, args.warmup)

  step_seconds = None
  if batches and not args.no_step:
    print("timing the training step ...", file=sys.stderr, flush=True)
    step_seconds = time_consumption()

  env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
         "platform": platform.platform(), "machine": platform.machine(),
         "cpu_count": os.cpu_count(), "workers": workers, **versions()}
  section = markdown(prepared, batches, skipped, env, step_seconds)
  print(section)
  if not args.no_write:
    results.update_section(SECTION[3:], section)
    print(f"(updated {RESULTS})", file=sys.stderr)

  summary = {
      "batches_per_s": round(batches["batches_per_s"], 2) if batches else None,
      "utterances_per_s": round(batches["utterances_per_s"], 1) if batches else None,
      "prepare_hours_per_min": {k: round(v["hours_per_min"], 4) for k, v in prepared.items()},
      "prepare_seconds": {k: round(v["seconds"], 1) for k, v in prepared.items()},
      "hours": {k: v["hours"] for k, v in prepared.items()},
      "batch": [N_SPEAKERS, N_UTTERANCES, CROP_FRAMES],
      "train_step_s": round(step_seconds, 3) if step_seconds else None,
      "ratio": (round(batches["batches_per_s"] * step_seconds, 1)
                if batches and step_seconds else None),
      "cpu_count": os.cpu_count(), "date": env["date"],
  }
  print(json.dumps(summary), flush=True)
  return 0 if prepared else 1


if __name__ == "__main__":
  sys.exit(main())
