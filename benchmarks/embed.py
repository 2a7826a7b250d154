"""Embedding throughput and quality: hive's evaluation path against Resemblyzer.

    python benchmarks/embed.py [--workdir pretrained/hive-mtl] [--data ../shared/data/speechocean762]
                               [--max_files 240] [--repeats 3]

Both embed the same files from audio on disk, each with its own pipeline:
hive decodes and computes log-mels in threads and embeds every file together in
jitted batches (`Encoder.embed_many`: whole utterances with the TDNN, see
hive/encoder.py); Resemblyzer runs `preprocess_wav` and
`VoiceEncoder.embed_utterance` file by file (its shipped weights). Steady state
is what is timed: each side first makes one untimed pass (hive: XLA compilation
of its batch shapes and librosa's first-call set-up; Resemblyzer: its warm-up
file), then the two alternate for --repeats timed passes and the median is kept.
The files are all utterances of the first speakers in sorted order (the model's
held-out dev speakers when its workdir names some in this corpus). Reports
seconds of audio embedded per second and the EER of each on those files (all
pairs, cosine). Updates the "Embedding" section of RESULTS.md; the last line is
one JSON object (`ratio` = hive / Resemblyzer).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import results  # noqa: E402


def pick_files(root, max_files: int, workdir=None):
  """All utterances of the first speakers (sorted) until max_files.

  When the model's workdir names dev speakers of this corpus, only those are
  used, so the EER column is measured on speakers the model never saw.
  """
  from hive import workdir as workdir_lib
  from hive.data import readers
  corpus = readers.read_corpus(root)
  utterances = corpus.utterances
  try:
    dev = set(workdir_lib.load_speakers(workdir)["dev"]) if workdir else set()
  except FileNotFoundError:
    dev = set()
  prefix = pathlib.Path(root).resolve().name + "/"
  held_out = [u for u in utterances if u.speaker in dev or prefix + u.speaker in dev]
  utterances = held_out or utterances
  by_speaker = {}
  for u in sorted(utterances, key=lambda u: (u.speaker, u.id)):
    by_speaker.setdefault(u.speaker, []).append(u)
  chosen = []
  for utts in by_speaker.values():
    if len(chosen) + len(utts) > max_files and chosen:
      break
    chosen += utts
  return [u.path for u in chosen], [u.speaker for u in chosen]


def audio_seconds(paths) -> float:
  import soundfile as sf
  return float(sum(sf.info(p).frames / sf.info(p).samplerate for p in paths))


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", default=str(REPO / "pretrained" / "hive-mtl"))
  ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "speechocean762"))
  ap.add_argument("--max_files", type=int, default=240)
  ap.add_argument("--repeats", type=int, default=3, help="timed passes each; the median is kept")
  ap.add_argument("--no_resemblyzer", action="store_true")
  ap.add_argument("--no_write", action="store_true")
  args = ap.parse_args(argv)
  import jax
  import numpy as np
  from hive import metrics
  from hive.encoder import Encoder

  if args.repeats < 1:
    print(f"error: --repeats must be at least 1, got {args.repeats}", file=sys.stderr)
    return 2
  if not pathlib.Path(args.data).is_dir():
    print(f"error: no corpus at {args.data}", file=sys.stderr)
    return 2
  paths, speakers = pick_files(args.data, args.max_files, args.workdir)
  seconds = audio_seconds(paths)

  encoder = Encoder.from_workdir(args.workdir)
  start = time.perf_counter()
  encoder.embed_many(paths)  # Untimed: compiles every batch shape these files need.
  hive_warm_up_s = time.perf_counter() - start
  hive_times, ref_runs = [], []
  for _ in range(args.repeats):
    start = time.perf_counter()
    hive_embeddings = encoder.embed_many(paths)
    hive_times.append(time.perf_counter() - start)
    if not args.no_resemblyzer:
      import reference_torch
      ref_runs.append(reference_torch.resemblyzer_embed_throughput(paths,
                                                                   threads=os.cpu_count()))
  hive_s = float(np.median(hive_times))
  rows = {"hive": {"seconds": hive_s, "rate": seconds / hive_s,
                   "eer": metrics.verification(hive_embeddings, speakers)["eer"]}}
  if ref_runs:
    ref_s = float(np.median([r["total_s"] for r in ref_runs]))
    rows["Resemblyzer"] = {"seconds": ref_s, "rate": seconds / ref_s,
                           "eer": metrics.verification(ref_runs[-1]["embeddings"],
                                                       speakers)["eer"]}
  ratio = (rows["hive"]["rate"] / rows["Resemblyzer"]["rate"]) if "Resemblyzer" in rows else None

  env = results.machine()
  lines = [
      "## Embedding", "",
      f"Run {env['date']} on {env['platform']} ({env['cpu_count']} CPUs, "
      f"{jax.devices()[0].device_kind}); JAX {jax.__version__}. {len(paths)} files of "
      f"{len(set(speakers))} speakers from `{pathlib.Path(args.data).name}` "
      f"({seconds:.0f} s of audio), from audio on disk; hive model "
      f"`{results.repo_relative(args.workdir)}` "
      f"(step {encoder.step}, {encoder.config.model.encoder}, {encoder.mode} mode). Median of "
      f"{args.repeats} alternating timed passes after one untimed pass each (hive's took "
      f"{hive_warm_up_s:.1f} s: compilation and librosa's first call).", "",
      "| implementation | wall s | seconds of audio / s | EER (all pairs) |",
      "|---|---:|---:|---:|"]
  for name, r in rows.items():
    lines.append(f"| {name} | {r['seconds']:.2f} | {r['rate']:.1f} | {r['eer']:.2%} |")
  if ratio is not None:
    lines += ["", f"hive / Resemblyzer throughput: **{ratio:.2f}x**"]
  section = "\n".join(lines) + "\n"
  print(section)
  if not args.no_write:
    results.update_section("Embedding", section)
  print(json.dumps({"ratio": None if ratio is None else round(ratio, 3),
                    "audio_seconds_per_second": {k: round(r["rate"], 1) for k, r in rows.items()},
                    "eer": {k: round(r["eer"], 4) for k, r in rows.items()},
                    "files": len(paths), "seconds_of_audio": round(seconds, 1),
                    "hive_mode": encoder.mode, "repeats": args.repeats,
                    "date": env["date"]}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
