"""Waveform augmentation benchmark: ms per batch of 144 crops x 25,600 samples (1.6 s at 16 kHz).

    python benchmarks/waveform_augment.py [--data_root ../shared/data] [--batches 10]

Times `hive.data.waveform_augment.Augmenter` on one process, each kind alone on every row, then
all kinds together at the default probabilities and on every row. Crops are real speech
(LibriSpeech sample, 48 speakers x 3) when the shared data is there, else Gaussian noise.
Source folders are generated into a temporary folder (see `write_sources`): a MUSAN-like root
(16 kHz WAV, as MUSAN ships) and a noise folder of mixed formats; one more babble row reads the
LibriSpeech sample's FLAC files in place. The RIR bank is the default simulated one (generated
into the cache the first time, ~20 s). After two warm-up batches (which fill the decoded-file
cache and the RIR spectra), reports the median and mean of `--batches`.

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


def write_sources(folder: pathlib.Path, speech: np.ndarray) -> dict[str, str]:
  """Generated source folders: a MUSAN-like root (16 kHz mono WAV as MUSAN ships: noise/ 30
  files of 2-60 s, music/ 10 of 1.5-3 min, speech/ 8 of 2 min cut from `speech`) and a noise
  folder of mixed formats (FLAC and WAV, 8 to 44.1 kHz, mono and stereo, 3 s to 2 min)."""
  rng = np.random.default_rng(1)
  musan = folder / "musan"
  for sub in ("noise", "music", "speech"):
    (musan / sub).mkdir(parents=True)
  for i, seconds in enumerate(np.geomspace(2, 60, 30)):
    noise = wa.coloured_noise(rng, 1, int(seconds * wa.SAMPLE_RATE), rng.uniform(0, 2))[0]
    sf.write(musan / "noise" / f"noise-{i:04d}.wav", 0.05 * noise, wa.SAMPLE_RATE)
  for i in range(10):
    t = np.arange(int(rng.uniform(90, 180) * wa.SAMPLE_RATE)) / wa.SAMPLE_RATE
    notes = 110 * 2 ** (rng.integers(0, 36, size=4) / 12)
    music = sum(np.sin(2 * np.pi * f * t) for f in notes) * 0.05
    sf.write(musan / "music" / f"music-{i:04d}.wav", music, wa.SAMPLE_RATE)
  talk = np.resize(speech.ravel(), 8 * 120 * wa.SAMPLE_RATE).reshape(8, -1)
  for i, row in enumerate(talk):
    sf.write(musan / "speech" / f"speech-{i:04d}.wav", np.roll(row, i * 12345), wa.SAMPLE_RATE)
  mixed = folder / "mixed"
  mixed.mkdir()
  formats = [(16000, 1, "WAV", 3.0), (44100, 2, "FLAC", 8.0), (8000, 1, "WAV", 20.0),
             (22050, 1, "FLAC", 45.0), (16000, 2, "FLAC", 120.0)]
  for i in range(20):
    rate, channels, fmt, seconds = formats[i % len(formats)]
    noise = wa.coloured_noise(rng, channels, int(rate * seconds), rng.uniform(0, 2)).T * 0.05
    sf.write(mixed / f"noise{i:02d}.{fmt.lower()}", noise, rate, format=fmt)
  return {"musan": str(musan), "mixed": str(mixed)}


def configs(dirs: dict[str, str], librispeech: str | None):
  """(name, config) pairs: each kind alone on every row, then all together."""
  def base(**probabilities):
    c = wa.default_config()
    for kind in (*wa.ADDITIVE_KINDS, "reverb", "telephone", "bandpass", "gain"):
      c[kind].probability = probabilities.get(kind, 0.0)
    return c

  def musan(c):
    c.musan_root = dirs["musan"]
    return c

  out = [("reverb (simulated bank)", base(reverb=1.0)),
         ("noise (generated coloured)", base(noise=1.0)),
         ("noise (MUSAN-like folder)", musan(base(noise=1.0)))]
  c = base(noise=1.0)
  c.noise.dirs = (dirs["mixed"],)
  out.append(("noise (mixed-format folder)", c))
  out.append(("music (MUSAN-like folder)", musan(base(music=1.0))))
  out.append(("babble (the batch)", base(babble=1.0)))
  out.append(("babble (MUSAN-like folder)", musan(base(babble=1.0))))
  if librispeech:
    c = base(babble=1.0)
    c.babble.dirs = (librispeech,)
    out.append(("babble (LibriSpeech FLAC folder, cache filling)", c))
  c = base(telephone=1.0)
  c.telephone.codecs = ("mulaw", "alaw", "gsm")
  out.append(("telephone (mulaw, alaw, gsm)", c))
  out.append(("telephone (mulaw, alaw)", base(telephone=1.0)))
  out.append(("band-pass / EQ", base(bandpass=1.0)))
  out.append(("gain", base(gain=1.0)))
  out.append(("all, default probabilities, no folders", wa.default_config()))
  out.append(("all, default probabilities, MUSAN-like", musan(wa.default_config())))
  every = base(reverb=1.0, noise=0.34, music=0.33, babble=0.33, telephone=1.0, bandpass=1.0,
               gain=1.0)
  out.append(("all, every row (reverb, additive, telephone, EQ, gain), MUSAN-like",
              musan(every)))
  return out


def time_config(config, waves, speakers, batches: int) -> dict:
  start = time.perf_counter()
  augmenter = wa.Augmenter(config)
  augmenter(waves, speakers, wa.batch_rng(0, 0))
  first = time.perf_counter() - start
  augmenter(waves, speakers, wa.batch_rng(0, 1))  # Warm-up: decoded-file cache, RIR spectra.
  times = []
  for step in range(2, 2 + batches):
    rng = wa.batch_rng(0, step)
    start = time.perf_counter()
    augmenter(waves, speakers, rng)
    times.append(time.perf_counter() - start)
  return {"median_ms": 1000 * float(np.median(times)), "mean_ms": 1000 * float(np.mean(times)),
          "first_s": first}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_root", default=str(REPO.parent / "shared" / "data"))
  parser.add_argument("--batches", type=int, default=10)
  args = parser.parse_args()
  waves, speakers, crops = speech_crops(pathlib.Path(args.data_root))
  librispeech = str(pathlib.Path(args.data_root) / "librispeech" / "train-clean-100")
  librispeech = librispeech if os.path.isdir(librispeech) else None
  rows = []
  with tempfile.TemporaryDirectory(prefix="hive_bench_waveaug_") as tmp:
    dirs = write_sources(pathlib.Path(tmp), waves)
    for name, config in configs(dirs, librispeech):
      print(f"timing {name} ...", file=sys.stderr, flush=True)
      rows.append((name, time_config(config, waves, speakers, args.batches)))
  load = os.getloadavg()[0]
  print(f"\nBatch {BATCH} x {SAMPLES} float32 ({crops}); {args.batches} batches after 2 warm-up; "
        f"{os.cpu_count()} CPUs, one process; load average {load:.1f} at the end. 'first': "
        "construction and the first batch (RIR bank from the cache, source listing, noise "
        "bank, G.711 tables, first decodes).\n")
  print("| augmentation | ms / batch (median) | mean | batches / s | first (s) |")
  print("|---|---:|---:|---:|---:|")
  for name, r in rows:
    print(f"| {name} | {r['median_ms']:.1f} | {r['mean_ms']:.1f} | "
          f"{1000 / r['median_ms']:.1f} | {r['first_s']:.2f} |")
  print(json.dumps({"batch": [BATCH, SAMPLES], "batches": args.batches,
                    "cpu_count": os.cpu_count(), "load_average": round(load, 2),
                    "median_ms": {name: round(r["median_ms"], 1) for name, r in rows}}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
