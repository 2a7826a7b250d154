"""The Encoder API: windowing by hand, batching, norms, errors; and hive.embed on top of it."""

import json

import jax
import numpy as np
import pytest

from hive import config as config_lib, embed, encoder as encoder_lib
from hive.data import audio
from hive.encoder import Encoder, cut_windows, window_starts
from hive.models import SpeakerModel, init_params


@pytest.fixture(scope="module")
def enc(tiny):
  return Encoder.from_workdir(tiny["workdir"])


# --- windowing, by hand ------------------------------------------------------------


@pytest.mark.parametrize("frames, expected", [
    (100, [0, 20, 40, 60]),  # Exact cover: the last window ends at frame 100.
    (90, [0, 20, 40, 50]),  # The last window is pulled back to end at the end.
    (41, [0, 1]),
    (40, [0]),
    (15, [0]),  # Shorter than a window: one (wrapped) window.
])
def test_window_starts(frames, expected):
  assert window_starts(frames, 40, 20).tolist() == expected


def test_cut_windows_cover_everything_and_end_at_the_end():
  mel = np.arange(90 * 2, dtype=np.float32).reshape(90, 2)
  windows = cut_windows(mel, 40, 20)
  assert windows.shape == (4, 40, 2)
  np.testing.assert_array_equal(windows[-1], mel[-40:])
  covered = np.unique(np.concatenate([w[:, 0] for w in windows]))
  np.testing.assert_array_equal(covered, mel[:, 0])


def test_short_input_wraps_around():
  mel = np.arange(15 * 3, dtype=np.float32).reshape(15, 3)
  (window,) = cut_windows(mel, 40, 20)
  np.testing.assert_array_equal(window, mel[np.arange(40) % 15])


def test_empty_input_is_refused():
  with pytest.raises(ValueError, match="no frames"):
    cut_windows(np.zeros((0, 40), np.float32), 40, 20)


# --- embeddings ----------------------------------------------------------------------


def random_mels(lengths, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=(n, 40)).astype(np.float32) for n in lengths]


def test_one_window_equals_the_model_itself(enc):
  (mel,) = random_mels([enc.window])
  direct = enc.model.apply({"params": enc.params}, mel[None], method=SpeakerModel.embed)
  np.testing.assert_allclose(enc.embed_features([mel])[0], np.asarray(direct)[0], atol=1e-5)


def test_batching_matches_one_at_a_time_and_is_unit_norm(enc):
  # 6000 frames are ~300 windows: more than the largest bucket, so chunking is exercised.
  mels = random_mels([10, 40, 57, 700, 6000])
  together = enc.embed_features(mels)
  alone = np.concatenate([enc.embed_features([m]) for m in mels])
  assert together.shape == (5, 16) and together.dtype == np.float32
  np.testing.assert_allclose(together, alone, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
  assert enc.embed_features([]).shape == (0, 16)


def test_embed_many_of_files_matches_features(enc, tiny):
  files = sorted(tiny["corpus"].rglob("*.flac"))[:3]
  many = enc.embed_many(files)
  np.testing.assert_allclose(many, enc.embed_features([enc.features_of(f) for f in files]),
                             atol=1e-6)
  np.testing.assert_allclose(enc.embed(files[0]), many[0], atol=1e-5)
  again, p = enc.embed_many(files, with_gender=True)
  np.testing.assert_allclose(again, many, atol=1e-6)
  assert p.shape == (3,) and np.all((p >= 0) & (p <= 1))


def test_similarity_by_hand():
  assert Encoder.similarity([1.0, 0.0], [1.0, 1.0]) == pytest.approx(1 / np.sqrt(2))
  assert Encoder.similarity([2.0, 0.0], [-3.0, 0.0]) == pytest.approx(-1.0)  # Scale-free.
  rows = Encoder.similarity(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.0, 1.0], [0.0, 5.0]]))
  np.testing.assert_allclose(rows, [0.0, 1.0])


# --- whole-utterance mode (encoders that take a frame mask) -----------------------------


@pytest.fixture(scope="module")
def tdnn_enc():
  c = config_lib.base_config()
  c.model.encoder, c.model.embed_dim, c.model.tdnn.channels = "tdnn", 16, 16
  c.data.crop_frames = 40
  params = init_params(c, 5, jax.random.PRNGKey(0))
  return Encoder(c, params)


