"""Audio decoding to 16 kHz mono and log-mel features."""

import dataclasses

import librosa
import numpy as np
import pytest
import soundfile as sf

from hive import features
from hive.data import audio

# librosa warns when a wave is shorter than the FFT; short waves are tested on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:n_fft=.*is too large:UserWarning")


def sine(freq, sample_rate, seconds=1.0, amplitude=0.5):
  t = np.arange(int(round(sample_rate * seconds))) / sample_rate
  return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(wave, sample_rate=16000):
  spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
  return np.argmax(spectrum) * sample_rate / len(wave)


# --- load_wave ----------------------------------------------------------------


@pytest.mark.parametrize("rate, freq", [(8000, 440.0), (44100, 1000.0), (22050, 3000.0)])
def test_load_wave_resamples_to_16k_keeping_frequency(tmp_path, rate, freq):
  path = tmp_path / f"tone_{rate}.wav"
  sf.write(path, sine(freq, rate), rate, subtype="FLOAT")
  wave = audio.load_wave(path)
  assert wave.dtype == np.float32 and wave.ndim == 1
  assert len(wave) == 16000  # One second at the target rate.
  assert abs(peak_hz(wave) - freq) <= 1.0
  # Amplitude survives resampling (away from the edges).
  assert np.max(np.abs(wave[1000:-1000])) == pytest.approx(0.5, abs=0.02)


def test_load_wave_16k_is_unchanged(tmp_path):
  x = sine(300, 16000, seconds=0.5)
  sf.write(tmp_path / "a.wav", x, 16000, subtype="FLOAT")
  np.testing.assert_array_equal(audio.load_wave(tmp_path / "a.wav"), x)


def test_load_wave_stereo_is_downmixed(tmp_path):
  x = sine(300, 16000, seconds=0.5)
  y = sine(700, 16000, seconds=0.5, amplitude=0.2)
  sf.write(tmp_path / "mono.wav", x, 16000, subtype="FLOAT")
  sf.write(tmp_path / "same.wav", np.stack([x, x], axis=1), 16000, subtype="FLOAT")
  sf.write(tmp_path / "mixed.wav", np.stack([x, y], axis=1), 16000, subtype="FLOAT")
  mono = audio.load_wave(tmp_path / "mono.wav")
  np.testing.assert_array_equal(audio.load_wave(tmp_path / "same.wav"), mono)
  np.testing.assert_allclose(audio.load_wave(tmp_path / "mixed.wav"), (x + y) / 2, atol=1e-7)


def test_load_wave_stereo_44k_flac(tmp_path):
  x = sine(1000, 44100)
  sf.write(tmp_path / "s.flac", np.stack([x, x], axis=1), 44100)
  sf.write(tmp_path / "m.flac", x, 44100)
  wave = audio.load_wave(tmp_path / "s.flac")
  assert wave.dtype == np.float32 and wave.shape == (16000,)
  assert abs(peak_hz(wave) - 1000) <= 1.0
  np.testing.assert_array_equal(wave, audio.load_wave(tmp_path / "m.flac"))


def test_load_wave_flac_equals_wav_of_same_samples(tmp_path):
  # Integer samples, so both writers store exactly the same 16-bit values.
  pcm = np.round(sine(523.25, 16000, seconds=0.3) * 2**15).astype(np.int16)
  sf.write(tmp_path / "a.flac", pcm, 16000, subtype="PCM_16")
  sf.write(tmp_path / "a.wav", pcm, 16000, subtype="PCM_16")
  flac = audio.load_wave(tmp_path / "a.flac")
  np.testing.assert_array_equal(flac, audio.load_wave(tmp_path / "a.wav"))
  np.testing.assert_array_equal(flac, pcm.astype(np.float32) / 2**15)


def test_load_wave_other_target_rate(tmp_path):
  sf.write(tmp_path / "a.wav", sine(440, 16000), 16000)
  assert len(audio.load_wave(tmp_path / "a.wav", sample_rate=8000)) == 8000


# --- log_mel ------------------------------------------------------------------


def test_wave(n, seed=0):
  rng = np.random.default_rng(seed)
  t = np.arange(n) / 16000
  return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


test_wave.__test__ = False  # A helper, not a test.


def librosa_log_mel(y, n_mels=40):
  mel = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=512, win_length=400,
                                       hop_length=160, n_mels=n_mels, fmin=20)
  return np.log(mel + 1e-6).T


