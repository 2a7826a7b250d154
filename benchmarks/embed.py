"""Embedding throughput and quality: hive's evaluation path and its serving exports against
Resemblyzer.

    python benchmarks/embed.py [--workdir pretrained/hive-mtl] [--data ../shared/data/speechocean762]
                               [--max_files 240] [--repeats 3] [--exports savedmodel,onnx]
                               [--export_dir DIR] [--batch 16]

Both embed the same files from audio on disk, each with its own pipeline:
hive decodes and computes log-mels in threads and embeds every file together in
jitted batches (`Encoder.embed_many`: whole utterances with the TDNN, see
hive/encoder.py); Resemblyzer runs `preprocess_wav` and
`VoiceEncoder.embed_utterance` file by file (its shipped weights). Steady state
is what is timed: each side first makes one untimed pass (hive: XLA compilation
of its batch shapes and librosa's first-call set-up; Resemblyzer: its warm-up
file), then they alternate for --repeats timed passes and the median is kept.
The serving exports (hive/serving.py: the waveform-in model, front end and centring
inside) get rows of their own: the TensorFlow SavedModel run by the TF runtime and the
ONNX model run by ONNX Runtime (CPU), each exported from the same workdir into
--export_dir (reused when already there; default a temporary folder; the export is not
timed). Their side decodes the files in threads (`hive.data.audio.load_wave`, as
`Encoder.embed_many`) and feeds them --batch at a time, sorted by length so a batch pads
little; the SavedModel pads each batch to bucketed shapes itself, so its untimed pass
compiles those. Each export runs in a child process of its own, one untimed pass then
--repeats timed ones back to back, before the alternating passes: with TensorFlow's
thread pools in the same process, PyTorch (Resemblyzer) ran twice as slowly in a check.
A format that fails to export or load is reported and left out.
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
import tempfile
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


EXPORT_ROWS = {"savedmodel": "hive SavedModel (TF runtime)", "onnx": "hive ONNX (ONNX Runtime)"}


def time_export(workdir, fmt: str, export_dir, paths, batch: int, repeats: int) -> dict:
  """Exports `workdir` as `fmt` into export_dir/FORMAT (kept when already there), then
  one untimed and `repeats` timed passes over `paths` in a child process of its own
  (`--_worker`). {"embeddings", "times", "notes"}, or {"notes"} when it failed."""
  import subprocess
  import numpy as np
  out = pathlib.Path(export_dir) / fmt
  notes = []
  with tempfile.TemporaryDirectory() as tmp:
    job = pathlib.Path(tmp)
    (job / "paths.json").write_text(json.dumps(paths))
    done = subprocess.run(
        [sys.executable, __file__, "--_worker", fmt, "--workdir", str(workdir),
         "--export_dir", str(export_dir), "--batch", str(batch), "--repeats", str(repeats),
         "--_job", str(job)], capture_output=True, text=True)
    if done.returncode != 0 or not (job / "result.npz").is_file():
      last = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
      return {"notes": [f"{fmt} left out ({last})"]}
    with np.load(job / "result.npz") as f:
      result = {"embeddings": f["embeddings"], "times": f["times"].tolist()}
    notes += json.loads((job / "notes.json").read_text())
  if not (out / "serving.json").is_file():
    notes.append(f"{fmt}: no export in {out}")
  result["notes"] = notes
  return result


def export_worker(args) -> int:
  """The child process of `time_export`: export if needed, load, one untimed pass, timed
  passes; writes result.npz (embeddings, times) and notes.json into --_job."""
  import numpy as np
  from hive import export, serving
  job = pathlib.Path(args._job)
  paths = json.loads((job / "paths.json").read_text())
  out = pathlib.Path(args.export_dir) / args._worker
  notes = []
  if not (out / "serving.json").is_file():
    start = time.perf_counter()
    export.export_for_serving(args.workdir, out, args._worker)
    notes.append(f"{args._worker} exported in {time.perf_counter() - start:.0f} s")
  fn = serving.load(out)
  start = time.perf_counter()
  embed_served(fn, paths, args.batch)  # Untimed: compiles (SavedModel) or warms up.
  notes.append(f"{EXPORT_ROWS[args._worker]}: untimed pass {time.perf_counter() - start:.1f} s")
  times = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    embeddings = embed_served(fn, paths, args.batch)
    times.append(time.perf_counter() - start)
  np.savez(job / "result.npz", embeddings=embeddings, times=np.array(times))
  (job / "notes.json").write_text(json.dumps(notes))
  return 0


def embed_served(fn, paths, batch: int):
  """[K, D] embeddings of the files through a serving function: decoded in threads,
  `batch` files a call in order of length (less padding), returned in the files' order."""
  import concurrent.futures
  import numpy as np
  from hive import serving
  from hive.data import audio
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
    waves = list(pool.map(audio.load_wave, paths))
  order = np.argsort([len(w) for w in waves], kind="stable")
  out = [None] * len(waves)
  for start in range(0, len(order), batch):
    rows = order[start:start + batch]
    embeddings = fn(*serving.pad_batch([waves[i] for i in rows]))["embedding"]
    for i, e in zip(rows, embeddings):
      out[i] = e
  return np.stack(out)


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
  ap.add_argument("--exports", default="savedmodel,onnx",
                  help="serving exports to time, comma-separated (savedmodel, onnx; '' for none)")
  ap.add_argument("--export_dir", default=None,
                  help="where the exports are written or found (default: a temporary folder)")
  ap.add_argument("--batch", type=int, default=16, help="files per call of an export")
  ap.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
  ap.add_argument("--_job", default=None, help=argparse.SUPPRESS)
  ap.add_argument("--no_write", action="store_true")
  args = ap.parse_args(argv)
  if args._worker:
    return export_worker(args)
  import jax
  import numpy as np
  from hive import metrics
  from hive.encoder import Encoder

  if args.repeats < 1:
    print(f"error: --repeats must be at least 1, got {args.repeats}", file=sys.stderr)
    return 2
  formats = [f for f in args.exports.split(",") if f]
  unknown = sorted(set(formats) - set(EXPORT_ROWS))
  if unknown or args.batch < 1:
    print(f"error: --exports takes {', '.join(EXPORT_ROWS)} (got {', '.join(unknown)}) and "
          f"--batch at least 1 (got {args.batch})", file=sys.stderr)
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
  served_times, served_embeddings, export_notes = {}, {}, []
  export_dir = args.export_dir or tempfile.mkdtemp(prefix="hive-embed-bench-")
  for fmt in formats:
    result = time_export(args.workdir, fmt, export_dir, paths, args.batch, args.repeats)
    export_notes += result["notes"]
    if "times" in result:
      served_times[EXPORT_ROWS[fmt]] = result["times"]
      served_embeddings[EXPORT_ROWS[fmt]] = result["embeddings"]
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
  for name, times in served_times.items():
    served_s = float(np.median(times))
    rows[name] = {"seconds": served_s, "rate": seconds / served_s,
                  "eer": metrics.verification(served_embeddings[name], speakers)["eer"],
                  # The same model: how far its embeddings are from the Encoder's.
                  "max_diff": float(np.max(np.abs(served_embeddings[name] - hive_embeddings)))}
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
      f"{hive_warm_up_s:.1f} s: compilation and librosa's first call)."
      + (f" Exports in child processes, fed {args.batch} files a call, sorted by length, "
         f"{args.repeats} timed passes back to back; {'; '.join(export_notes)}."
         if export_notes else ""), "",
      "| implementation | wall s | seconds of audio / s | EER (all pairs) | max abs diff to hive |",
      "|---|---:|---:|---:|---:|"]
  for name, r in rows.items():
    diff = f"{r['max_diff']:.1e}" if "max_diff" in r else ""
    lines.append(f"| {name} | {r['seconds']:.2f} | {r['rate']:.1f} | {r['eer']:.2%} | {diff} |")
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
                    "export_batch": args.batch if served_times else None,
                    "date": env["date"]}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
