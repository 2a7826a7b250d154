"""The log-mel front end in jax.numpy: batched waves with per-row lengths -> log-mels.

The same features as `hive.features.log_mel` (librosa: Hann window of `win_length`
centred in `n_fft`, `center=True` with zero padding, Slaney mel power, natural log
of mel + LOG_FLOOR), computed inside a jitted or exported function so that a
serving export (hive/serving.py) takes raw 16 kHz audio and needs no librosa.

Why a matmul and not `jnp.fft.rfft`: the short-time Fourier transform here is a
product of the framed wave with a precomputed windowed DFT basis (cosines and
sines of the 1 + n_fft/2 bins, the window folded in). A matmul converts to every
runtime, ONNX and TF Lite included, where FFT ops are missing or partial, is
exactly what XLA runs fastest on CPU and GPU, and lets the window's zero padding
be skipped: only the `win_length` samples under the window are multiplied. It
costs O(n_fft) per bin instead of O(log n_fft), cheap at n_fft = 512.

Framing uses no gather either: the padded wave is reshaped into chunks of one
hop, and frame t is the concatenation of chunks t + k0 .. t + k1 - 1, the chunks
the window covers. So the whole front end is pad, reshape, slice, concatenate,
matmul, square, matmul and log: ops with symbolic (any batch, any length) shapes
in jax.export, jax2tf and ONNX alike.

Padding semantics: row b is `waveform[b, :num_samples[b]]`; samples past it are
ignored (zeroed, as librosa's zero padding), so a padded batch gives each row the
log-mel it would get alone. Row b has `1 + num_samples[b] // hop` frames; frames
past that are padding, with unspecified values.

The DFT matmul runs at HIGHEST precision: at the default precision, GPUs and TPUs
round its inputs to TF32 / bfloat16, several orders of magnitude off librosa.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import librosa
import numpy as np

from hive import features as features_lib


@functools.lru_cache(maxsize=8)
def stft_mel_matrices(config: features_lib.FeatureConfig) -> tuple[int, int, np.ndarray,
                                                                   np.ndarray]:
  """(k0, k1, dft [(k1 - k0) * hop, 2 * n_fft // 2], mel [2 * n_fft // 2, n_mels]).

  A frame (n_fft samples from its start in the centre-padded wave) meets the
  window only in hop-sized chunks k0 .. k1 - 1; `dft` maps those chunks'
  samples to the windowed real parts of bins 0 .. n_fft/2, then the imaginary
  parts of bins 1 .. n_fft/2 - 1 (bins 0 and n_fft/2 have none). `mel` sums each
  part's squares into the Slaney mel bands, so power @ mel is the mel power.
  """
  _check(config)
  n_fft, hop = config.n_fft, config.hop_length
  # librosa.stft's own window: periodic Hann of win_length, centred in n_fft.
  window = librosa.util.pad_center(
      librosa.filters.get_window("hann", config.win_length, fftbins=True), size=n_fft)
  support = np.flatnonzero(window)
  k0, k1 = support[0] // hop, -(-(support[-1] + 1) // hop)
  offsets = np.arange(k0 * hop, k1 * hop)  # Sample offsets within the frame.
  bins = np.arange(n_fft // 2 + 1)
  # (n * k) mod n_fft keeps the angles exact in float64.
  angle = 2 * np.pi * ((offsets[:, None] * bins[None, :]) % n_fft) / n_fft
  w = np.where(offsets < n_fft, window[np.minimum(offsets, n_fft - 1)], 0.0)[:, None]
  dft = np.concatenate([w * np.cos(angle), w * np.sin(angle[:, 1:-1])], axis=1)
  fb = features_lib.mel_filterbank(config).astype(np.float64).T  # [bins, n_mels]
  mel = np.concatenate([fb, fb[1:-1]], axis=0)
  return int(k0), int(k1), dft.astype(np.float32), mel.astype(np.float32)


def _check(config: features_lib.FeatureConfig) -> None:
  if config.trim_silence:
    # Cutting silent stretches changes the length per row from the audio itself:
    # no fixed-shape graph can do it; trim before calling, or train without it.
    raise ValueError("the jax.numpy front end cannot trim silence (FeatureConfig."
                     "trim_silence=True); trim the audio before embedding it")
  if config.win_length > config.n_fft:
    raise ValueError(f"window ({config.win_length} samples) longer than n_fft ({config.n_fft})")
  if config.n_fft % 2:
    raise ValueError(f"n_fft must be even, got {config.n_fft}")


def num_frames(num_samples, config: features_lib.FeatureConfig = features_lib.FeatureConfig()):
  """Frames of a wave of `num_samples` (>= 0, an array), as `hive.features.num_frames`."""
  # lax.div truncates, the same as // for lengths; jax2onnx mis-converts jnp's //.
  return 1 + jax.lax.div(num_samples, jnp.asarray(config.hop_length, num_samples.dtype))


def sample_mask(num_samples, length: int):
  """[B] lengths -> [B, length] float32: 1 on the first num_samples[b] samples of row b."""
  index = jax.lax.broadcasted_iota(jnp.int32, (1, length), 1)  # jnp.arange: jax2onnx fails.
  return (index < num_samples[:, None]).astype(jnp.float32)


def log_mel(waveform, num_samples,
            config: features_lib.FeatureConfig = features_lib.FeatureConfig()):
  """float32 [B, S] waves (row b real for its first num_samples[b] samples) ->
  (log-mel float32 [B, 1 + S // hop, n_mels], frames int32 [B]).

  Matches `hive.features.log_mel(waveform[b, :num_samples[b]])` on its frames
  (tested in tests/test_frontend.py); S may be symbolic (jax.export)."""
  k0, k1, dft, mel = stft_mel_matrices(config)
  hop, half = config.hop_length, config.n_fft // 2
  waveform = jnp.asarray(waveform, jnp.float32)
  num_samples = jnp.clip(jnp.asarray(num_samples, jnp.int32), 0, waveform.shape[1])
  batch, samples = waveform.shape
  frames = 1 + samples // hop
  chunks = frames + k1 - 1  # Frame t reads chunks t + k0 .. t + k1 - 1.
  wave = waveform * sample_mask(num_samples, samples)
  # librosa's center=True: n_fft // 2 zeros on the left; the right pad only has to
  # cover the last frame's chunks, then the exact number of chunks is cut.
  wave = jnp.pad(wave, ((0, 0), (half, k1 * hop)))
  wave = wave[:, :chunks * hop].reshape(batch, chunks, hop)
  framed = jnp.concatenate([wave[:, k:k + frames] for k in range(k0, k1)], axis=-1)
  spectrum = jnp.matmul(framed, dft, precision=jax.lax.Precision.HIGHEST)
  power = jnp.matmul(spectrum * spectrum, mel, precision=jax.lax.Precision.HIGHEST)
  return jnp.log(power + features_lib.LOG_FLOOR), num_frames(num_samples, config)
