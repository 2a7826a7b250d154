"""Log-mel features: pure functions from a 16 kHz wave to float32 [frames, n_mels].

The values are librosa's (`librosa.feature.melspectrogram` with a Slaney mel filterbank,
centred frames, a periodic Hann window; tests check it within 1e-5), computed here in numpy
and scipy.fft: librosa's first call imports numba and scipy.signal (seconds), which every
command and the first `hive.Encoder.embed` would wait for, and one batched FFT serves the
input pipeline's augmented crops too.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import scipy.fft

LOG_FLOOR = 1e-6  # Keeps log() finite on digital silence; about -138 dB re full power.


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
  sample_rate: int = 16000
  n_mels: int = 40
  window_ms: float = 25.0
  hop_ms: float = 10.0
  n_fft: int = 512  # FFT size >= window (400 samples at 16 kHz), zero-padded.
  fmin: float = 20.0
  fmax: float | None = None  # None: Nyquist.
  trim_silence: bool = False
  trim_top_db: float = 40.0  # Frames this far below the peak count as silence.

  @property
  def win_length(self) -> int:
    return int(round(self.sample_rate * self.window_ms / 1000))

  @property
  def hop_length(self) -> int:
    return int(round(self.sample_rate * self.hop_ms / 1000))

  @classmethod
  def from_dict(cls, d) -> "FeatureConfig":
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in dict(d).items() if k in fields})


def trim_silence(wave: np.ndarray, config: FeatureConfig) -> np.ndarray:
  """Keeps only the non-silent stretches (energy within `trim_top_db` of the peak)."""
  import librosa  # Only for this option (its import costs seconds).
  intervals = librosa.effects.split(wave, top_db=config.trim_top_db,
                                    frame_length=config.win_length,
                                    hop_length=config.hop_length)
  if len(intervals) == 0:
    return wave
  return np.concatenate([wave[a:b] for a, b in intervals])


_SLANEY_HZ_PER_MEL = 200.0 / 3  # The Slaney (Auditory Toolbox) mel scale: linear below 1 kHz,
_SLANEY_LOG_HZ = 1000.0          # logarithmic above, as librosa's default (htk=False).
_SLANEY_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz) -> np.ndarray:
  hz = np.asarray(hz, np.float64)
  linear = hz / _SLANEY_HZ_PER_MEL
  log_start = _SLANEY_LOG_HZ / _SLANEY_HZ_PER_MEL
  above = log_start + np.log(np.maximum(hz, 1e-10) / _SLANEY_LOG_HZ) / _SLANEY_LOG_STEP
  return np.where(hz >= _SLANEY_LOG_HZ, above, linear)


def mel_to_hz(mel) -> np.ndarray:
  mel = np.asarray(mel, np.float64)
  log_start = _SLANEY_LOG_HZ / _SLANEY_HZ_PER_MEL
  above = _SLANEY_LOG_HZ * np.exp(_SLANEY_LOG_STEP * (mel - log_start))
  return np.where(mel >= log_start, above, mel * _SLANEY_HZ_PER_MEL)


def mel_frequencies(count: int, fmin: float, fmax: float) -> np.ndarray:
  """`count` frequencies (Hz) equally spaced on the mel scale from fmin to fmax."""
  return mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), count))


@functools.lru_cache(maxsize=8)
def mel_filterbank(config: FeatureConfig) -> np.ndarray:
  """[n_mels, 1 + n_fft // 2] Slaney mel filterbank: triangles between neighbouring mel
  frequencies, each scaled to unit area (librosa.filters.mel's default)."""
  fmax = config.sample_rate / 2 if config.fmax is None else config.fmax
  edges = mel_frequencies(config.n_mels + 2, config.fmin, fmax)
  bins = np.fft.rfftfreq(config.n_fft, 1.0 / config.sample_rate)
  ramps = edges[:, None] - bins[None, :]
  widths = np.diff(edges)
  lower = -ramps[:-2] / widths[:-1, None]
  upper = ramps[2:] / widths[1:, None]
  weights = np.maximum(0.0, np.minimum(lower, upper))
  weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
  return weights.astype(np.float32)


def log_mel(wave: np.ndarray, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
  """Natural-log mel power spectrogram, float32 [frames, n_mels]."""
  if config.trim_silence:
    wave = trim_silence(wave, config)
  return log_mel_batch(np.asarray(wave, np.float32)[None], config)[0]


@functools.lru_cache(maxsize=8)
def _padded_window(config: FeatureConfig) -> np.ndarray:
  """The periodic Hann window of win_length, zero-padded to n_fft, centred (librosa's)."""
  if config.win_length > config.n_fft:
    raise ValueError(f"window ({config.win_length} samples) longer than n_fft ({config.n_fft})")
  n = np.arange(config.win_length)
  window = 0.5 - 0.5 * np.cos(2 * np.pi * n / config.win_length)
  left = (config.n_fft - config.win_length) // 2
  padded = np.zeros(config.n_fft)
  padded[left:left + config.win_length] = window
  return padded.astype(np.float32)


def log_mel_batch(waves: np.ndarray, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
  """`log_mel` of every row of float32 [B, S] at once -> [B, 1 + S // hop, n_mels]: one strided
  framing, one real FFT and one mel matmul for the whole batch (the input pipeline computes
  the log-mel of augmented waveform crops this way). No silence trimming."""
  waves = np.asarray(waves, np.float32)
  if waves.ndim != 2:
    raise ValueError(f"expected waves [batch, samples], got shape {waves.shape}")
  half = config.n_fft // 2  # librosa's centred frames, zero padding ("constant").
  padded = np.pad(waves, ((0, 0), (half, half)))
  frames = np.lib.stride_tricks.sliding_window_view(padded, config.n_fft, axis=1)
  frames = frames[:, ::config.hop_length]  # [B, 1 + S // hop, n_fft]
  spectrum = scipy.fft.rfft(frames * _padded_window(config), axis=-1)  # float32 in, complex64.
  power = spectrum.real ** 2 + spectrum.imag ** 2
  # One 2-D BLAS product: a [B, T, bins] @ [bins, mels] matmul is ten times slower.
  mel = power.reshape(-1, power.shape[-1]) @ _filterbank_t(config)
  return np.log(mel + LOG_FLOOR).reshape(power.shape[:2] + (-1,)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _filterbank_t(config: FeatureConfig) -> np.ndarray:
  return np.ascontiguousarray(mel_filterbank(config).T)


@functools.lru_cache(maxsize=8)
def mel_centre_frequencies(config: FeatureConfig) -> np.ndarray:
  """[n_mels] centre frequency (Hz) of each band of `mel_filterbank`."""
  fmax = config.sample_rate / 2 if config.fmax is None else config.fmax
  return mel_frequencies(config.n_mels + 2, config.fmin, fmax)[1:-1]


def speed_perturb(mel: np.ndarray, factor: float,
                  config: FeatureConfig = FeatureConfig()) -> np.ndarray:
  """Log-mel of the same audio played `factor` times faster, from its log-mel alone.

  Playing a wave faster by `factor` (resampling, as Kaldi's speed perturbation)
  shortens it by 1/factor and moves every frequency f to factor * f. Here both
  happen on the features: frames are linearly interpolated at times factor * t,
  and band m takes the original's value at frequency f_m / factor, interpolated
  between neighbouring band centres (bands past the original's range repeat the
  edge band). Used to make new training "speakers" (higher or lower voices)
  without decoding the audio again.
  """
  mel = np.asarray(mel, np.float32)
  return speed_perturbed_frames(mel, np.arange(speed_perturbed_length(len(mel), factor)),
                                factor, config)


def speed_perturbed_length(num_frames: int, factor: float) -> int:
  """Frames of `speed_perturb(mel, factor)` for a log-mel of `num_frames`."""
  if factor <= 0:
    raise ValueError(f"speed factor must be positive, got {factor}")
  return max(1, int(round(num_frames / factor)))


@functools.lru_cache(maxsize=32)
def band_warp(factor: float, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
  """[n_mels, n_mels]: band m of the sped-up log-mel from the original's bands."""
  centres = mel_centre_frequencies(config)
  # Frequency: fractional band index of f_m / factor in the original.
  bands = np.arange(len(centres), dtype=np.float64)
  source = np.interp(centres / factor, centres, bands)
  warp = np.zeros((len(centres), len(centres)), np.float32)
  low = np.floor(source).astype(int)
  high = np.minimum(low + 1, len(centres) - 1)
  frac = (source - low).astype(np.float32)
  warp[bands.astype(int), low] += 1 - frac
  warp[bands.astype(int), high] += frac
  return warp


def speed_perturbed_frames(mel: np.ndarray, frames, factor: float,
                           config: FeatureConfig = FeatureConfig()) -> np.ndarray:
  """Frames `frames` (indices) of `speed_perturb(mel, factor)`, computed from the original
  frames around them only: what a training crop of a sped-up utterance needs."""
  return warped_frames(mel, np.asarray(frames) * factor, factor, config)


def warped_frames(mel: np.ndarray, positions, factor: float,
                  config: FeatureConfig = FeatureConfig()) -> np.ndarray:
  """The log-mel of audio played `factor` times faster, at (fractional) original frame
  `positions`: frames linearly interpolated there, bands moved by `factor`."""
  if factor <= 0:
    raise ValueError(f"speed factor must be positive, got {factor}")
  mel = np.asarray(mel, np.float32)
  centres = mel_centre_frequencies(config)
  if mel.ndim != 2 or mel.shape[1] != len(centres):
    raise ValueError(f"expected log-mel [frames, {len(centres)}], got {mel.shape}")
  positions = np.minimum(np.asarray(positions, np.float64), len(mel) - 1)
  t0 = np.floor(positions).astype(int)
  t1 = np.minimum(t0 + 1, len(mel) - 1)
  w = (positions - t0).astype(np.float32)[:, None]
  frames_at = (1 - w) * mel[t0] + w * mel[t1]
  return (frames_at @ band_warp(float(factor), config).T).astype(np.float32)


def num_frames(num_samples: int, config: FeatureConfig = FeatureConfig()) -> int:
  """Frames `log_mel` yields for a wave of `num_samples` (librosa centres frames)."""
  return 1 + num_samples // config.hop_length
