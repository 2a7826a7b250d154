"""The jax.numpy log-mel front end (hive/frontend.py) against librosa's (hive/features.py)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from hive import features, frontend
from hive.data import audio

# Largest |difference| allowed between the two natural-log mel powers. Measured: 7.6e-6
# on real speech (LibriSpeech, speechcommands), float32 rounding of two DFT
# algorithms; 1e-4 is 0.0004 dB, far below anything a speaker model can tell.
TOLERANCE = 1e-4

log_mel = jax.jit(frontend.log_mel, static_argnums=2)
# librosa warns that clips shorter than n_fft are short; these tests mean them to be.
pytestmark = pytest.mark.filterwarnings("ignore:n_fft=.* is too large")


def batch_of(waves):
  w = np.zeros((len(waves), max(len(x) for x in waves)), np.float32)
  for row, x in enumerate(waves):
    w[row, :len(x)] = x
  return w, np.array([len(x) for x in waves], np.int32)


def assert_matches_librosa(waves, config=features.FeatureConfig()):
  w, n = batch_of(waves)
  mels, frames = log_mel(w, n, config)
  mels, frames = np.asarray(mels), np.asarray(frames)
  assert mels.shape == (len(waves), 1 + w.shape[1] // config.hop_length, config.n_mels)
  for row, x in enumerate(waves):
    want = features.log_mel(x, config)
    assert frames[row] == len(want) == features.num_frames(len(x), config)
    np.testing.assert_allclose(mels[row, :len(want)], want, rtol=0, atol=TOLERANCE,
                               err_msg=f"row {row} ({len(x)} samples)")


def test_matches_librosa_on_real_speech_batched(shared_data):
  paths = {
      "librispeech": sorted((shared_data / "librispeech").rglob("*.flac"))[:2],
      "speechocean762": sorted((shared_data / "speechocean762").rglob("*.flac"))[:2],
      "speechcommands": sorted((shared_data / "speechcommands").rglob("*.flac"))[:2],
  }
  missing = [name for name, found in paths.items() if not found]
  if missing:
    pytest.skip(f"no audio of {', '.join(missing)} under {shared_data}")
  # One batch of mixed lengths (about 0.5 s to 15 s): padding must not leak into a row.
  assert_matches_librosa([audio.load_wave(p) for p in itertools.chain(*paths.values())])


def test_matches_librosa_on_edge_lengths_and_signals():
  rng = np.random.default_rng(0)
  # Around one hop (160), the window (400), n_fft (512) and its half, and a length
  # that is not a multiple of the hop; full-scale noise, a tone, a click, silence.
  waves = [rng.uniform(-1, 1, n).astype(np.float32) for n in (1, 100, 159, 160, 161, 255, 256,
                                                             257, 399, 400, 511, 512, 513)]
  t = np.arange(16001) / 16000
  waves.append((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
  click = np.zeros(3000, np.float32)
  click[1234] = 1.0
  waves += [click, np.zeros(2000, np.float32)]
  assert_matches_librosa(waves)


def test_silence_is_the_log_floor():
  mels, _ = log_mel(np.zeros((1, 1600), np.float32), np.array([1600]), features.FeatureConfig())
  np.testing.assert_allclose(mels, np.log(features.LOG_FLOOR), rtol=1e-6)


def test_samples_past_num_samples_are_ignored():
  rng = np.random.default_rng(1)
  wave = rng.normal(0, 0.1, 8000).astype(np.float32)
  padded = np.zeros((2, 12000), np.float32)
  padded[0, :8000] = padded[1, :8000] = wave
  padded[1, 8000:] = rng.uniform(-1, 1, 4000)  # Garbage that must not reach row 1.
  mels, frames = log_mel(padded, np.array([8000, 8000]), features.FeatureConfig())
  assert list(frames) == [51, 51]
  np.testing.assert_array_equal(np.asarray(mels)[0, :51], np.asarray(mels)[1, :51])


def test_other_settings_match_librosa():
  config = features.FeatureConfig(n_mels=64, n_fft=400, hop_ms=12.5, fmin=50, fmax=7000)
  rng = np.random.default_rng(2)
  assert_matches_librosa([rng.normal(0, 0.2, n).astype(np.float32) for n in (3001, 777)], config)


def test_dft_matrix_is_the_windowed_rfft():
  config = features.FeatureConfig()
  k0, k1, dft, mel = frontend.stft_mel_matrices(config)
  hop, n_fft = config.hop_length, config.n_fft
  # The 400-sample window sits at offsets 56..455 of the 512-sample frame: chunks 0..2.
  assert (k0, k1) == (0, 3) and dft.shape == (3 * hop, n_fft) and mel.shape == (n_fft, 40)
  frame = np.random.default_rng(3).normal(size=n_fft)
  window = librosa.util.pad_center(librosa.filters.get_window("hann", config.win_length),
                                   size=n_fft)
  spectrum = np.fft.rfft(window * frame)
  got = frame[k0 * hop:k1 * hop] @ dft.astype(np.float64)
  np.testing.assert_allclose(got[:n_fft // 2 + 1], spectrum.real, atol=1e-4)
  np.testing.assert_allclose(np.abs(got[n_fft // 2 + 1:]), np.abs(spectrum.imag[1:-1]), atol=1e-4)
  np.testing.assert_allclose((got ** 2) @ mel, features.mel_filterbank(config) @ np.abs(
      spectrum) ** 2, rtol=1e-4)


def test_symbolic_shapes_export():
  """One jax.export serves any batch and length (what hive/serving.py relies on)."""
  b, s = jax.export.symbolic_shape("b, s")
  exported = jax.export.export(jax.jit(frontend.log_mel))(
      jax.ShapeDtypeStruct((b, s), jnp.float32), jax.ShapeDtypeStruct((b,), jnp.int32))
  for shape in ((1, 480), (3, 1999)):
    w = np.random.default_rng(4).normal(0, 0.1, shape).astype(np.float32)
    n = np.full(shape[0], shape[1], np.int32)
    mels, frames = exported.call(w, n)
    assert mels.shape == (shape[0], 1 + shape[1] // 160, 40)
    np.testing.assert_allclose(np.asarray(mels)[-1], features.log_mel(w[-1]), atol=TOLERANCE)


def test_refuses_what_it_cannot_compute():
  with pytest.raises(ValueError, match="trim silence"):
    frontend.stft_mel_matrices(features.FeatureConfig(trim_silence=True))
  with pytest.raises(ValueError, match="longer than n_fft"):
    frontend.stft_mel_matrices(features.FeatureConfig(n_fft=256))
