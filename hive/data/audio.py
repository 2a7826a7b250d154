"""Decoding audio files into 16 kHz mono float32 waves, with reasons for refusal.

Every way a file can be unusable raises `BadAudio` naming the file and the
problem, so callers can count and report skips instead of crashing or silently
dropping data.
"""

from __future__ import annotations

import os

import librosa
import numpy as np
import soundfile as sf

AUDIO_EXTENSIONS = (".flac", ".wav")
# Peak amplitude below which a recording is treated as digital silence
# (-80 dBFS): such a file carries no voice to learn from.
SILENCE_PEAK = 1e-4


class BadAudio(ValueError):
  """An audio file that cannot be used, with the reason."""

  def __init__(self, path: str, reason: str):
    super().__init__(f"{path}: {reason}")
    self.path = str(path)
    self.reason = reason


def load_wave(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
  """Reads FLAC/WAV at any rate and channel count as mono float32 at `sample_rate`."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise BadAudio(path, "file does not exist")
  if os.path.getsize(path) == 0:
    raise BadAudio(path, "empty file (0 bytes)")
  try:
    wave, rate = sf.read(path, dtype="float32", always_2d=True)
  except Exception as e:  # soundfile raises several types for corrupt input.
    raise BadAudio(path, f"cannot decode audio ({type(e).__name__}: {e})") from None
  if wave.shape[0] == 0:
    raise BadAudio(path, "zero-length audio (no samples)")
  if not np.all(np.isfinite(wave)):
    raise BadAudio(path, "audio contains NaN or Inf samples")
  wave = wave.mean(axis=1)  # Down-mix: speaker identity does not need stereo.
  if np.max(np.abs(wave)) < SILENCE_PEAK:
    raise BadAudio(path, "all-silent audio (peak below -80 dBFS)")
  if rate != sample_rate:
    wave = librosa.resample(wave, orig_sr=rate, target_sr=sample_rate)
  return np.ascontiguousarray(wave, dtype=np.float32)
