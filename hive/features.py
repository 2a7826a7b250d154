"""Log-mel features: pure functions from a 16 kHz wave to float32 [frames, n_mels]."""

from __future__ import annotations

import dataclasses
import functools

import librosa
import numpy as np

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
  intervals = librosa.effects.split(wave, top_db=config.trim_top_db,
                                    frame_length=config.win_length,
                                    hop_length=config.hop_length)
  if len(intervals) == 0:
    return wave
  return np.concatenate([wave[a:b] for a, b in intervals])


@functools.lru_cache(maxsize=8)
def mel_filterbank(config: FeatureConfig) -> np.ndarray:
  """[n_mels, 1 + n_fft // 2] Slaney mel filterbank (librosa's default)."""
  return librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels,
                             fmin=config.fmin, fmax=config.fmax)


def log_mel(wave: np.ndarray, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
  """Natural-log mel power spectrogram, float32 [frames, n_mels]."""
  if config.trim_silence:
    wave = trim_silence(wave, config)
  if config.win_length > config.n_fft:
    raise ValueError(f"window ({config.win_length} samples) longer than n_fft ({config.n_fft})")
  power = np.abs(librosa.stft(
      np.asarray(wave, np.float32), n_fft=config.n_fft, hop_length=config.hop_length,
      win_length=config.win_length)) ** 2
  # Same as librosa.feature.melspectrogram, but a cached filterbank and a BLAS
  # matmul: librosa's einsum path is ~20x slower here and dominated preparation.
  mel = mel_filterbank(config) @ power
  return np.log(mel + LOG_FLOOR).T.astype(np.float32)


@functools.lru_cache(maxsize=8)
def mel_centre_frequencies(config: FeatureConfig) -> np.ndarray:
  """[n_mels] centre frequency (Hz) of each band of `mel_filterbank`."""
  fmax = config.sample_rate / 2 if config.fmax is None else config.fmax
  return librosa.mel_frequencies(config.n_mels + 2, fmin=config.fmin, fmax=fmax)[1:-1]


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
  if factor <= 0:
    raise ValueError(f"speed factor must be positive, got {factor}")
  mel = np.asarray(mel, np.float32)
  centres = mel_centre_frequencies(config)
  if mel.ndim != 2 or mel.shape[1] != len(centres):
    raise ValueError(f"expected log-mel [frames, {len(centres)}], got {mel.shape}")
  # Time: output frame j sits at original frame factor * j.
  positions = np.minimum(np.asarray(frames) * factor, len(mel) - 1)
  t0 = np.floor(positions).astype(int)
  t1 = np.minimum(t0 + 1, len(mel) - 1)
  w = (positions - t0).astype(np.float32)[:, None]
  frames_at = (1 - w) * mel[t0] + w * mel[t1]
  return (frames_at @ band_warp(float(factor), config).T).astype(np.float32)


def num_frames(num_samples: int, config: FeatureConfig = FeatureConfig()) -> int:
  """Frames `log_mel` yields for a wave of `num_samples` (librosa centres frames)."""
  return 1 + num_samples // config.hop_length
