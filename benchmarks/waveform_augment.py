"""Waveform augmentation benchmark: ms per batch of 144 crops x 25,600 samples (1.6 s at 16 kHz).

    python benchmarks/waveform_augment.py [--data_root ../shared/data] [--batches 10]

Times `hive.data.waveform_augment.Augmenter` on one process, each kind alone on every row, then
all kinds together at the default probabilities and on every row. Crops are real speech
(LibriSpeech sample, 48 speakers x 3) when the shared data is there, else Gaussian noise; babble
folders are the same LibriSpeech sample; noise and music folders are generated into a temporary
folder (WAV/FLAC, 8 to 44.1 kHz, mono and stereo, 3 s to 2 min). The RIR bank is the default
simulated one (generated into the cache the first time, ~20 s). After two warm-up batches (which
fill the decoded-file cache and the RIR spectra), reports the median and mean of `--batches`.

Prints a markdown table and one JSON object with the figures as its last line. The target is
>= 6 batches/s (<= 167 ms a batch) with everything on, on a machine shared with training.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np
import soundfile as sf

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from hive.data import audio  # noqa: E402
from hive.data import waveform_augment as wa  # noqa: E402

BATCH, SAMPLES, PER_SPEAKER = 144, 25600, 3


def speech_crops(data_root: pathlib.Path) -> tuple[np.ndarray, np.ndarray, str]:
  root = data_root / "librispeech" / "train-clean-100"
  rng = np.random.default_rng(0)
  if not root.is_dir():
    waves = rng.standard_normal((BATCH, SAMPLES)).astype(np.float32) * 0.1
    return waves, np.repeat(np.arange(BATCH // PER_SPEAKER), PER_SPEAKER), "Gaussian noise"
  speakers = sorted(p for p in root.iterdir() if p.is_dir())[:BATCH // PER_SPEAKER]
  crops, ids = [], []
  for number, speaker in enumerate(speakers):
    wave = audio.load_wave(sorted(speaker.rglob("*.flac"))[0])
    for _ in range(PER_SPEAKER):
      wave_long = np.resize(wave, max(len(wave), SAMPLES))
      start = rng.integers(len(wave_long) - SAMPLES + 1)
      crops.append(wave_long[start:start + SAMPLES])
      ids.append(number)
  return np.stack(crops), np.asarray(ids), f"LibriSpeech, {len(speakers)} speakers x 3"


def write_sources(folder: pathlib.Path) -> dict[str, str]:
  """Generated noise and music folders in assorted formats, rates and lengths."""
  rng = np.random.default_rng(1)
  formats = [(16000, 1, "WAV", 3.0), (44100, 2, "FLAC", 8.0), (8000, 1, "WAV", 20.0),
             (22050, 1, "FLAC", 45.0), (16000, 2, "FLAC", 120.0)]
  out = {}
  for kind in ("noise", "music"):
    (folder / kind).mkdir(parents=True)
    for i in range(20):
      rate, channels, fmt, seconds = formats[i % len(formats)]
      n = int(rate * seconds)
      if kind == "noise":
        signal = wa.coloured_noise(rng, channels, n, rng.uniform(0, 2)).T * 0.05
      else:
        t = np.arange(n) / rate
        notes = 110 * 2 ** (rng.integers(0, 36, size=4) / 12)
        signal = sum(np.sin(2 * np.pi * f * t) for f in notes)[:, None] * 0.05
        signal = np.repeat(signal, channels, axis=1)
      sf.write(folder / kind / f"{kind}{i:02d}.{fmt.lower()}", signal, rate, format=fmt)
    out[kind] = str(folder / kind)
  return out


def configs(dirs: dict[str, str], babble_dir: str | None):
  """(name, config) pairs: each kind alone on every row, then all together."""
  def base(**probabilities):
    c = wa.default_config()
    for kind in (*wa.ADDITIVE_KINDS, "reverb", "telephone", "bandpass", "gain"):
      c[kind].probability = probabilities.get(kind, 0.0)
    return c

  out = [("reverb (simulated bank)", base(reverb=1.0)),
         ("noise (generated coloured)", base(noise=1.0))]
  c = base(noise=1.0)
  c.noise.dirs = (dirs["noise"],)
  out.append(("noise (folder)", c))
  c = base(music=1.0)
  c.music.dirs = (dirs["music"],)
  out.append(("music (folder)", c))
  out.append(("babble (the batch)", base(babble=1.0)))
  if babble_dir:
    c = base(babble=1.0)
    c.babble.dirs = (babble_dir,)
    out.append(("babble (folder)", c))
  out.append(("telephone (mulaw, alaw, gsm)", base(telephone=1.0)))
  c = base(telephone=1.0)
  c.telephone.codecs = ("mulaw", "alaw")
  out.append(("telephone (mulaw, alaw)", c))
  out.append(("band-pass / EQ", base(bandpass=1.0)))
  out.append(("gain", base(gain=1.0)))

  def with_folders(c):
    c.noise.dirs, c.music.dirs = (dirs["noise"],), (dirs["music"],)
    c.babble.dirs = (babble_dir,) if babble_dir else ()
    return c

  out.append(("all, default probabilities, no folders", wa.default_config()))
  out.append(("all, default probabilities, folders", with_folders(wa.default_config())))
  every = base(reverb=1.0, noise=0.34, music=0.33, babble=0.33, telephone=1.0, bandpass=1.0,
               gain=1.0)
  out.append(("all, every row (reverb+additive+telephone+EQ+gain)", with_folders(every)))
  return out


def time_config(config, waves, speakers, batches: int) -> dict:
  augmenter = wa.Augmenter(config)
  for step in range(2):  # Warm-up: decoded-file cache, RIR spectra.
    augmenter(waves, speakers, wa.batch_rng(0, step))
  times = []
  for step in range(2, 2 + batches):
    rng = wa.batch_rng(0, step)
    start = time.perf_counter()
    augmenter(waves, speakers, rng)
    times.append(time.perf_counter() - start)
  return {"median_ms": 1000 * float(np.median(times)), "mean_ms": 1000 * float(np.mean(times))}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_root", default=str(REPO.parent / "shared" / "data"))
  parser.add_argument("--batches", type=int, default=10)
  args = parser.parse_args()
  waves, speakers, crops = speech_crops(pathlib.Path(args.data_root))
  babble_dir = str(pathlib.Path(args.data_root) / "librispeech" / "train-clean-100")
  babble_dir = babble_dir if os.path.isdir(babble_dir) else None
  rows = []
  with tempfile.TemporaryDirectory(prefix="hive_bench_waveaug_") as tmp:
    dirs = write_sources(pathlib.Path(tmp))
    for name, config in configs(dirs, babble_dir):
      print(f"timing {name} ...", file=sys.stderr, flush=True)
      rows.append((name, time_config(config, waves, speakers, args.batches)))
  print(f"\nBatch {BATCH} x {SAMPLES} float32 ({crops}); {args.batches} batches after 2 warm-up; "
        f"{os.cpu_count()} CPUs, one process.\n")
  print("| augmentation | ms / batch (median) | mean | batches / s |")
  print("|---|---:|---:|---:|")
  for name, r in rows:
    print(f"| {name} | {r['median_ms']:.1f} | {r['mean_ms']:.1f} | "
          f"{1000 / r['median_ms']:.1f} |")
  print(json.dumps({"batch": [BATCH, SAMPLES], "batches": args.batches,
                    "cpu_count": os.cpu_count(),
                    "median_ms": {name: round(r["median_ms"], 1) for name, r in rows}}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