def direct_embed(enc, mel):
  return np.asarray(enc.model.apply({"params": enc.params}, mel[None],
                                    method=SpeakerModel.embed))[0]


def test_modes_follow_the_encoder(enc, tdnn_enc):
  assert enc.mode == "windows" and tdnn_enc.mode == "utterance"  # LSTM vs TDNN.


@pytest.mark.parametrize("frames, padded", [(1, 128), (128, 128), (129, 160), (160, 160),
                                            (161, 184), (256, 256), (257, 312)])
def test_padded_length_by_hand(frames, padded):
  assert encoder_lib.padded_length(frames) == padded


def test_padded_length_wastes_at_most_a_fifth():
  for n in range(128, 5000, 7):
    assert n <= encoder_lib.padded_length(n) <= 1.19 * n + 8


def test_padding_is_invisible_to_the_masked_model(tdnn_enc):
  # Garbage (not zeros) after each utterance's end: only the mask can hide it.
  rng = np.random.default_rng(1)
  lengths = [45, 130, 200]
  batch = rng.normal(size=(3, 200, 40)).astype(np.float32) * 5
  padded = np.asarray(tdnn_enc.model.apply({"params": tdnn_enc.params}, batch,
                                           np.array(lengths), method=SpeakerModel.embed))
  for row, n in enumerate(lengths):
    np.testing.assert_allclose(padded[row], direct_embed(tdnn_enc, batch[row, :n]), atol=1e-5)


