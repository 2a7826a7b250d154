"""Data at scale: does training's memory and speed stay flat as the corpus grows 10x?

    python benchmarks/data_scale.py [--speakers 60] [--small_utterances 40] [--scale 10]
                                    [--steps 30] [--workdir /tmp/hive_data_scale]

1. Builds two synthetic corpora of the same speakers in the LibriSpeech layout: the small
   one generated (hive.data.synthetic, 2-4 s utterances), the large one `--scale` times its
   utterances (each speaker's recordings again under new chapter ids, as hard links: real
   FLAC files, decoded and prepared like any other).
2. Prepares each into a fresh TFDS directory with 1 and with 2 local worker processes and
   reports hours of audio prepared per minute of wall time.
3. Trains `--steps` steps on each, the same config (the release TDNN at the release batch
   shape), each in its own fresh process, and reports the peak RSS of training and its
   steps/s over the last 10 steps.

Prints a table, writes the "Data at scale" section of benchmarks/RESULTS.md, and prints one
JSON line last: corpus_ratio (hours large / small), rss_ratio and throughput_ratio (large /
small) and prepare_hours_per_minute for 1 and 2 workers (on the large corpus).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import time

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import results  # noqa: E402


def make_corpora(work: pathlib.Path, speakers: int, utterances: int, scale: int):
  from hive.data import synthetic
  small = synthetic.generate_corpus(work / "small", num_speakers=speakers,
                                    utterances_per_speaker=utterances, seed=7)
  large = work / f"large_x{scale}"
  marker = large / "COPIES.json"
  if not marker.is_file():
    shutil.rmtree(large, ignore_errors=True)
    for path in sorted(small.rglob("*.flac")):
      speaker, chapter, utt = path.stem.split("-")
      for copy in range(scale):
        new_chapter = f"{copy}{chapter}"
        target = (large / path.parent.parent.parent.relative_to(small) / speaker / new_chapter
                  / f"{speaker}-{new_chapter}-{utt}.flac")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
    shutil.copy(small / "SPEAKERS.TXT", large / "SPEAKERS.TXT")
    marker.write_text(json.dumps({"source": str(small), "scale": scale}))
  return small, large


def prepare(root: pathlib.Path, data_dir: pathlib.Path, workers: int, steps: int) -> dict:
  from hive.data import builder, input_pipeline
  shutil.rmtree(data_dir, ignore_errors=True)
  # What training reads (the release recipe's waveforms too): else the training process would
  # prepare the corpus again itself, and its peak memory would measure preparation.
  storage = input_pipeline.storage(train_config(root, data_dir, steps))
  start = time.perf_counter()
  _, report = builder.prepare(root, data_dir, num_workers=workers, storage=storage)
  seconds = time.perf_counter() - start
  return {"hours": report.hours, "utterances": report.utterances, "seconds": seconds,
          "hours_per_minute": report.hours / (seconds / 60)}


def train_config(root, data_dir, steps: int):
  from hive import config as config_lib
  sys.path.insert(0, str(REPO))
  from configs import release
  c = release.get_config()
  c.data.root, c.data.data_dir = str(root), str(data_dir)
  c.data.speed_factors = ()
  # One synthetic corpus: none of the release's listed dev speakers or per-corpus weights.
  c.data.dev_speakers_file, c.data.corpus_weights, c.eval.degrade = "", (), ""
  c.train.steps, c.train.log_every, c.train.eval_every = steps, 10, 10 * steps
  c.train.checkpoint_every = steps
  c.eval.centring_utterances = 100
  return c


def child(args) -> None:
  """One training run in this (fresh) process; prints its speed and peak memory."""
  from hive import cli, train
  cli.hide_gpus_from_tensorflow()
  summary = train.train_and_evaluate(train_config(args.root, args.data_dir, args.steps),
                                     args.run_dir)
  peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(json.dumps({"steps_per_second": summary["steps_per_second"], "peak_rss_mb": peak_mb}))


def train_in_fresh_process(root, data_dir, run_dir, steps) -> dict:
  shutil.rmtree(run_dir, ignore_errors=True)
  cmd = [sys.executable, __file__, "--child", "--root", str(root), "--data_dir", str(data_dir),
         "--run_dir", str(run_dir), "--steps", str(steps)]
  out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
  if out.returncode:
    raise SystemExit(f"training on {root} failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--speakers", type=int, default=60)
  ap.add_argument("--small_utterances", type=int, default=40)
  ap.add_argument("--scale", type=int, default=10)
  ap.add_argument("--steps", type=int, default=30)
  ap.add_argument("--workdir", default="/tmp/hive_data_scale")
  ap.add_argument("--no_write", action="store_true")
  ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  ap.add_argument("--root", help=argparse.SUPPRESS)
  ap.add_argument("--data_dir", help=argparse.SUPPRESS)
  ap.add_argument("--run_dir", help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.child:
    return child(args)

  work = pathlib.Path(args.workdir)
  small, large = make_corpora(work, args.speakers, args.small_utterances, args.scale)
  rows = {}
  for name, root in (("small", small), ("large", large)):
    prep = {w: prepare(root, work / f"tfds_{name}_{w}", w, args.steps) for w in (1, 2)}
    trained = train_in_fresh_process(root, work / f"tfds_{name}_2", work / f"run_{name}",
                                     args.steps)
    rows[name] = {"prepare": prep, "train": trained, "hours": prep[1]["hours"],
                  "utterances": prep[1]["utterances"]}

  s, l = rows["small"], rows["large"]
  record = {
      "corpus_ratio": round(l["hours"] / s["hours"], 2),
      "hours_small": s["hours"], "hours_large": l["hours"],
      "rss_ratio": round(l["train"]["peak_rss_mb"] / s["train"]["peak_rss_mb"], 3),
      "throughput_ratio": round(l["train"]["steps_per_second"] / s["train"]["steps_per_second"],
                                3),
      "peak_rss_mb_small": round(s["train"]["peak_rss_mb"]),
      "peak_rss_mb_large": round(l["train"]["peak_rss_mb"]),
      "steps_per_second_small": round(s["train"]["steps_per_second"], 3),
      "steps_per_second_large": round(l["train"]["steps_per_second"], 3),
      "prepare_hours_per_minute": {str(w): round(l["prepare"][w]["hours_per_minute"], 2)
                                   for w in (1, 2)},
      "prepare_speedup_2_workers": round(l["prepare"][2]["hours_per_minute"]
                                         / l["prepare"][1]["hours_per_minute"], 2),
      **results.machine(),
  }
  lines = [
      "## Data at scale", "",
      f"Run {record['date']} on {record['platform']} ({record['cpu_count']} CPUs); "
      f"`python benchmarks/data_scale.py --speakers {args.speakers} --small_utterances "
      f"{args.small_utterances} --scale {args.scale} --steps {args.steps}`. Two synthetic corpora "
      f"of the same {args.speakers} speakers; the large one holds {args.scale}x the small one's "
      "utterances. Training: the release TDNN at the release batch shape (48 x 3), no speed "
      "perturbation, each run in its own fresh process; steps/s over the last 10 steps, peak "
      "RSS of the training process.", "",
      "| corpus | hours | utterances | prepare, 1 worker (h/min) | prepare, 2 workers (h/min) "
      "| train steps/s | peak RSS (MB) |",
      "|---|---:|---:|---:|---:|---:|---:|"]
  for name in ("small", "large"):
    r = rows[name]
    lines.append(f"| {name} | {r['hours']:.2f} | {r['utterances']} | "
                 f"{r['prepare'][1]['hours_per_minute']:.2f} | "
                 f"{r['prepare'][2]['hours_per_minute']:.2f} | "
                 f"{r['train']['steps_per_second']:.3f} | {r['train']['peak_rss_mb']:.0f} |")
  lines += ["", f"corpus {record['corpus_ratio']}x; peak RSS {record['rss_ratio']}x (target "
            f"<= 1.15); training speed {record['throughput_ratio']}x (target >= 0.9); "
            f"preparation with 2 workers {record['prepare_speedup_2_workers']}x one worker "
            "(target >= 1.6).", "", "```json", json.dumps(record), "```"]
  section = "\n".join(lines)
  print(section)
  if not args.no_write:
    results.update_section("Data at scale", section)
  print(json.dumps(record))


if __name__ == "__main__":
  main()
