"""Waveform augmentation: SNRs, bands, RIR alignment and cache, babble speakers, determinism,
speed perturbation, evaluation corruptions and source folders."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from hive.data import waveform_augment as wa

SR = 16000
KINDS = (*wa.ADDITIVE_KINDS, "reverb", "telephone", "bandpass", "gain")


def snr_db(speech, mixed):
  return 10 * np.log10(wa.power(speech) / wa.power(mixed - speech))


def only(tmp_path, **probabilities):
  """A config with only the given kinds on, and a tiny simulated RIR bank cached in tmp_path."""
  c = wa.default_config()
  for kind in KINDS:
    c[kind].probability = probabilities.get(kind, 0.0)
  c.cache_dir = str(tmp_path / "rirs")
  c.reverb.simulated.count = 3
  c.reverb.simulated.max_order = 3
  return c


def band_energy(x, low, high):
  """Energy of rows of `x` between `low` and `high` Hz (Welch periodogram)."""
  freqs, psd = scipy.signal.welch(x, fs=SR, nperseg=1024, axis=-1)
  return psd[..., (freqs >= low) & (freqs <= high)].sum(axis=-1)


def speech_like(rng, rows, samples):
  """Rows of pink-ish noise with a syllable-rate envelope: level changes, like speech."""
  envelope = 0.2 + np.abs(np.sin(np.arange(samples) * 2 * np.pi * 4 / SR))
  return (wa.coloured_noise(rng, rows, samples, 1.0) * envelope * 0.1).astype(np.float32)


# --- SNR ---------------------------------------------------------------------------------

@pytest.mark.parametrize("target", [-5.0, 0.0, 7.5, 20.0])
def test_mix_at_snr_measures_back(target):
  rng = np.random.default_rng(0)
  speech, noise = speech_like(rng, 2, 8000), rng.standard_normal((2, 8000)).astype(np.float32)
  np.testing.assert_allclose(snr_db(speech, wa.mix_at_snr(speech, noise, target)), target,
                             atol=0.01)


def test_snr_gains_by_hand():
  # Speech power 4, noise power 1, 0 dB: g^2 * 1 = 4 -> g = 2; 20 dB: g^2 = 0.04 -> g = 0.2.
  np.testing.assert_allclose(wa.snr_gains(4.0, 1.0, [0.0, 20.0]), [2.0, 0.2])
  assert wa.snr_gains(0.0, 1.0, 0.0) == 0 and wa.snr_gains(1.0, 0.0, 0.0) == 0


@pytest.mark.parametrize("kind,folder", [("noise", False), ("noise", True), ("music", True),
                                         ("babble", False), ("babble", True)])
def test_batch_snr_is_the_configured_one(tmp_path, kind, folder):
  rng = np.random.default_rng(1)
  c = only(tmp_path, **{kind: 1.0})
  c[kind].snr_db = (7.0, 7.0)
  if folder:
    (tmp_path / "src").mkdir()
    for i in range(3):
      sf.write(tmp_path / "src" / f"{i}.flac", speech_like(rng, 1, 24000)[0], 22050)
    c[kind].dirs = (str(tmp_path / "src"),)
  waves = speech_like(rng, 8, 6400)
  out = wa.Augmenter(c)(waves, np.arange(8) // 2, wa.batch_rng(0, 0))
  np.testing.assert_allclose(snr_db(waves, out), 7.0, atol=0.5)
  c[kind].snr_db = (0.0, 15.0)
  measured = snr_db(waves, wa.Augmenter(c)(waves, np.arange(8) // 2, wa.batch_rng(0, 1)))
  assert np.all((measured > -0.5) & (measured < 15.5)) and np.ptp(measured) > 1


def test_additive_kinds_are_exclusive_and_follow_probabilities(tmp_path):
  c = only(tmp_path, noise=0.5, babble=0.5)
  c.noise.snr_db, c.babble.snr_db = (10.0, 10.0), (10.0, 10.0)
  waves = speech_like(np.random.default_rng(2), 200, 1600)
  out = wa.Augmenter(c)(waves, np.arange(200) // 2, wa.batch_rng(0, 0))
  # Exactly one source a row, at 10 dB: two would make it 7 dB.
  np.testing.assert_allclose(snr_db(waves, out), 10.0, atol=0.05)


# --- Channel -------------------------------------------------------------------------------

@pytest.mark.parametrize("codec", ["none", "mulaw", "alaw", "gsm"])
def test_telephone_band(codec):
  rng = np.random.default_rng(3)
  waves = (rng.standard_normal((2, 16000)) * 0.1).astype(np.float32)
  out = wa.telephone(waves, codec)
  assert out.shape == waves.shape and out.dtype == np.float32
  above = band_energy(out, 4000, 8000) / band_energy(waves, 4000, 8000)
  assert np.all(10 * np.log10(above) < -50)
  if codec != "gsm":  # GSM 06.10 is a vocoder: it does not keep a white noise's level.
    kept = band_energy(out, 300, 3400) / band_energy(waves, 300, 3400)
    np.testing.assert_allclose(10 * np.log10(kept), 0.0, atol=1.0)


def test_g711_table_equals_libsndfile_on_files():
  pcm = np.random.default_rng(4).integers(-32768, 32768, size=(3, 4000)).astype(np.int16)
  for codec, subtype in (("mulaw", "ULAW"), ("alaw", "ALAW")):
    direct = wa.libsndfile_roundtrip(pcm, subtype, channels=3)
    np.testing.assert_array_equal(wa.codec_roundtrip(pcm / 32768.0, codec), direct)
    assert len(np.unique(direct)) <= 256  # 8 bits a sample.


def test_codec_clips_instead_of_wrapping():
  loud = np.full((1, 800), 1.5, np.float32)
  assert np.all(wa.codec_roundtrip(loud, "mulaw") > 0.9)


def test_band_eq_response_by_hand():
  freqs = np.array([100.0, 4000.0, 1000.0])
  response = wa.band_eq_response(freqs, [100.0], [4000.0], [2])[0]
  # At a corner one factor is 1/sqrt(2); the other is 1/sqrt(1 + (100/4000)^4) ~ 1.
  np.testing.assert_allclose(response[:2], 1 / np.sqrt(2), rtol=1e-5)
  # Corners far from 1 kHz (order 8: their factors are 1 to 1e-14), a +6 dB bump at 1 kHz.
  bump = wa.band_eq_response(freqs, [1.0], [7999.0], [8], [[1000.0]], [[6.0]], [[1.0]])[0]
  np.testing.assert_allclose(20 * np.log10(bump[2]), 6.0, atol=0.01)


def test_filter_rows_scales_a_sine_by_the_response():
  t = np.arange(16000) / SR
  for freq in (1000.0, 6000.0):
    sine = np.sin(2 * np.pi * freq * t).astype(np.float32)[None]
    out = wa.filter_rows(sine, lambda f: wa.band_eq_response(f, [100.0], [4000.0], [4]))
    expected = wa.band_eq_response(np.array([freq]), [100.0], [4000.0], [4])[0, 0]
    middle = slice(4000, 12000)  # Away from the ends, where the filter sees zeros beyond.
    np.testing.assert_allclose(np.sqrt(2 * wa.power(out[0, middle])), expected, rtol=0.01)


def test_gain_by_hand(tmp_path):
  c = only(tmp_path, gain=1.0)
  c.gain.db = (6.0, 6.0)
  waves = speech_like(np.random.default_rng(5), 3, 800)
  out = wa.Augmenter(c)(waves, np.arange(3), wa.batch_rng(0, 0))
  np.testing.assert_allclose(out, waves * 10 ** (6 / 20), rtol=1e-6)


# --- Reverberation -------------------------------------------------------------------------

def test_impulse_through_a_rir_is_the_rir():
  rir = np.random.default_rng(6).standard_normal((2, 300)).astype(np.float32)
  impulse = np.zeros((2, 1000), np.float32)
  impulse[:, 0] = 1
  np.testing.assert_allclose(wa.reverberate(impulse, rir)[:, :300], rir, atol=1e-5)
  np.testing.assert_allclose(wa.reverberate(impulse, rir)[:, 300:], 0, atol=1e-5)
  np.testing.assert_allclose(wa.reverberate(impulse[:, :200], rir), rir[:, :200], atol=1e-5)


def test_reverberate_is_linear_convolution_cut_to_the_crop():
  rng = np.random.default_rng(7)
  waves, rirs = rng.standard_normal((3, 500)), rng.standard_normal((3, 120))
  expected = [np.convolve(w, r)[:500] for w, r in zip(waves, rirs)]
  np.testing.assert_allclose(wa.reverberate(waves, rirs), expected, atol=1e-3)


def test_normalise_rir_aligns_the_direct_path_and_has_unit_energy():
  rir = np.r_[np.zeros(40), 0.1, -0.9, 0.5, 0.2, np.zeros(10)]
  out = wa.normalise_rir(rir, max_samples=3)
  np.testing.assert_allclose(out, np.array([-0.9, 0.5, 0.2]) / np.sqrt(0.81 + 0.25 + 0.04),
                             rtol=1e-6)
  with pytest.raises(ValueError):
    wa.normalise_rir(np.zeros(5), 5)


def test_rir_bank_cache_is_read_back(tmp_path, monkeypatch):
  settings = dict(count=3, seed=5, max_order=3)
  bank = wa.RirBank.simulated(tmp_path, **settings)
  files = os.listdir(tmp_path)
  assert len(files) == 1 and "seed5" in files[0] and files[0].endswith(".npz")
  assert np.all(np.argmax(np.abs(bank.rirs), axis=1) == 0)
  np.testing.assert_allclose(np.sum(bank.rirs.astype(np.float64) ** 2, axis=1), 1, rtol=1e-5)

  def no_simulation(*args, **kwargs):
    raise AssertionError("the cached bank should have been read")

  monkeypatch.setattr(wa, "simulate_rir", no_simulation)
  np.testing.assert_array_equal(wa.RirBank.simulated(tmp_path, **settings).rirs, bank.rirs)
  monkeypatch.undo()
  other = wa.RirBank.simulated(tmp_path, **{**settings, "seed": 6})
  assert len(os.listdir(tmp_path)) == 2 and not np.array_equal(other.rirs, bank.rirs)


def test_rir_bank_reverberate_uses_its_rirs(tmp_path):
  bank = wa.RirBank.simulated(tmp_path, count=3, max_order=3)
  waves = np.random.default_rng(8).standard_normal((4, 3000)).astype(np.float32)
  index = np.array([2, 0, 1, 2])
  np.testing.assert_allclose(bank.reverberate(waves, index),
                             wa.reverberate(waves, bank.rirs[index]), atol=1e-5)


def test_rirs_from_a_folder(tmp_path):
  rir = np.r_[np.zeros(20), 1.0, 0.5 ** np.arange(1, 200)]
  sf.write(tmp_path / "room.wav", rir, SR, subtype="FLOAT")
  bank, skipped = wa.RirBank.from_folders([tmp_path])
  assert len(bank) == 1 and skipped == []
  np.testing.assert_allclose(bank.rirs[0, :199], wa.normalise_rir(rir, 8000)[:199], rtol=1e-5)


# --- Babble from the batch -----------------------------------------------------------------

def test_batch_babble_never_uses_the_rows_own_speaker(tmp_path):
  speakers_n, per_speaker, block = 10, 3, 160
  speakers = np.repeat(np.arange(speakers_n), per_speaker)
  # Each speaker's rows are constant: 1 on the speaker's own block of samples, 0 elsewhere.
  waves = np.zeros((len(speakers), speakers_n * block), np.float32)
  for row, s in enumerate(speakers):
    waves[row, s * block:(s + 1) * block] = 1.0
  c = only(tmp_path, babble=1.0)
  for step in range(5):
    added = wa.Augmenter(c)(waves, speakers, wa.batch_rng(0, step)) - waves
    per_block = np.abs(added.reshape(len(speakers), speakers_n, block)).sum(axis=2)
    assert np.all(per_block[np.arange(len(speakers)), speakers] == 0)
    talkers = (per_block > 0).sum(axis=1)
    assert np.all((talkers >= 3) & (talkers <= 7))


def test_batch_babble_with_one_speaker_leaves_rows_alone(tmp_path):
  waves = speech_like(np.random.default_rng(9), 4, 800)
  out = wa.Augmenter(only(tmp_path, babble=1.0))(waves, np.zeros(4), wa.batch_rng(0, 0))
  np.testing.assert_array_equal(out, waves)


# --- Determinism ---------------------------------------------------------------------------

def test_same_seed_and_step_same_batch(tmp_path):
  rng = np.random.default_rng(10)
  (tmp_path / "noise").mkdir()
  sf.write(tmp_path / "noise" / "n.wav", rng.standard_normal(30000) * 0.1, 8000)
  c = only(tmp_path, reverb=0.5, noise=0.4, babble=0.4, telephone=0.5, bandpass=0.5, gain=0.5)
  c.noise.dirs = (str(tmp_path / "noise"),)
  waves, speakers = speech_like(rng, 12, 4000), np.arange(12) // 3
  augmenter = wa.Augmenter(c)
  first = augmenter(waves, speakers, wa.batch_rng(3, 7))
  np.testing.assert_array_equal(first, augmenter(waves, speakers, wa.batch_rng(3, 7)))
  # A fresh augmenter (another process: unpickled, empty caches) agrees too.
  copy = pickle.loads(pickle.dumps(augmenter))
  np.testing.assert_array_equal(first, copy(waves, speakers, wa.batch_rng(3, 7)))
  assert not np.array_equal(first, augmenter(waves, speakers, wa.batch_rng(3, 8)))
  assert not np.array_equal(first, augmenter(waves, speakers, wa.batch_rng(3, 7, 1)))
  assert not np.array_equal(first, waves)


def test_batch_rng_rejects_negative_numbers():
  with pytest.raises(ValueError, match="step"):
    wa.batch_rng(0, -1)


def test_config_is_checked(tmp_path):
  c = only(tmp_path, noise=0.6, music=0.6)
  with pytest.raises(ValueError, match="sum to <= 1"):
    wa.Augmenter(c)
  c = only(tmp_path, telephone=1.0)
  c.telephone.codecs = ("mulaw", "opus")
  with pytest.raises(ValueError, match="codecs"):
    wa.Augmenter(c)


# --- Speed perturbation --------------------------------------------------------------------

@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_change_speed_moves_length_and_frequency(factor):
  t = np.arange(32000) / SR
  sine = np.sin(2 * np.pi * 500.0 * t).astype(np.float32)
  out = wa.change_speed(sine, factor)
  assert abs(len(out) - len(sine) / factor) <= 1
  spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out)), 16 * len(out)))
  peak_hz = np.argmax(spectrum) * SR / (16 * len(out))
  assert peak_hz == pytest.approx(500.0 * factor, abs=1.0)
  rows = wa.change_speed(np.stack([sine, -sine]), factor)
  np.testing.assert_array_equal(rows[0], out)


def test_change_speed_rejects_bad_factors():
  with pytest.raises(ValueError, match="factor"):
    wa.change_speed(np.zeros(100), 0.0)


# --- Evaluation corruptions ----------------------------------------------------------------

def test_degrade_forms(tmp_path):
  rng = np.random.default_rng(11)
  wave = (rng.standard_normal(16000) * 0.1).astype(np.float32)
  np.testing.assert_array_equal(wa.degrade(wave, "none"), wave)
  phone = wa.degrade(wave, "telephone")
  assert 10 * np.log10(band_energy(phone, 4000, 8000) / band_energy(wave, 4000, 8000)) < -50
  noisy = wa.degrade(wave, "noise:5", seed=1)
  assert snr_db(wave, noisy) == pytest.approx(5.0, abs=0.01)
  np.testing.assert_array_equal(noisy, wa.degrade(wave, "noise:5", seed=1))
  assert not np.array_equal(noisy, wa.degrade(wave, "noise:5", seed=2))
  augmenter = wa.Augmenter(only(tmp_path))
  reverb = wa.degrade(wave, "reverb", seed=1, augmenter=augmenter)
  candidates = augmenter.rir_bank.reverberate(np.repeat(wave[None], 3, 0), [0, 1, 2])
  assert any(np.array_equal(reverb, r) for r in candidates)
  both = wa.degrade(wave, "telephone+noise:10", seed=1)
  np.testing.assert_allclose(both, wa.telephone(wa.degrade(wave, "noise:10", seed=1)[None])[0])
  assert wa.degrade(wave, "noise:10+telephone", seed=1).tolist() == both.tolist()


def test_degrade_noise_from_folders(tmp_path):
  t = np.arange(40000) / SR
  (tmp_path / "noise").mkdir()
  sf.write(tmp_path / "noise" / "hum.wav", 0.3 * np.sin(2 * np.pi * 1000 * t), SR)
  c = only(tmp_path)
  c.noise.dirs = (str(tmp_path / "noise"),)
  wave = speech_like(np.random.default_rng(12), 1, 16000)[0]
  out = wa.degrade(wave, "noise:0", seed=3, augmenter=wa.Augmenter(c))
  added = np.abs(np.fft.rfft(out - wave))
  assert np.argmax(added) * SR / len(wave) == pytest.approx(1000.0, abs=1.0)
  assert snr_db(wave, out) == pytest.approx(0.0, abs=0.01)


@pytest.mark.parametrize("spec", ["", "noise", "noise:", "noise:loud", "noise:inf", "echo",
                                  "telephone+telephone", "noise:5+noise:3", "reverb:2",
                                  "none+telephone"])
def test_degrade_rejects_bad_specs(spec):
  with pytest.raises(ValueError, match="accepted: 'none', 'telephone'") as error:
    wa.degrade(np.ones(100, np.float32), spec)
  assert repr(spec) in str(error.value)


# --- Source folders ------------------------------------------------------------------------

def write_musan(root, rng):
  """A MUSAN-like tree: noise/ (WAV 16 kHz, FLAC 44.1 kHz stereo, a broken file, a text file),
  music/ (FLAC 22.05 kHz), speech/ (WAV 8 kHz), in sub-folders as MUSAN has them."""
  for sub in ("noise/free-sound", "noise/sound-bible", "music/jamendo", "speech/librivox"):
    (root / sub).mkdir(parents=True)
  sf.write(root / "noise/free-sound/a.wav", rng.standard_normal(20000) * 0.1, SR)
  sf.write(root / "noise/sound-bible/b.flac", rng.standard_normal((30000, 2)) * 0.1, 44100)
  (root / "noise/sound-bible/broken.wav").write_bytes(b"RIFF\x00\x00not audio at all")
  (root / "noise/free-sound/ANNOTATIONS").write_text("not audio")
  sf.write(root / "music/jamendo/m.flac", rng.standard_normal(30000) * 0.1, 22050)
  sf.write(root / "speech/librivox/s.wav", rng.standard_normal(20000) * 0.1, 8000)


def test_musan_layout(tmp_path):
  write_musan(tmp_path / "musan", np.random.default_rng(13))
  c = only(tmp_path, noise=0.3, music=0.3, babble=0.3)
  c.musan_root = str(tmp_path / "musan")
  augmenter = wa.Augmenter(c)
  assert [len(augmenter.source(k)) for k in wa.ADDITIVE_KINDS] == [2, 1, 1]
  skipped = augmenter.skipped["noise"]
  assert len(skipped) == 1 and skipped[0][0].endswith("broken.wav")
  assert augmenter.source("noise").skipped_count == 1
  out = augmenter(speech_like(np.random.default_rng(0), 6, 3200), np.arange(6),
                  wa.batch_rng(0, 0))
  assert out.shape == (6, 3200) and np.all(np.isfinite(out))


def test_bad_folders_are_named(tmp_path):
  (tmp_path / "empty" / "deeper").mkdir(parents=True)
  (tmp_path / "empty" / "deeper" / "readme.txt").write_text("no audio here")
  c = only(tmp_path, noise=1.0)
  c.noise.dirs = (str(tmp_path / "empty"),)
  with pytest.raises(ValueError, match=f"{tmp_path / 'empty'}: no audio files"):
    wa.Augmenter(c)
  c.noise.dirs = (str(tmp_path / "missing"),)
  with pytest.raises(ValueError, match="missing: not a folder"):
    wa.Augmenter(c)
  c.noise.dirs = ()
  c.musan_root = str(tmp_path / "empty")
  with pytest.raises(ValueError, match="not a MUSAN root"):
    wa.Augmenter(c)
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "x.flac").write_bytes(b"fLaC garbage")
  with pytest.raises(ValueError, match="no readable audio under .*bad"):
    wa.AudioFolder([tmp_path / "bad"], "noise")


def test_undecodable_file_is_skipped_counted_and_redrawn(tmp_path):
  data = np.full(8000, np.nan, np.float32)
  sf.write(tmp_path / "a_nan.wav", data, SR, subtype="FLOAT")  # A readable header, NaN audio.
  sf.write(tmp_path / "b_good.wav", np.full(8000, 0.25, np.float32), SR, subtype="FLOAT")
  folder = wa.AudioFolder([tmp_path], "noise")
  assert len(folder) == 2 and folder.skipped_count == 0
  segments = folder.segments(np.random.default_rng(0), 20, 1000)
  np.testing.assert_array_equal(segments, 0.25)
  assert folder.skipped_count == 1 and "NaN" in folder.skipped[0][1]


def test_segments_are_tiled_or_cut(tmp_path):
  ramp = np.arange(4000, dtype=np.float32) / 8000  # Each sample says where it is.
  sf.write(tmp_path / "ramp.wav", ramp, SR, subtype="FLOAT")
  rng = np.random.default_rng(14)
  short = wa.AudioFolder([tmp_path], "noise").segments(rng, 3, 10000)  # Longer than the file.
  for row in short:
    start = int(round(row[0] * 8000))
    np.testing.assert_array_equal(row, ramp[(start + np.arange(10000)) % 4000])
  whole = wa.AudioFolder([tmp_path], "noise").segments(np.random.default_rng(15), 5, 1000)
  by_seek = wa.AudioFolder([tmp_path], "noise", whole_file_seconds=0.0).segments(
      np.random.default_rng(15), 5, 1000)
  np.testing.assert_array_equal(whole, by_seek)  # Cached whole file or a seek: same samples.
  for row in whole:
    start = int(round(row[0] * 8000))
    np.testing.assert_array_equal(row, ramp[start:start + 1000])
  assert len({row[0] for row in whole}) > 1  # Random offsets.