def test_whole_utterances_equal_the_model_on_each_alone(tdnn_enc):
  mels = random_mels([57, 700, 130, 300, 131])
  together = tdnn_enc.embed_features(mels)
  for mel, got in zip(mels, together):
    np.testing.assert_allclose(got, direct_embed(tdnn_enc, mel), atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_short_utterance_wraps_to_the_crop_length(tdnn_enc):
  (mel,) = random_mels([15])
  np.testing.assert_allclose(tdnn_enc.embed_features([mel])[0],
                             direct_embed(tdnn_enc, mel[np.arange(40) % 15]), atol=1e-5)


def test_long_utterance_is_the_mean_of_its_pieces(tdnn_enc, monkeypatch):
  monkeypatch.setattr(encoder_lib, "MAX_FRAMES", 100)
  (mel,) = random_mels([250])  # Pieces [0, 100) and [100, 250): the tail joins the last.
  pieces = direct_embed(tdnn_enc, mel[:100]) + direct_embed(tdnn_enc, mel[100:])
  np.testing.assert_allclose(tdnn_enc.embed_features([mel])[0],
                             pieces / np.linalg.norm(pieces), atol=1e-5)


def test_many_utterances_fill_several_batches(tdnn_enc, monkeypatch):
  monkeypatch.setattr(encoder_lib, "FRAMES_PER_BATCH", 8 * 160)  # At most 8 rows of 160.
  mels = random_mels([150] * 17 + [60, 400])
  together = tdnn_enc.embed_features(mels)
  alone = np.concatenate([tdnn_enc.embed_features([m]) for m in mels])
  np.testing.assert_allclose(together, alone, atol=1e-5)


def test_models_without_masks_refuse_padded_batches(enc):
  with pytest.raises(ValueError, match="cannot embed padded batches"):
    enc.model.apply({"params": enc.params}, np.zeros((1, 40, 40), np.float32), np.array([20]),
                    method=SpeakerModel.embed)


# --- errors --------------------------------------------------------------------------


def test_from_workdir_without_config_or_checkpoint(tmp_path, tiny):
  with pytest.raises(FileNotFoundError, match=r"no checkpoint of step 99 .*\(have \[4\]\)"):
    Encoder.from_workdir(tiny["workdir"], step=99)
  with pytest.raises(FileNotFoundError, match="config.json"):
    Encoder.from_workdir(tmp_path)
  for name in ("config.json", "speakers.json"):  # A workdir that never saved a checkpoint.
    (tmp_path / name).write_text((tiny["workdir"] / name).read_text())
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    Encoder.from_workdir(tmp_path)
  assert not (tmp_path / "checkpoints").exists()  # Loading leaves nothing behind.


def test_pretrained_missing_is_clear(monkeypatch, tmp_path):
  monkeypatch.setattr(encoder_lib, "PRETRAINED_DIR", tmp_path / "hive-mtl")
  with pytest.raises(FileNotFoundError, match="shipped model is missing"):
    Encoder.pretrained()


def test_bad_files_raise_bad_audio_naming_the_file(enc, tmp_path):
  empty, text = tmp_path / "empty.flac", tmp_path / "notes.wav"
  empty.write_bytes(b"")
  text.write_text("not audio\n")
  for path, reason in ((tmp_path / "missing.flac", "does not exist"), (empty, "empty file"),
                       (text, "cannot decode")):
    with pytest.raises(audio.BadAudio, match=reason) as info:
      enc.embed(path)
    assert str(path) in str(info.value)


# --- hive.embed ------------------------------------------------------------------------


def test_collect_paths_from_dirs_files_and_list(tiny, tmp_path):
  speaker_dir = sorted(p for p in (tiny["corpus"]).rglob("*") if p.is_dir())[-1]
  under = embed.audio_files_under(speaker_dir)
  assert under and under == sorted(under)
  listing = tmp_path / "files.txt"
  listing.write_text(f"# comment\n\n{under[0]}\n{tmp_path / 'missing.wav'}\n")
  paths = embed.collect_paths([str(speaker_dir), under[0]], listing)
  assert paths == under + [str(tmp_path / "missing.wav")]  # Repeats dropped, order kept.
  with pytest.raises(embed.EmbedError, match="no such list file"):
    embed.collect_paths([], tmp_path / "nope.txt")


def test_embed_writes_npz_and_skips_bad_files(enc, tiny, tmp_path, capsys):
  good = [str(p) for p in sorted(tiny["corpus"].rglob("*.flac"))[:4]]
  empty = tmp_path / "empty.flac"
  empty.write_bytes(b"")
  out = tmp_path / "out" / "embeddings.npz"
  embed.embed_command(None, out, good[:2] + [str(empty)] + good[2:], chunk_files=3, encoder=enc)
  captured = capsys.readouterr()
  assert "embedded 4, skipped 1" in captured.out
  assert f"{empty}: empty file" in captured.err
  with np.load(out, allow_pickle=False) as data:  # Strings are unicode arrays, not objects.
    assert data["embeddings"].shape == (4, 16) and data["embeddings"].dtype == np.float32
    assert data["paths"].tolist() == good
    assert data["gender_probability"].shape == (4,)
    assert data["skipped_paths"].tolist() == [str(empty)]
    assert json.loads(str(data["model"]))["step"] == enc.step
    np.testing.assert_allclose(data["embeddings"], enc.embed_many(good), atol=1e-5)
  assert list(out.parent.iterdir()) == [out]  # No temporary file left behind.


def test_embed_with_nothing_usable_writes_nothing(enc, tmp_path):
  out = tmp_path / "e.npz"
  with pytest.raises(embed.EmbedError, match="none of the 1 files"):
    embed.embed_command(None, out, [str(tmp_path / "missing.flac")], encoder=enc)
  assert not out.exists()
  with pytest.raises(embed.EmbedError, match="no audio files"):
    embed.embed_command(None, out, [], encoder=enc)


def test_warm_up_returns_the_encoder_in_both_modes(enc, tdnn_enc):
  assert tdnn_enc.warm_up(max_seconds=2) is tdnn_enc and enc.warm_up() is enc


def test_commands_keep_compiled_programs_under_the_hive_cache(monkeypatch, tmp_path):
  from hive.cli import use_compilation_cache
  saved = (jax.config.jax_compilation_cache_dir,
           jax.config.jax_persistent_cache_min_compile_time_secs)
  try:
    jax.config.update("jax_compilation_cache_dir", None)
    monkeypatch.setenv("HIVE_CACHE", str(tmp_path))
    use_compilation_cache()
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "jax")
    assert jax.config.jax_persistent_cache_min_compile_time_secs < 1.0  # Ours compile fast.
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "chosen"))
    use_compilation_cache()  # A directory the user chose is kept.
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "chosen")
  finally:
    jax.config.update("jax_compilation_cache_dir", saved[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", saved[1])