@pytest.mark.parametrize("n", [400, 4321, 16000, 16160])
def test_log_mel_shape_and_values_match_librosa(n):
  y = test_wave(n)
  mel = features.log_mel(y)
  assert mel.dtype == np.float32
  assert mel.shape == (1 + n // 160, 40)
  np.testing.assert_allclose(mel, librosa_log_mel(y), atol=1e-4, rtol=0)


def test_log_mel_n_mels_is_configurable():
  y = test_wave(8000, seed=1)
  config = features.FeatureConfig(n_mels=80)
  mel = features.log_mel(y, config)
  assert mel.shape == (51, 80)
  np.testing.assert_allclose(mel, librosa_log_mel(y, n_mels=80), atol=1e-4, rtol=0)


def test_log_mel_of_silence_is_the_floor():
  mel = features.log_mel(np.zeros(1600, np.float32))
  np.testing.assert_allclose(mel, np.log(features.LOG_FLOOR), rtol=1e-6)


def test_window_longer_than_fft_is_refused():
  config = features.FeatureConfig(window_ms=40.0, n_fft=512)  # 640 samples > 512.
  with pytest.raises(ValueError, match="n_fft"):
    features.log_mel(test_wave(1600), config)


def test_silence_trimming_shortens_padded_wave():
  tone = test_wave(8000)
  padded = np.concatenate([np.zeros(16000, np.float32), tone, np.zeros(16000, np.float32)])
  config = features.FeatureConfig(trim_silence=True)
  untrimmed = features.log_mel(padded)
  trimmed = features.log_mel(padded, config)
  assert untrimmed.shape[0] == 1 + len(padded) // 160
  # The tone (50 frames) is kept, the two seconds of silence are gone.
  assert 45 <= trimmed.shape[0] <= 60
  trimmed_wave = features.trim_silence(padded, config)
  assert len(tone) <= len(trimmed_wave) <= len(tone) + 2 * 400


def test_silence_trimming_keeps_a_wave_without_silence():
  y = test_wave(16000)
  config = features.FeatureConfig(trim_silence=True)
  assert len(features.trim_silence(y, config)) == len(y)
  assert features.log_mel(y, config).shape == features.log_mel(y).shape


@pytest.mark.parametrize("n", [1, 159, 160, 161, 399, 400, 16000, 16001, 24159])
def test_num_frames_agrees_with_log_mel(n):
  assert features.num_frames(n) == features.log_mel(test_wave(n)).shape[0]


def test_num_frames_other_hop():
  config = dataclasses.replace(features.FeatureConfig(), hop_ms=20.0)
  for n in (320, 1000, 16000):
    assert features.num_frames(n, config) == features.log_mel(test_wave(n), config).shape[0]


def test_feature_config_from_dict_ignores_unknown_keys():
  config = features.FeatureConfig.from_dict({"n_mels": 64, "not_a_field": 1})
  assert config == features.FeatureConfig(n_mels=64)
  assert (config.win_length, config.hop_length) == (400, 160)


# --- speed perturbation on log-mels ----------------------------------------------------


def voiced_wave(seconds=2.0, seed=0):
  """Speech-like: a gliding 120-220 Hz harmonic series, syllable-rate loudness and noise."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * 16000)) / 16000
  f0 = 170 + 50 * np.sin(2 * np.pi * 0.7 * t)
  phase = 2 * np.pi * np.cumsum(f0) / 16000
  wave = sum(np.sin(k * phase) / k for k in range(1, 30))
  wave = wave * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) + 0.01 * rng.standard_normal(len(t))
  return (0.1 * wave).astype(np.float32)


def test_speed_perturb_by_one_is_the_identity():
  mel = features.log_mel(voiced_wave())
  np.testing.assert_allclose(features.speed_perturb(mel, 1.0), mel, atol=1e-6)


def test_speed_perturb_moves_a_tone_and_rescales_time():
  t = np.arange(32000) / 16000
  mel = features.log_mel((0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
  centres = features.mel_centre_frequencies(features.FeatureConfig())
  faster = features.speed_perturb(mel, 1.2)
  assert len(faster) == round(len(mel) / 1.2)
  # The loudest band follows the tone from ~1000 Hz to ~1200 Hz.
  peak = centres[np.argmax(faster[len(faster) // 2])]
  assert abs(peak - 1200) < abs(peak - 1000) and abs(peak - 1200) < 60


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb_approximates_resampling_the_audio(factor):
  wave = voiced_wave()
  mel = features.log_mel(wave)
  # Playing `wave` as if it were recorded at factor * 16 kHz: faster and higher.
  real = features.log_mel(librosa.resample(wave, orig_sr=int(16000 * factor), target_sr=16000))
  approx = features.speed_perturb(mel, factor)
  assert abs(len(approx) - len(real)) <= 1
  n = min(len(real), len(approx), len(mel))

  def centred(x):
    x = x[:n, :38]  # The top bands differ by construction (content past Nyquist).
    return (x - x.mean(0)).ravel()

  assert np.corrcoef(centred(real), centred(approx))[0, 1] > 0.9
  assert (np.abs(centred(real) - centred(approx)).mean()
          < 0.5 * np.abs(centred(real) - centred(mel)).mean())


def test_speed_perturb_rejects_bad_input():
  with pytest.raises(ValueError, match="positive"):
    features.speed_perturb(np.zeros((10, 40), np.float32), 0.0)
  with pytest.raises(ValueError, match=r"\[frames, 40\]"):
    features.speed_perturb(np.zeros((10, 30), np.float32), 1.1)
