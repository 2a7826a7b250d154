"""Input-pipeline benchmark: batches per second against what the training step consumes.

    python benchmarks/input_pipeline.py [--data_root ../shared/data] [--batches 40]

1. Prepares the release recipe's corpora (librispeech/, speechocean762/, speechcommands/, with
   waveforms) into a fresh TFDS directory.
2. Times the batch reader (hive/data/batches.py on grain) at the release batch shape
   (48 speakers x 3 utterances, 160-frame crops), all three corpora together, for
     * log-mel crops (no waveform augmentation), and
     * waveform crops with every waveform augmentation on at the default probabilities
       (simulated reverb, generated noise, babble read from other training speakers,
       telephone band with G.711, band-pass/EQ, gain; music needs a folder and is off),
   each with 0 (threads of one process), 1 and 2 worker processes.
3. Times the release training step (configs/release.py: TDNN-128, 48 x 3, all four losses)
   in this process: the demand the pipeline has to meet.

Prints a table, writes the "Input pipeline" section of benchmarks/RESULTS.md and prints one
JSON line last (batches/s per setting, the step's batches/s and the ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))
import results  # noqa: E402

CORPORA = ("librispeech", "speechocean762", "speechcommands")  # The release recipe's three.


def release_config(roots, data_dir, augment: bool):
  from configs import release
  c = release.get_config()
  c.data.root, c.data.data_dir = ",".join(str(r) for r in roots), str(data_dir)
  c.data.store_waveform = True  # One preparation serves both paths.
  c.augment.wave.enabled = augment
  c.augment.wave.cache_dir = str(pathlib.Path(data_dir) / "rirs")
  return c


def time_reader(config, inputs, workers: int, batches: int, warmup: int) -> float:
  """Batches per second of the training input pipeline, after `warmup` batches."""
  from hive.data import input_pipeline
  config.data.workers = workers
  it = input_pipeline.train_batches(inputs, config, start_step=0)
  for _ in range(warmup):
    next(it)
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches / (time.perf_counter() - start)


def time_step(config, inputs, steps: int) -> float:
  """Training steps per second at the release shape (compiled first), on a fixed batch."""
  import jax
  import numpy as np
  from hive import parallel, train
  from hive.data import input_pipeline
  mesh = parallel.make_mesh()
  state = train._init_state(config, inputs.table.num_speakers, mesh)
  step = train.make_train_step(config, mesh)
  batch = parallel.global_batch(next(input_pipeline.train_batches(inputs, config, 0)), mesh)
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return 1 / float(np.median(times))


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--data_root", default="../shared/data")
  ap.add_argument("--batches", type=int, default=40, help="Batches timed after warm-up.")
  ap.add_argument("--warmup", type=int, default=4)
  ap.add_argument("--workers", default="0,1,2", help="Worker processes to time.")
  ap.add_argument("--steps", type=int, default=5, help="Training steps timed.")
  ap.add_argument("--no_write", action="store_true")
  args = ap.parse_args(argv)
  from hive import cli
  from hive.data import input_pipeline
  cli.hide_gpus_from_tensorflow()

  data_root = pathlib.Path(args.data_root)
  data_root = data_root if data_root.is_absolute() else (REPO / data_root).resolve()
  roots = [data_root / name for name in CORPORA]
  missing = [r for r in roots if not r.is_dir()]
  if missing:
    raise SystemExit(f"error: {missing[0]}: not found")
  workers = [int(w) for w in args.workers.split(",")]
  with tempfile.TemporaryDirectory(prefix="hive_bench_pipeline_") as data_dir:
    start = time.perf_counter()
    base = release_config(roots, data_dir, augment=False)
    inputs = input_pipeline.load_inputs(base)
    prepare_seconds = time.perf_counter() - start
    hours = sum(c.report.hours for c in inputs.corpora)
    rates = {}
    for augment in (False, True):
      config = release_config(roots, data_dir, augment)
      for w in workers:
        name = f"{'waveform, augmented' if augment else 'log-mel'}, {w} workers"
        print(f"timing {name} ...", file=sys.stderr, flush=True)
        rates[name] = time_reader(config, inputs, w, args.batches, args.warmup)
    print("timing the training step ...", file=sys.stderr, flush=True)
    step_rate = time_step(base, inputs, args.steps)

  env = results.machine()
  lines = [
      "## Input pipeline", "",
      f"Run {env['date']} on {env['platform']} ({env['cpu_count']} CPUs); "
      f"`python benchmarks/input_pipeline.py --batches {args.batches}`. The three shared corpora "
      f"({hours:.2f} h, {len(inputs.table.speakers)} training speakers with their "
      "speed-perturbed copies) prepared with waveforms in "
      f"{prepare_seconds:.0f} s (hours/min: {hours / (prepare_seconds / 60):.2f}, including "
      "TensorFlow's start). Batches at the release shape, 48 x 3 crops of 160 frames, read "
      "through grain; the training step (configs/release.py, TDNN-128, all four losses) timed "
      "alone in the same process, on a fixed batch.", "",
      "| batches | workers | batches / s | x the step's demand |", "|---|---:|---:|---:|"]
  for name, rate in rates.items():
    kind, w = name.rsplit(", ", 1)
    lines.append(f"| {kind} | {w.split()[0]} | {rate:.2f} | {rate / step_rate:.1f} |")
  lines += ["", f"The step: {step_rate:.2f} steps/s ({1 / step_rate:.2f} s a step).", ""]
  section = "\n".join(lines)
  print(section)
  if not args.no_write:
    results.update_section("Input pipeline", section)
  record = {"batches_per_s": {k: round(v, 3) for k, v in rates.items()},
            "step_per_s": round(step_rate, 3),
            "ratio": {k: round(v / step_rate, 2) for k, v in rates.items()},
            "hours": round(hours, 3), "prepare_seconds": round(prepare_seconds, 1), **env}
  print(json.dumps(record))
  return 0


if __name__ == "__main__":
  sys.exit(main())
