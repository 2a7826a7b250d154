"""Decoding audio files into 16 kHz mono float32 waves, with reasons for refusal.

Every way a file can be unusable raises `BadAudio` naming the file, the problem
and a stable `kind` (e.g. "undecodable", "silent"), so callers can count, group
and report skips instead of crashing or silently dropping data.

FLAC and WAV are read by soundfile (libsndfile). `.m4a` (AAC, as VoxCeleb2 ships)
is beyond libsndfile, so it goes through audioread, and only through a backend
that decodes AAC (FFmpeg, GStreamer or Core Audio); where none is installed each
.m4a is refused with kind "no_decoder" rather than crashing.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import soundfile as sf
import soxr

AUDIO_EXTENSIONS = (".flac", ".wav", ".m4a")
# Extensions libsndfile cannot decode: read through an audioread backend instead.
NEEDS_DECODER = (".m4a",)
NO_AAC_DECODER = "cannot decode .m4a: no AAC decoder installed (install ffmpeg)"
# Peak amplitude below which a recording is treated as digital silence
# (-80 dBFS): such a file carries no voice to learn from.
SILENCE_PEAK = 1e-4
# audioread backends (by module) that can decode AAC; its standard-library
# reader (rawread: WAV/AIFF) and MAD (MP3) cannot.
_AAC_BACKEND_MODULES = ("ffdec", "gstdec", "macca")

# Stable kinds of the refusal reasons, by the reason's opening words. Skips
# rebuilt from a reason alone (the builder keeps only the text) get their kind
# back from here; "no frames left" is the feature extractor's (hive.data.extract).
REASON_KINDS = (
    ("file does not exist", "missing_file"),
    ("empty file", "empty_file"),
    ("cannot decode .m4a: no AAC decoder", "no_decoder"),
    ("cannot decode", "undecodable"),
    ("zero-length audio", "zero_length"),
    ("audio contains NaN", "non_finite"),
    ("all-silent audio", "silent"),
    ("no frames left", "no_frames"),
)


def reason_kind(reason: str) -> str:
  """The stable kind of a refusal reason; "other" for a reason not known here."""
  for prefix, kind in REASON_KINDS:
    if reason.startswith(prefix):
      return kind
  return "other"


class BadAudio(ValueError):
  """An audio file that cannot be used, with the reason and its kind."""

  def __init__(self, path: str, reason: str, kind: str | None = None):
    super().__init__(f"{path}: {reason}")
    self.path = str(path)
    self.reason = reason
    self.kind = kind or reason_kind(reason)


@functools.lru_cache(maxsize=None)
def aac_backends() -> tuple:
  """The installed audioread backends that decode AAC (.m4a); () where there are none.

  Looked up once per process: finding FFmpeg runs it.
  """
  try:
    import audioread  # A dependency of librosa; imported here so it stays optional.
  except ImportError:
    return ()
  return tuple(b for b in audioread.available_backends()
               if b.__module__.rsplit(".", 1)[-1] in _AAC_BACKEND_MODULES)


def can_decode(path: str | os.PathLike) -> bool:
  """False for a file whose format needs a decoder this machine does not have."""
  suffix = os.path.splitext(os.fspath(path))[1].lower()
  return suffix not in NEEDS_DECODER or bool(aac_backends())


def read_audioread(path: str, backends) -> tuple[np.ndarray, int]:
  """(float32 [samples, channels] in [-1, 1), sample rate) decoded by audioread `backends`.

  audioread hands out 16-bit signed little-endian PCM, channels interleaved.
  """
  import audioread
  with audioread.audio_open(path, backends=list(backends)) as f:
    rate, channels = int(f.samplerate), int(f.channels)
    pcm = b"".join(f)
  if channels < 1:
    raise BadAudio(path, f"cannot decode audio (decoder reports {channels} channels)")
  frame = 2 * channels
  samples = np.frombuffer(pcm[:len(pcm) - len(pcm) % frame], dtype="<i2")
  return (samples.astype(np.float32) / 32768.0).reshape(-1, channels), rate


def load_wave(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
  """Reads FLAC/WAV (or .m4a, where decodable) at any rate and channel count as mono
  float32 at `sample_rate`."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise BadAudio(path, "file does not exist")
  if os.path.getsize(path) == 0:
    raise BadAudio(path, "empty file (0 bytes)")
  needs_decoder = os.path.splitext(path)[1].lower() in NEEDS_DECODER
  if needs_decoder and not aac_backends():
    raise BadAudio(path, NO_AAC_DECODER, "no_decoder")
  try:
    if needs_decoder:
      wave, rate = read_audioread(path, aac_backends())
    else:
      wave, rate = sf.read(path, dtype="float32", always_2d=True)
  except BadAudio:
    raise
  except Exception as e:  # soundfile and audioread raise several types for corrupt input.
    raise BadAudio(path, f"cannot decode audio ({type(e).__name__}: {e})") from None
  if wave.shape[0] == 0:
    raise BadAudio(path, "zero-length audio (no samples)")
  if not np.all(np.isfinite(wave)):
    raise BadAudio(path, "audio contains NaN or Inf samples")
  wave = wave.mean(axis=1)  # Down-mix: speaker identity does not need stereo.
  if np.max(np.abs(wave)) < SILENCE_PEAK:
    raise BadAudio(path, "all-silent audio (peak below -80 dBFS)")
  if rate != sample_rate:
    wave = resample(wave, rate, sample_rate)
  return np.ascontiguousarray(wave, dtype=np.float32)


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
  """`librosa.resample(wave, orig_sr=rate, target_sr=target)` (soxr, high quality, the
  length fixed to ceil(len * target / rate)), without importing librosa (seconds)."""
  out = soxr.resample(np.asarray(wave, np.float32), rate, target, quality="soxr_hq")
  size = int(np.ceil(len(wave) * target / rate))
  return np.pad(out, (0, max(0, size - len(out))))[:size].astype(np.float32)
