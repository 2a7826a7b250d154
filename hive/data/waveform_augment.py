"""Waveform augmentation of training crops, and the fixed corruptions of evaluation audio.

The input pipeline calls an `Augmenter` (or `augment_batch`) on each batch of 16 kHz waveform
crops, before the log-mel. Per row, in this order (the order sound meets them):

  * reverberation: convolution with a room impulse response (RIR) from folders, or from a bank
    simulated once with pyroomacoustics' image method and cached on disk (`RirBank`);
  * one additive source at most, at a random SNR: noise (folders, or generated coloured noise),
    music (folders), babble (3-7 summed utterances from folders, or other speakers' crops of the
    same batch, never the row's own speaker);
  * channel: telephone band (8 kHz, G.712 band, G.711 mu-law / A-law or GSM 06.10 through
    libsndfile), a random band-pass with a few EQ bumps, a random gain.

`change_speed` is Kaldi's speed perturbation (deterministic resampling, to make new speakers);
`degrade` is the fixed corruption of one evaluation utterance (`hive.evaluate --degrade=...`).

Use, once per process (worker), then per batch k:

    augmenter = Augmenter(config.augment.wave)  # Lists folders, reads the cached RIR bank.
    waves = augmenter(int16_crops.astype(np.float32) / 32768, speaker_ids,
                      batch_rng(config.seed, k, jax.process_index()))

Determinism: the output is a pure function of (inputs, rng state, files on disk). Every random
choice is drawn from the `np.random.Generator` passed in, in fixed-shape draws, so which rows an
augmentation picks never shifts the draws of another; `batch_rng(seed, step)` makes batch k's
augmentation a pure function of (seed, k). Rows do not interact except as babble sources.

Why not audiomentations (installed): it draws its parameters from Python's `random` and numpy's
global state, which would leak into results, and it works one row at a time. Here every kind is
one vectorised operation over the rows it applies to, with parameters drawn from our generator:
one batched FFT convolution for reverb (the bank's spectra cached), one multi-channel soxr call
each way for the telephone band (soxr runs each channel independently, so a row's result does
not depend on its neighbours), one FFT pair for band-pass/EQ, and copies or small weighted sums
for the additive sources (generated noise is cut from a seeded bank made once per process).
Codecs come from libsndfile (soundfile): G.711 mu-law / A-law (ITU segment tables, not a
continuous law) as a table of libsndfile's round trip of every 16-bit value, GSM 06.10 by
encoding each row.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import io
import json
import math
import os
import tempfile
import threading
from collections.abc import Sequence

import ml_collections
import numpy as np
import scipy.fft
import scipy.signal
import soundfile as sf
import soxr
from absl import logging

from hive import config as config_lib
from hive.data import audio

SAMPLE_RATE = 16000
TELEPHONE_RATE = 8000
# Bump when the RIR simulation changes, so cached banks are generated anew.
RIR_BANK_VERSION = 1
# Tags keep these streams apart from other users of the same (seed, step) numbers.
_BATCH_TAG = 0x77617665  # "wave"
_DEGRADE_TAG = 0x64656772  # "degr"
ADDITIVE_KINDS = ("noise", "music", "babble")
CODECS = ("mulaw", "alaw", "gsm", "none")
_SF_SUBTYPES = {"mulaw": "ULAW", "alaw": "ALAW", "gsm": "GSM610"}
# Zero padding (samples) for FFT filtering, so a smooth response's impulse response does not
# wrap around from one end of the crop to the other.
_FILTER_PAD = 2048
_MUSAN_FOLDERS = {"noise": "noise", "music": "music", "babble": "speech"}


def default_config() -> ml_collections.ConfigDict:
  """The waveform augmentation block (`config.augment.wave`; its fields: hive/config.py)."""
  return config_lib.wave_augment_config()


def batch_rng(seed: int, step: int, process_index: int = 0) -> np.random.Generator:
  """The generator for batch `step` of process `process_index`: a pure function of them."""
  for name, value in (("seed", seed), ("step", step), ("process_index", process_index)):
    if int(value) != value or value < 0:
      raise ValueError(f"batch_rng: {name} must be a non-negative integer, got {value!r}")
  return np.random.default_rng(
      np.random.SeedSequence([_BATCH_TAG, int(seed), int(step), int(process_index)]))


# --- Pure signal functions -----------------------------------------------------------------

def power(waves: np.ndarray) -> np.ndarray:
  """Mean square along the last axis (float64)."""
  waves = np.asarray(waves, np.float32)
  return np.vecdot(waves, waves).astype(np.float64) / max(waves.shape[-1], 1)


def snr_gains(speech_power, noise_power, snr_db) -> np.ndarray:
  """g with 10 log10(speech_power / (g^2 noise_power)) = snr_db; 0 where either power is ~0."""
  speech_power, noise_power = np.asarray(speech_power), np.asarray(noise_power)
  ok = (speech_power > 1e-20) & (noise_power > 1e-20)
  gains = np.sqrt(speech_power / np.where(ok, noise_power, 1.0) / 10.0 ** (np.asarray(snr_db) / 10))
  return np.where(ok, gains, 0.0)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db) -> np.ndarray:
  """speech + g * noise per row (last axis), g setting the SNR over the whole row to `snr_db`."""
  gains = snr_gains(power(speech), power(noise), snr_db)
  return (speech + gains[..., None].astype(np.float32) * noise).astype(np.float32)


def coloured_noise(rng: np.random.Generator, count: int, length: int,
                   exponents) -> np.ndarray:
  """[count, length] Gaussian noise with power ~ 1/f^exponent per row, unit mean square."""
  exponents = np.broadcast_to(np.asarray(exponents, np.float32), (count,))
  white = rng.standard_normal((count, length), dtype=np.float32)
  n = scipy.fft.next_fast_len(length, real=True)
  spectrum = scipy.fft.rfft(white, n, axis=-1)
  bins = np.arange(spectrum.shape[-1], dtype=np.float32)
  bins[0] = 1.0  # DC gets the lowest bin's level rather than infinity.
  spectrum *= bins[None] ** (-exponents[:, None] / 2)
  noise = scipy.fft.irfft(spectrum, n, axis=-1)[:, :length]
  return (noise / np.sqrt(np.maximum(power(noise), 1e-30))[:, None]).astype(np.float32)


NOISE_BANK_SAMPLES = 2 ** 20  # 65.5 s per colour.


@functools.lru_cache(maxsize=4)
def noise_bank(colours: tuple[float, ...], seed: int = 0) -> np.ndarray:
  """[len(colours), NOISE_BANK_SAMPLES] coloured noise, the same in every process (seeded)."""
  return coloured_noise(np.random.default_rng([_BATCH_TAG, seed]), len(colours),
                        NOISE_BANK_SAMPLES, colours)


def noise_bank_segments(rng: np.random.Generator, count: int, length: int,
                        colours: tuple[float, ...]) -> np.ndarray:
  """[count, length] segments of `noise_bank(colours)`: a random colour and offset each.
  Cutting from a bank costs a copy, where generating noise costs a Gaussian draw and an FFT."""
  bank = noise_bank(colours)
  which = rng.integers(len(colours), size=count)
  if length > bank.shape[1]:
    return coloured_noise(rng, count, length, np.asarray(colours)[which])
  starts = rng.integers(bank.shape[1] - length + 1, size=count)
  out = np.empty((count, length), np.float32)
  for row, (colour, start) in enumerate(zip(which, starts)):
    out[row] = bank[colour, start:start + length]
  return out


def _fft_convolve(waves: np.ndarray, kernel_spectra: np.ndarray, n: int) -> np.ndarray:
  spectra = scipy.fft.rfft(waves, n, axis=-1)
  spectra *= kernel_spectra
  return scipy.fft.irfft(spectra, n, axis=-1)[..., :waves.shape[-1]].astype(np.float32,
                                                                           copy=False)


def reverberate(waves: np.ndarray, rirs: np.ndarray) -> np.ndarray:
  """Each row of `waves` [B, S] convolved with its row of `rirs` [B, L], first S samples.

  out[b, t] = sum_k rirs[b, k] waves[b, t - k]: a RIR whose direct path is at index 0 (as
  `RirBank` stores them) leaves the speech in place; the tail past the crop's end is dropped. A
  unit impulse at t = 0 therefore comes out as the RIR (cut or zero-padded to S).
  """
  waves, rirs = np.asarray(waves, np.float32), np.asarray(rirs, np.float32)
  n = scipy.fft.next_fast_len(waves.shape[-1] + rirs.shape[-1] - 1, real=True)
  return _fft_convolve(waves, scipy.fft.rfft(rirs, n, axis=-1), n)


def normalise_rir(rir: np.ndarray, max_samples: int) -> np.ndarray:
  """Aligns a RIR so its direct path (largest magnitude) is at index 0, cuts it to
  `max_samples` and scales it to unit energy (Kaldi's wav-reverberate aligns the same way)."""
  rir = np.asarray(rir, np.float64).ravel()
  if rir.size == 0 or not np.all(np.isfinite(rir)) or not np.any(rir):
    raise ValueError("a RIR must be non-empty, finite and not all zero")
  rir = rir[int(np.argmax(np.abs(rir))):][:max_samples]
  return (rir / np.sqrt(np.sum(rir ** 2))).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _telephone_sos(band_hz: tuple[float, float]) -> np.ndarray:
  return scipy.signal.butter(4, band_hz, btype="bandpass", fs=TELEPHONE_RATE, output="sos")


def _fit_length(waves: np.ndarray, length: int) -> np.ndarray:
  if waves.shape[-1] >= length:
    return waves[..., :length]
  return np.pad(waves, [(0, 0)] * (waves.ndim - 1) + [(0, length - waves.shape[-1])])


def libsndfile_roundtrip(waves: np.ndarray, subtype: str, rate: int = TELEPHONE_RATE,
                         channels: int = 1) -> np.ndarray:
  """Rows [B, T] written as a WAV of libsndfile `subtype` in memory and read back (float32),
  `channels` rows per file. Input beyond full scale is clipped first, as a codec does."""
  waves = np.asarray(waves)
  if np.issubdtype(waves.dtype, np.floating):
    # Without clipping libsndfile would wrap values beyond full scale around.
    waves = np.clip(waves, -1.0, 1.0 - 2.0 ** -15).astype(np.float32)
  out = np.empty(waves.shape, np.float32)
  for start in range(0, waves.shape[0], channels):
    buffer = io.BytesIO()
    sf.write(buffer, waves[start:start + channels].T, rate, format="WAV", subtype=subtype)
    buffer.seek(0)
    decoded = sf.read(buffer, dtype="float32", always_2d=True)[0].T
    out[start:start + channels] = _fit_length(decoded, waves.shape[1])
  return out


@functools.lru_cache(maxsize=4)
def _g711_table(subtype: str) -> np.ndarray:
  """libsndfile's G.711 round trip of every int16 value (float32 [65536], by value + 32768)."""
  every = np.arange(-32768, 32768, dtype=np.int16)[None]
  return libsndfile_roundtrip(every, subtype, channels=1)[0]


def codec_roundtrip(waves: np.ndarray, codec: str) -> np.ndarray:
  """Rows [B, T] at 8 kHz encoded and decoded: 'mulaw' / 'alaw' (G.711, 8 bits a sample, ITU
  segment tables), 'gsm' (GSM 06.10 full rate), 'none'; all by libsndfile. Input is clipped to
  full scale, as a codec does. G.711 is memoryless, so it is applied as a table of libsndfile's
  round trip of every 16-bit value (the same result, without encoding rows as files)."""
  if codec not in CODECS:
    raise ValueError(f"unknown codec {codec!r}; accepted: {', '.join(CODECS)}")
  waves = np.asarray(waves, np.float32)
  if codec == "none" or waves.shape[0] == 0:
    return waves.copy()
  if codec == "gsm":  # Mono only in libsndfile: one row a file.
    return libsndfile_roundtrip(waves, _SF_SUBTYPES[codec], channels=1)
  pcm = np.clip(np.rint(waves * 32768.0), -32768, 32767).astype(np.int32)
  return _g711_table(_SF_SUBTYPES[codec])[pcm + 32768]


def telephone(waves: np.ndarray, codecs: str | Sequence[str] = "mulaw",
              band_hz: Sequence[float] = (300.0, 3400.0)) -> np.ndarray:
  """Rows [B, S] at 16 kHz through a narrow-band telephone channel: down to 8 kHz (soxr, whose
  anti-alias filter removes everything above 4 kHz), the `band_hz` band-pass, a codec per row
  (one name for all, or one per row), back up to 16 kHz. Same shape out."""
  waves = np.asarray(waves, np.float32)
  if waves.ndim != 2:
    raise ValueError(f"telephone: waves must be [rows, samples], got shape {waves.shape}")
  if waves.shape[0] == 0:
    return waves.copy()
  codecs = [codecs] * waves.shape[0] if isinstance(codecs, str) else list(codecs)
  if len(codecs) != waves.shape[0]:
    raise ValueError(f"telephone: {len(codecs)} codecs for {waves.shape[0]} rows")
  # soxr takes [frames, channels]; the transpose of C-ordered rows is its split-channel layout.
  narrow = soxr.resample(waves.T, SAMPLE_RATE, TELEPHONE_RATE).T
  narrow = scipy.signal.sosfilt(_telephone_sos(tuple(float(f) for f in band_hz)), narrow,
                                axis=-1).astype(np.float32)
  codecs = np.asarray(codecs)
  for codec in sorted(set(codecs.tolist())):
    rows = np.flatnonzero(codecs == codec)
    narrow[rows] = codec_roundtrip(narrow[rows], codec)
  wide = soxr.resample(np.ascontiguousarray(narrow).T, TELEPHONE_RATE, SAMPLE_RATE).T
  return np.ascontiguousarray(_fit_length(wide, waves.shape[1]), np.float32)


def band_eq_response(freqs: np.ndarray, low_hz, high_hz, order, eq_centre_hz=None,
                     eq_gain_db=None, eq_width_octaves=None) -> np.ndarray:
  """[B, F] magnitude responses at `freqs` [F]: a Butterworth band-pass magnitude
  1 / sqrt((1 + (low/f)^2n) (1 + (f/high)^2n)) per row, times EQ bumps of eq_gain_db[b, k] dB,
  Gaussian in log2-frequency around eq_centre_hz[b, k] with std eq_width_octaves[b, k]."""
  f = np.maximum(np.asarray(freqs, np.float64), 1e-3)[None]
  low, high = np.asarray(low_hz, np.float64)[:, None], np.asarray(high_hz, np.float64)[:, None]
  twice_order = 2 * np.asarray(order, np.float64)[:, None]
  magnitude = 1 / np.sqrt((1 + (low / f) ** twice_order) * (1 + (f / high) ** twice_order))
  if eq_centre_hz is not None:
    octaves = np.log2(f[:, None] / np.asarray(eq_centre_hz, np.float64)[..., None])  # [B, K, F]
    bumps = np.asarray(eq_gain_db)[..., None] * np.exp(
        -0.5 * (octaves / np.asarray(eq_width_octaves)[..., None]) ** 2)
    magnitude = magnitude * 10 ** (bumps.sum(axis=1) / 20)
  return magnitude.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _knots(bins: int, count: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """~`count` of `bins` rfft bins, the first 64 all, then log-spaced (constant relative
  resolution, as a smooth response in log-frequency needs), and for every bin the knot
  at its right and its linear interpolation weight."""
  knots = np.unique(np.r_[np.arange(min(64, bins)),
                          np.geomspace(64, bins - 1, count).round().astype(np.int64)])
  knots = knots[knots < bins]
  every = np.arange(bins)
  right = np.clip(np.searchsorted(knots, every, side="right"), 1, max(knots.size - 1, 1))
  gap = np.maximum(knots[right] - knots[right - 1], 1)
  weight = np.clip((every - knots[right - 1]) / gap, 0, 1).astype(np.float32)
  return knots, right, weight


def filter_rows(waves: np.ndarray, responses) -> np.ndarray:
  """Zero-phase filtering of rows [B, S] by smooth magnitude responses: `responses(freqs)`
  -> [B, len(freqs)] is evaluated at ~600 of the padded FFT's rfft bins (Hz; all below 40 Hz,
  log-spaced above) and interpolated linearly in between: bins are ~0.6 Hz apart, so a smooth
  response loses nothing and its exp/power cost drops ~20 times. One FFT pair for all rows."""
  waves = np.asarray(waves, np.float32)
  n = scipy.fft.next_fast_len(waves.shape[-1] + _FILTER_PAD, real=True)
  freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
  knots, right, weight = _knots(freqs.size)
  sparse = np.asarray(responses(freqs[knots]), np.float32)
  if knots.size == 1:
    return _fft_convolve(waves, np.repeat(sparse, freqs.size, axis=1), n)
  dense = sparse[:, right - 1] * (1 - weight) + sparse[:, right] * weight
  return _fft_convolve(waves, dense, n)


def change_speed(wave: np.ndarray, factor: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Kaldi's (sox's) speed perturbation: the audio played `factor` times faster, by resampling.

  Length becomes len / factor (rounded), every frequency (pitch, formants) x factor. A wave [S]
  or rows [B, S] (each row alone). Deterministic: the pipeline makes one speaker per factor.
  """
  if not (factor > 0 and math.isfinite(factor)):
    raise ValueError(f"change_speed: factor must be a positive number, got {factor!r}")
  wave = np.asarray(wave, np.float32)
  if wave.ndim not in (1, 2):
    raise ValueError(f"change_speed: wave must be [samples] or [rows, samples], got {wave.shape}")
  if factor == 1:
    return wave.copy()
  # Reading the samples as if recorded at sample_rate * factor, then resampling to sample_rate.
  out = soxr.resample(wave.T, sample_rate * factor, sample_rate)
  return np.ascontiguousarray(out.T, np.float32)


# --- Folders of audio ----------------------------------------------------------------------

def list_audio_files(folder: str | os.PathLike) -> list[str]:
  """Every .wav / .flac under `folder` (recursively), sorted; an error naming the folder when
  it is missing, unreadable or has none."""
  folder = os.fspath(folder)
  if not os.path.isdir(folder):
    raise ValueError(f"{folder}: not a folder (missing, or not a directory)")

  def fail(error):
    raise ValueError(f"{folder}: cannot list the folder ({error})")

  found = sorted(os.path.join(root, name)
                 for root, _, names in os.walk(folder, onerror=fail, followlinks=True)
                 for name in names if name.lower().endswith(audio.AUDIO_EXTENSIONS))
  if not found:
    raise ValueError(f"{folder}: no audio files ({', '.join(audio.AUDIO_EXTENSIONS)}) in it or "
                     "below")
  return found


class _WaveCache:
  """Decoded files by path, the least recently used dropped beyond `max_bytes`. Thread-safe;
  pickles empty (a worker process fills its own)."""

  def __init__(self, max_bytes: int):
    self.max_bytes = int(max_bytes)
    self._items: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
    self._bytes = 0
    self._lock = threading.Lock()

  def get(self, key: str) -> np.ndarray | None:
    with self._lock:
      value = self._items.get(key)
      if value is not None:
        self._items.move_to_end(key)
      return value

  def put(self, key: str, value: np.ndarray) -> None:
    with self._lock:
      if key in self._items or value.nbytes > self.max_bytes:
        return
      self._items[key] = value
      self._bytes += value.nbytes
      while self._bytes > self.max_bytes:
        self._bytes -= self._items.popitem(last=False)[1].nbytes

  @property
  def nbytes(self) -> int:
    return self._bytes

  def __getstate__(self):
    return {"max_bytes": self.max_bytes}

  def __setstate__(self, state):
    self.__init__(state["max_bytes"])


class AudioFolder:
  """The audio files under some folders, drawn from as random 16 kHz mono segments.

  Files are listed at construction and their headers read (a file whose header cannot be read
  is skipped); samples are decoded lazily: files up to `whole_file_seconds` whole, by
  `hive.data.audio.load_wave`, and kept in `cache` (a segment is then a slice); longer ones a
  segment at a time (a seek: cheap in WAV, ~1-2 ms in FLAC). A file that fails to decode is
  skipped and its draw moves to the next usable file, so results depend only on the files.
  `skipped` lists (path, reason) of every file skipped so far.
  """

  def __init__(self, dirs: Sequence[str | os.PathLike], kind: str,
               cache: _WaveCache | None = None, whole_file_seconds: float = 60.0):
    self.kind = kind
    self.dirs = tuple(os.fspath(d) for d in dirs)
    if not self.dirs:
      raise ValueError(f"{kind}: no folders given")
    self.cache = cache if cache is not None else _WaveCache(512 * 2 ** 20)
    self.whole_samples = int(whole_file_seconds * SAMPLE_RATE)
    self.skipped: list[tuple[str, str]] = []
    self._skipped_paths: set[str] = set()
    self._bad: set[int] = set()  # Files whose whole decoding failed.
    self.paths: list[str] = []
    self._rates: list[int] = []
    self._lengths: list[int] = []  # At 16 kHz, from the header.
    for folder in self.dirs:
      for path in list_audio_files(folder):
        try:
          info = sf.info(path)
        except Exception as e:  # soundfile raises several types for corrupt input.
          self._skip(path, f"cannot read the header ({type(e).__name__}: {e})")
          continue
        if info.frames <= 0 or info.samplerate <= 0:
          self._skip(path, "zero-length audio (no samples)")
          continue
        self.paths.append(path)
        self._rates.append(int(info.samplerate))
        self._lengths.append(int(math.ceil(info.frames * SAMPLE_RATE / info.samplerate)))
    if not self.paths:
      raise ValueError(f"{kind}: no readable audio under {', '.join(self.dirs)} "
                       f"({len(self.skipped)} files skipped; first: {self.skipped[0][1]})")

  def __len__(self) -> int:
    return len(self.paths)

  @property
  def skipped_count(self) -> int:
    return len(self.skipped)

  def _skip(self, path: str, reason: str) -> None:
    if path not in self._skipped_paths:
      self._skipped_paths.add(path)
      self.skipped.append((path, reason))
      logging.warning("%s source: skipping %s: %s", self.kind, path, reason)

  def segments(self, rng: np.random.Generator, count: int, length: int) -> np.ndarray:
    """[count, length] float32: each a random file, tiled from a random point if shorter than
    `length`, else cut at a random offset."""
    files = rng.integers(len(self.paths), size=count)
    offsets = rng.random(count)
    out = np.empty((count, length), np.float32)
    for row, (file, offset) in enumerate(zip(files, offsets)):
      out[row] = self._segment(int(file), float(offset), length)
    return out

  def _segment(self, file: int, offset: float, length: int) -> np.ndarray:
    for attempt in range(len(self.paths)):
      index = (file + attempt) % len(self.paths)
      if index in self._bad:
        continue
      try:
        return self._read(index, offset, length)
      except audio.BadAudio as e:
        self._skip(e.path, e.reason)
    raise ValueError(f"{self.kind}: every file under {', '.join(self.dirs)} is unreadable "
                     f"({len(self.skipped)} skipped)")

  def _read(self, index: int, offset: float, length: int) -> np.ndarray:
    path = self.paths[index]
    if self._lengths[index] <= max(self.whole_samples, length):
      wave = self.cache.get(path)
      if wave is None:
        try:
          wave = audio.load_wave(path, SAMPLE_RATE)
        except audio.BadAudio:
          self._bad.add(index)  # Decoding the whole file fails the same way every time.
          raise
        self.cache.put(path, wave)
      if len(wave) >= length:
        start = int(offset * (len(wave) - length + 1))
        return wave[start:start + length]
      return wave[(int(offset * len(wave)) + np.arange(length)) % len(wave)]
    # A long file: decode only the segment (a seek), at the file's own rate.
    rate = self._rates[index]
    start = int(offset * (self._lengths[index] - length + 1)) * rate // SAMPLE_RATE
    frames = int(math.ceil(length * rate / SAMPLE_RATE)) + 64
    try:
      data = sf.read(path, start=start, frames=frames, dtype="float32", always_2d=True)[0]
    except Exception as e:
      raise audio.BadAudio(path, f"cannot decode audio ({type(e).__name__}: {e})") from None
    wave = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1)
    if wave.size == 0:
      raise audio.BadAudio(path, "fewer samples than its header says")
    if not np.all(np.isfinite(wave)):
      raise audio.BadAudio(path, "audio contains NaN or Inf samples")
    if rate != SAMPLE_RATE:
      wave = soxr.resample(wave, rate, SAMPLE_RATE)
    if len(wave) < length:
      wave = np.resize(wave, length)
    return np.asarray(wave[:length], np.float32)


# --- Room impulse responses ----------------------------------------------------------------

def default_cache_dir() -> str:
  """$HIVE_CACHE/rirs, else ~/.cache/hive/rirs."""
  return os.path.join(os.environ.get("HIVE_CACHE") or os.path.expanduser("~/.cache/hive"), "rirs")


def simulate_rir(rng: np.random.Generator, room_m, rt60_s, max_order: int,
                 min_distance_m: float) -> np.ndarray:
  """One RIR of a random shoebox room (pyroomacoustics' image method), as simulated (with the
  propagation delay before the direct path). Room size, RT60 and positions come from `rng`."""
  import pyroomacoustics as pra  # Imported here: only bank generation needs it.
  room_m = np.asarray(room_m, np.float64)
  for _ in range(100):
    dims = rng.uniform(room_m[:, 0], room_m[:, 1])
    rt60 = rng.uniform(*rt60_s)
    try:
      absorption, order = pra.inverse_sabine(rt60, dims)
    except ValueError:  # So dry a room would need absorption > 1: draw another.
      continue
    margin = np.minimum(0.5, dims / 4)
    high = np.array([dims[0] - margin[0], dims[1] - margin[1], min(2.0, dims[2] - margin[2])])
    low = np.array([margin[0], margin[1], min(1.0, high[2])])
    source, mic = rng.uniform(low, high), rng.uniform(low, high)
    if np.linalg.norm(source - mic) < min_distance_m:
      continue
    room = pra.ShoeBox(dims, fs=SAMPLE_RATE, materials=pra.Material(absorption),
                       max_order=int(min(order, max_order)))
    room.add_source(source)
    room.add_microphone(mic)
    room.compute_rir()
    return np.asarray(room.rir[0][0], np.float64)
  raise ValueError(f"no room drawn in 100 tries satisfies room_m={room_m.tolist()}, "
                   f"rt60_s={tuple(rt60_s)}, min_distance_m={min_distance_m}")


class RirBank:
  """RIRs [count, L] float32, each aligned (direct path at 0), cut and of unit energy
  (`normalise_rir`), zero-padded to the longest; their spectra cached for `reverberate`."""

  def __init__(self, rirs: np.ndarray, source: str):
    rirs = np.asarray(rirs, np.float32)
    if rirs.ndim != 2 or rirs.shape[0] == 0 or not np.all(np.isfinite(rirs)):
      raise ValueError(f"{source}: a RIR bank must be a finite [count, samples] array, "
                       f"got shape {rirs.shape}")
    self.rirs = rirs
    self.source = source
    self._spectra: dict[int, np.ndarray] = {}
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return self.rirs.shape[0]

  def __getstate__(self):
    return {"rirs": self.rirs, "source": self.source}

  def __setstate__(self, state):
    self.__init__(state["rirs"], state["source"])

  @classmethod
  def from_rirs(cls, rirs: Sequence[np.ndarray], max_seconds: float, source: str) -> "RirBank":
    max_samples = max(1, int(max_seconds * SAMPLE_RATE))
    rirs = [normalise_rir(r, max_samples) for r in rirs]
    bank = np.zeros((len(rirs), max(len(r) for r in rirs)), np.float32)
    for row, rir in zip(bank, rirs):
      row[:len(rir)] = rir
    return cls(bank, source)

  @classmethod
  def from_folders(cls, dirs: Sequence[str | os.PathLike], max_seconds: float = 0.5
                   ) -> tuple["RirBank", list[tuple[str, str]]]:
    """Every RIR file under `dirs` (any rate/channels; read as 16 kHz mono), and the skipped
    files as (path, reason)."""
    rirs, skipped = [], []
    dirs = [os.fspath(d) for d in dirs]
    for path in [p for d in dirs for p in list_audio_files(d)]:
      try:
        rirs.append(audio.load_wave(path, SAMPLE_RATE))
      except audio.BadAudio as e:
        skipped.append((e.path, e.reason))
        logging.warning("reverb source: skipping %s: %s", e.path, e.reason)
    if not rirs:
      raise ValueError(f"reverb: no readable RIR under {', '.join(dirs)} "
                       f"({len(skipped)} files skipped; first: {skipped[0][1]})")
    return cls.from_rirs(rirs, max_seconds, f"RIRs under {', '.join(dirs)}"), skipped

  @classmethod
  def simulated(cls, cache_dir: str | os.PathLike | None = None, count: int = 200, seed: int = 0,
                room_m=((3.0, 10.0), (3.0, 10.0), (2.5, 4.0)), rt60_s=(0.2, 0.8),
                max_order: int = 40, min_distance_m: float = 0.5,
                max_seconds: float = 0.5) -> "RirBank":
    """The simulated bank for these settings: read from `cache_dir` when there, else generated
    (RIR i from the seed sequence [seed, i]) and written atomically, so every process and every
    run gets the same bank. The file name carries a digest of the settings and the seed."""
    import pyroomacoustics as pra
    settings = dict(version=RIR_BANK_VERSION, pyroomacoustics=pra.__version__,
                    sample_rate=SAMPLE_RATE, count=int(count), seed=int(seed),
                    room_m=[[float(a), float(b)] for a, b in room_m],
                    rt60_s=[float(t) for t in rt60_s], max_order=int(max_order),
                    min_distance_m=float(min_distance_m), max_seconds=float(max_seconds))
    text = json.dumps(settings, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    cache_dir = os.fspath(cache_dir) if cache_dir else default_cache_dir()
    path = os.path.join(cache_dir, f"rirs-v{RIR_BANK_VERSION}-n{count}-seed{seed}-{digest}.npz")
    if os.path.exists(path):
      try:
        with np.load(path) as stored:
          if str(stored["settings"]) == text:
            return cls(stored["rirs"], f"simulated RIR bank {path}")
        logging.warning("%s: settings differ from its name's; generating it again", path)
      except Exception as e:  # A damaged cache file is replaced, not fatal.
        logging.warning("%s: unreadable (%s); generating it again", path, e)
    if count < 1:
      raise ValueError(f"reverb.simulated.count must be >= 1, got {count}")
    logging.info("Simulating %d room impulse responses into %s", count, path)
    raw = [simulate_rir(np.random.default_rng([int(seed), i]), room_m, rt60_s, max_order,
                        min_distance_m) for i in range(count)]
    bank = cls.from_rirs(raw, max_seconds, f"simulated RIR bank {path}")
    os.makedirs(cache_dir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".tmp", delete=False) as f:
      np.savez(f, rirs=bank.rirs, settings=np.asarray(text))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(f.name, 0o666 & ~umask)  # A cache others may share, not mkstemp's private 0600.
    os.replace(f.name, path)  # Atomic: readers see no file or the whole file.
    return bank

  def _spectrum(self, n: int) -> np.ndarray:
    with self._lock:
      if n not in self._spectra:
        self._spectra.clear()  # One crop length at a time is what a pipeline uses.
        self._spectra[n] = scipy.fft.rfft(self.rirs, n, axis=-1)
      return self._spectra[n]

  def reverberate(self, waves: np.ndarray, index) -> np.ndarray:
    """`reverberate(waves, self.rirs[index])`, with the bank's spectra computed once."""
    waves = np.asarray(waves, np.float32)
    n = scipy.fft.next_fast_len(waves.shape[-1] + self.rirs.shape[1] - 1, real=True)
    return _fft_convolve(waves, self._spectrum(n)[np.asarray(index)], n)


# --- The batch augmenter -------------------------------------------------------------------

def _check_range(name: str, value, low: float = -math.inf, high: float = math.inf):
  if len(value) != 2 or not low <= value[0] <= value[1] <= high:
    raise ValueError(f"augment.wave.{name} must be (low, high) with {low} <= low <= high <= "
                     f"{high}, got {tuple(value)}")


def _check_config(c: ml_collections.ConfigDict) -> None:
  for kind in (*ADDITIVE_KINDS, "reverb", "telephone", "bandpass", "gain"):
    p = c[kind].probability
    if not 0 <= p <= 1:
      raise ValueError(f"augment.wave.{kind}.probability must be in [0, 1], got {p}")
  total = sum(c[kind].probability for kind in ADDITIVE_KINDS)
  if total > 1 + 1e-9:
    raise ValueError("augment.wave: noise, music and babble probabilities must sum to <= 1 (one "
                     f"additive source per row at most), got {total:g}")
  for kind in ADDITIVE_KINDS:
    _check_range(f"{kind}.snr_db", c[kind].snr_db)
  if not c.noise.colours:
    raise ValueError("augment.wave.noise.colours must name at least one spectral exponent")
  _check_range("babble.speakers", c.babble.speakers, 1)
  for name, value in (("cache_mb", c.cache_mb),
                      ("whole_file_seconds", c.whole_file_seconds)):
    if value < 0:
      raise ValueError(f"augment.wave.{name} must be >= 0, got {value}")
  if not c.reverb.max_seconds > 0:
    raise ValueError(f"augment.wave.reverb.max_seconds must be > 0, got {c.reverb.max_seconds}")
  _check_range("bandpass.low_hz", c.bandpass.low_hz, 1e-3, SAMPLE_RATE / 2)
  _check_range("bandpass.high_hz", c.bandpass.high_hz, 1e-3, SAMPLE_RATE / 2)
  _check_range("bandpass.order", c.bandpass.order, 1)
  _check_range("bandpass.eq_bands", c.bandpass.eq_bands, 0)
  _check_range("bandpass.eq_width_octaves", c.bandpass.eq_width_octaves, 1e-3)
  _check_range("bandpass.eq_centre_hz", c.bandpass.eq_centre_hz, 1e-3, SAMPLE_RATE / 2)
  _check_range("gain.db", c.gain.db)
  _check_range("telephone.band_hz", c.telephone.band_hz, 1e-3, TELEPHONE_RATE / 2 - 1e-3)
  unknown = set(c.telephone.codecs) - set(CODECS)
  if unknown or not c.telephone.codecs:
    raise ValueError(f"augment.wave.telephone.codecs must be a non-empty choice of "
                     f"{', '.join(CODECS)}, got {tuple(c.telephone.codecs)}")


class Augmenter:
  """The waveform augmentation of a config block (`default_config()`), applied per batch.

  Construction lists the source folders and builds (or reads from the cache) the RIR bank, so
  do it once per process; it pickles without its caches, for input-pipeline workers.
  `augmenter(waves, speakers, rng)` is `augment_batch`.
  """

  def __init__(self, config: ml_collections.ConfigDict | None = None):
    # A deep copy: later edits of the caller's config must not change this augmenter.
    c = ml_collections.ConfigDict(
        config if config is not None else default_config()).copy_and_resolve_references()
    _check_config(c)
    self.config = c
    self.cache = _WaveCache(int(c.cache_mb * 2 ** 20))
    self.dirs = {kind: [os.fspath(d) for d in c[kind].dirs] for kind in ADDITIVE_KINDS}
    if c.musan_root:
      for kind, name in _MUSAN_FOLDERS.items():
        folder = os.path.join(c.musan_root, name)
        if not os.path.isdir(folder):
          raise ValueError(f"{c.musan_root}: not a MUSAN root (no {name}/ folder in it)")
        self.dirs[kind].append(folder)
    self._sources: dict[str, AudioFolder] = {}
    for kind in ADDITIVE_KINDS:
      if c[kind].probability > 0:
        self.source(kind)  # Listed now, so a bad folder fails at start-up.
    self.rir_skipped: list[tuple[str, str]] = []
    self._rir_bank: RirBank | None = None
    if c.reverb.probability > 0:
      self._rir_bank = self.rir_bank
    logging.info("Waveform augmentation: %s", "; ".join(self.describe()))

  @property
  def rir_bank(self) -> RirBank:
    """The RIRs (built on first use when reverb.probability is 0)."""
    if self._rir_bank is None:
      r = self.config.reverb
      if r.dirs:
        self._rir_bank, self.rir_skipped = RirBank.from_folders(r.dirs, r.max_seconds)
      else:
        self._rir_bank = RirBank.simulated(self.config.cache_dir or None, max_seconds=r.max_seconds,
                                           **r.simulated.to_dict())
    return self._rir_bank

  def source(self, kind: str) -> AudioFolder | None:
    """The folders of an additive kind (listed on first use), or None when it has none."""
    if kind not in self._sources and self.dirs[kind]:
      self._sources[kind] = AudioFolder(self.dirs[kind], kind, self.cache,
                                        self.config.whole_file_seconds)
    return self._sources.get(kind)

  @property
  def skipped(self) -> dict[str, list[tuple[str, str]]]:
    """(path, reason) of every source file skipped so far, by kind."""
    out = {kind: list(src.skipped) for kind, src in self._sources.items()}
    if self.rir_skipped:
      out["reverb"] = list(self.rir_skipped)
    return out

  def describe(self) -> list[str]:
    """One line per kind that can apply: probability and source."""
    c, lines = self.config, []
    if c.reverb.probability > 0:
      lines.append(f"reverb p={c.reverb.probability:g} ({len(self.rir_bank)} RIRs, "
                   f"{self.rir_bank.source})")
    for kind in ADDITIVE_KINDS:
      if c[kind].probability <= 0:
        continue
      source = self.source(kind)
      if source is not None:
        where = f"{len(source)} files under {', '.join(source.dirs)}"
      else:
        where = {"noise": "generated coloured noise", "music": "no folder: never applied",
                 "babble": "other training speakers"}[kind]
      lines.append(f"{kind} p={c[kind].probability:g} SNR {tuple(c[kind].snr_db)} dB ({where})")
    for kind in ("telephone", "bandpass", "gain"):
      if c[kind].probability > 0:
        lines.append(f"{kind} p={c[kind].probability:g}")
    return lines or ["nothing (every probability is 0)"]

  def __call__(self, waves: np.ndarray, speakers: np.ndarray, rngs, babble=None) -> np.ndarray:
    return augment_batch(waves, speakers, rngs, self, babble)

  # The additive sources: one row -> [S] signal (any level; it is scaled to the SNR).

  def _additive(self, kind: str, rng: np.random.Generator, row: int, clean: np.ndarray,
                speakers: np.ndarray, babble) -> np.ndarray:
    c, source, length = self.config, self.source(kind), clean.shape[1]
    if kind == "noise" and source is None:
      return noise_bank_segments(rng, 1, length, tuple(float(x) for x in c.noise.colours))[0]
    if kind != "babble":
      return source.segments(rng, 1, length)[0]
    low, high = (int(k) for k in c.babble.speakers)
    size = int(rng.integers(low, high + 1))
    if source is not None:
      parts = source.segments(rng, size, length)
    elif babble is not None:
      parts = babble(rng, speakers[row], size, length)
    else:
      parts = batch_babble(clean, speakers, row, size, rng)
    if not len(parts):
      return np.zeros(length, np.float32)
    # Each utterance at the same level (unit power) before summing.
    return (parts / np.sqrt(np.maximum(power(parts), 1e-20))[:, None]).sum(0).astype(np.float32)


def batch_babble(clean: np.ndarray, speakers: np.ndarray, row: int, size: int,
                 rng: np.random.Generator) -> np.ndarray:
  """[<= size, S]: one random crop of each of `size` distinct other speakers of the batch
  (fewer when the batch has fewer), never the row's own speaker. Depends on which rows share
  the batch: the input pipeline passes a `babble` source that reads other training speakers'
  crops instead, so a row's augmentation is the same however the batch is split."""
  speakers = np.asarray(speakers)
  others = np.unique(speakers[speakers != speakers[row]])
  chosen = others[np.argsort(rng.random(len(others)))[:size]]
  rows = [int(rng.choice(np.flatnonzero(speakers == s))) for s in chosen]
  return clean[rows]


def row_rngs(seed: int, step: int, rows) -> list[np.random.Generator]:
  """One generator per row of batch `step`: rows are numbered in the global batch, so a row's
  augmentation is the same whichever process builds it."""
  return [np.random.default_rng(np.random.SeedSequence([_BATCH_TAG, int(seed), int(step),
                                                        int(row)])) for row in rows]


def _draw_row(rng: np.random.Generator, c: ml_collections.ConfigDict) -> dict:
  """A row's random parameters, every one drawn in a fixed order whatever the config."""
  bp = c.bandpass
  most_bands = max(int(bp.eq_bands[1]), 1)
  p = {"reverb_on": rng.random() < c.reverb.probability, "rir_pick": rng.random(),
       "additive_pick": rng.random(),
       "snr_db": {kind: rng.uniform(*c[kind].snr_db) for kind in ADDITIVE_KINDS},
       "telephone_on": rng.random() < c.telephone.probability,
       "codec": int(rng.integers(len(c.telephone.codecs))),
       "bandpass_on": rng.random() < bp.probability,
       "low_hz": float(np.exp(rng.uniform(np.log(bp.low_hz[0]), np.log(bp.low_hz[1])))),
       "high_hz": rng.uniform(*bp.high_hz),
       "order": int(rng.integers(bp.order[0], bp.order[1] + 1)),
       "bands": int(rng.integers(bp.eq_bands[0], bp.eq_bands[1] + 1)),
       "eq_centre": np.exp(rng.uniform(*np.log(bp.eq_centre_hz), size=most_bands)),
       "eq_gain": rng.uniform(-bp.eq_gain_db, bp.eq_gain_db, size=most_bands),
       "eq_width": rng.uniform(*bp.eq_width_octaves, size=most_bands),
       "gain_on": rng.random() < c.gain.probability, "gain_db": rng.uniform(*c.gain.db),
       "source": np.random.default_rng(rng.integers(2 ** 63))}  # For the additive source.
  p["eq_gain"] = p["eq_gain"] * (np.arange(most_bands) < p["bands"])
  return p


def augment_batch(waves: np.ndarray, speakers: np.ndarray, rngs, augmenter: Augmenter,
                  babble=None) -> np.ndarray:
  """The augmentation of one batch: float32 [B, S] crops at 16 kHz (full scale 1.0) and their
  speaker ids [B] -> float32 [B, S]. Rows not picked by any kind come back unchanged.

  `rngs`: one generator per row (`row_rngs`), so each row's augmentation is a pure function of
  its crop and its generator, whatever the other rows (a batch split between processes is
  augmented as a whole one); a single generator is split into one per row. `babble(rng,
  speaker, count, length)`: crops of `count` other speakers for babble without folders; None:
  other speakers' crops of the same batch.
  """
  waves = np.asarray(waves)
  if waves.ndim != 2 or not np.issubdtype(waves.dtype, np.floating):
    raise ValueError(f"augment_batch: waves must be float [batch, samples], got {waves.dtype} "
                     f"{waves.shape} (int16 audio: divide by 32768 first)")
  speakers = np.asarray(speakers)
  if speakers.shape != waves.shape[:1]:
    raise ValueError(f"augment_batch: {speakers.shape} speakers for {waves.shape[0]} rows")
  c, b = augmenter.config, waves.shape[0]
  if isinstance(rngs, np.random.Generator):
    rngs = rngs.spawn(b)
  if len(rngs) != b:
    raise ValueError(f"augment_batch: {len(rngs)} generators for {b} rows")
  clean = np.ascontiguousarray(waves, np.float32)
  out = clean.copy()
  if b == 0:
    return out
  drawn = [_draw_row(rng, c) for rng in rngs]
  get = lambda key: np.array([d[key] for d in drawn])

  rows = np.flatnonzero(get("reverb_on"))
  if rows.size:
    bank = augmenter.rir_bank
    out[rows] = bank.reverberate(out[rows], (get("rir_pick")[rows] * len(bank)).astype(np.int64))

  # Additive kind per row: noise, music, babble by cumulative probability, else none. Music
  # without folders leaves its share of rows clean rather than shifting the others' shares.
  edges = np.cumsum([c[kind].probability for kind in ADDITIVE_KINDS])
  chosen = np.searchsorted(edges, get("additive_pick"), side="right")
  speech_power = power(out)  # After reverb; one additive kind a row, so computed once.
  for k, kind in enumerate(ADDITIVE_KINDS):
    rows = np.flatnonzero(chosen == k)
    if rows.size and (kind != "music" or augmenter.source(kind) is not None):
      added = np.stack([augmenter._additive(kind, drawn[r]["source"], r, clean, speakers, babble)
                        for r in rows])
      snr = np.array([drawn[r]["snr_db"][kind] for r in rows])
      gains = snr_gains(speech_power[rows], power(added), snr)
      out[rows] += added * gains[:, None].astype(np.float32)

  rows = np.flatnonzero(get("telephone_on"))
  if rows.size:
    codecs = [c.telephone.codecs[i] for i in get("codec")[rows]]
    out[rows] = telephone(out[rows], codecs, tuple(c.telephone.band_hz))

  rows = np.flatnonzero(get("bandpass_on"))
  if rows.size:
    out[rows] = filter_rows(out[rows], lambda freqs: band_eq_response(
        freqs, get("low_hz")[rows], get("high_hz")[rows], get("order")[rows],
        get("eq_centre")[rows], get("eq_gain")[rows], get("eq_width")[rows]))

  rows = np.flatnonzero(get("gain_on"))
  out[rows] *= (10 ** (get("gain_db")[rows] / 20)).astype(np.float32)[:, None]
  return out


# --- Evaluation corruptions ----------------------------------------------------------------

DEGRADE_FORMS = ("'none', 'telephone', 'reverb', 'noise:SNR' (SNR in dB, e.g. noise:5), or "
                 "several joined by '+' (e.g. telephone+noise:10)")


def parse_degrade(spec: str) -> dict:
  """A --degrade spec -> {'reverb': bool, 'noise': SNR in dB or None, 'telephone': bool}."""
  parsed = {"reverb": False, "noise": None, "telephone": False}
  parts = [p.strip() for p in str(spec).split("+")]
  if parts == ["none"]:
    return parsed
  for part in parts:
    name, _, argument = part.partition(":")
    if name in ("reverb", "telephone") and not argument:
      seen = parsed[name]
      parsed[name] = True
    elif name == "noise" and argument:
      try:
        snr = float(argument)
      except ValueError:
        snr = math.nan
      if not math.isfinite(snr):
        raise ValueError(f"--degrade={spec!r}: {argument!r} is not an SNR in dB; accepted: "
                         f"{DEGRADE_FORMS}")
      seen = parsed["noise"] is not None
      parsed["noise"] = snr
    else:
      raise ValueError(f"--degrade={spec!r}: unknown part {part!r}; accepted: {DEGRADE_FORMS}")
    if seen:
      raise ValueError(f"--degrade={spec!r}: {name} given twice; accepted: {DEGRADE_FORMS}")
  return parsed


@functools.lru_cache(maxsize=1)
def _default_rir_bank() -> RirBank:
  r = default_config().reverb
  return RirBank.simulated(None, max_seconds=r.max_seconds, **r.simulated.to_dict())


def degrade(wave: np.ndarray, spec: str, seed: int = 0,
            augmenter: Augmenter | None = None) -> np.ndarray:
  """One utterance float32 [S] at 16 kHz, corrupted by `spec` (see `DEGRADE_FORMS`) -> [S].

  Applied in the order sound meets them, whatever the order written: reverb (a RIR of the
  augmenter's bank, else of the default simulated bank, cached), noise (at exactly SNR dB over
  the whole utterance after reverb; from the augmenter's noise folders, else seeded pink noise,
  power ~ 1/f), telephone (8 kHz, 300-3400 Hz, G.711 mu-law). Deterministic in (wave, spec,
  seed): pass a per-utterance seed (e.g. zlib.crc32 of its id) so utterances differ. Each kind
  draws from its own stream, so 'noise:5' and 'reverb+noise:5' add the same noise.
  """
  parsed = parse_degrade(spec)
  wave = np.asarray(wave, np.float32)
  if wave.ndim != 1 or wave.size == 0:
    raise ValueError(f"degrade: wave must be a non-empty [samples] array, got shape {wave.shape}")
  out = wave[None].copy()
  if parsed["reverb"]:
    bank = augmenter.rir_bank if augmenter is not None else _default_rir_bank()
    index = np.random.default_rng([_DEGRADE_TAG, int(seed), 0]).integers(len(bank))
    out = bank.reverberate(out, [index])
  if parsed["noise"] is not None:
    rng = np.random.default_rng([_DEGRADE_TAG, int(seed), 1])
    source = augmenter.source("noise") if augmenter is not None else None
    noise = (source.segments(rng, 1, wave.size) if source is not None
             else coloured_noise(rng, 1, wave.size, 1.0))
    out = mix_at_snr(out, noise, parsed["noise"])
  if parsed["telephone"]:
    out = telephone(out, "mulaw")
  return out[0]
