"""Waveform-in serving (hive/serving.py): the function and its three exports against
`hive.Encoder`, on small random models and on the shipped model with real speech."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from hive import config as config_lib, encoder as encoder_lib, serving
from hive.data import audio
from hive.encoder import Encoder
from hive.models import SpeakerModel, create_model

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
PARITY = 0.999  # The bar: cosine to Encoder.embed on real files.


def small_model(encoder: str, crop: int = 40):
  """A small random model of `encoder` (config, params) that builds in a second."""
  c = config_lib.base_config()
  c.model.encoder, c.model.embed_dim, c.data.crop_frames = encoder, 16, crop
  c.model.tdnn.channels = 16
  c.model.lstm.hidden, c.model.lstm.layers = 16, 1
  c.model.rescnn.channels = (4, 8, 8, 16)
  shapes = jax.eval_shape(create_model(c.model, 5).init, jax.random.PRNGKey(0),
                          jnp.zeros((1, crop, c.data.n_mels)))["params"]
  # Random values drawn with numpy: compiling the model's own initialisers takes seconds.
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 100
    value = rng.normal(0, 1 / np.sqrt(fan_in), leaf.shape)
    return (value + (jax.tree_util.keystr(path).endswith("['scale']"))).astype(leaf.dtype)

  return c, jax.tree_util.tree_map_with_path(draw, shapes)


def cosines(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def noise(seconds, seed):
  return np.random.default_rng(seed).normal(0, 0.1, int(seconds * 16000)).astype(np.float32)


# --- the function, on small random models -------------------------------------------


@pytest.mark.parametrize("name", ["tdnn", "lstm", "rescnn"])
def test_matches_encoder_in_each_mode(name):
  config, params = small_model(name)
  mean = np.random.default_rng(0).normal(0, 0.1, 16)
  enc = Encoder(config, params, embedding_mean=mean)
  # Shorter than the 40-frame crop (repeated), one window, several windows (the last
  # aligned to the end). Up to 128 frames: one of the Encoder's bucketed shapes.
  waves = [noise(0.2, 1), noise(0.55, 2), noise(0.93, 3), noise(1.21, 4)]
  want, want_gender = enc.embed_features([enc.features_of(w) for w in waves], with_gender=True)
  got = jax.jit(serving.embedding_function(config, params, mean))(*serving.pad_batch(waves))
  assert got[serving.EMBEDDING].shape == (4, 16)
  assert np.all(cosines(got[serving.EMBEDDING], want) > 0.99999), enc.mode
  np.testing.assert_allclose(got[serving.GENDER], want_gender, atol=1e-5)


PIECE = 100  # A piece length (frames) that makes "long" cheap to test; really 3000.


def long_and_short():
  """6.5 s (651 frames: pieces of 100 frames, the last 151 long, in the PIECE-frame
  Encoder; quiet noise, then loud noise and a tone, so that one pass would differ) and
  0.3 s (shorter than the crop)."""
  t = np.arange(3 * 16000) / 16000
  second = (noise(3, 6) * 5 + 0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
  return [np.concatenate([noise(3.5, 4), second]), noise(0.3, 5)]


@pytest.mark.parametrize("name", ["tdnn", "lstm"])
def test_long_and_short_audio_in_every_format(name, tmp_path, monkeypatch):
  assert serving.MAX_FRAMES == encoder_lib.MAX_FRAMES  # Before both are made small.
  assert serving.WINDOW_OVERLAP == encoder_lib.WINDOW_OVERLAP
  monkeypatch.setattr(encoder_lib, "MAX_FRAMES", PIECE)
  monkeypatch.setattr(serving, "MAX_FRAMES", PIECE)
  config, params = small_model(name)
  mean = np.random.default_rng(7).normal(0, 0.1, 16)
  enc = Encoder(config, params, embedding_mean=mean)
  waves = long_and_short()
  want = enc.embed_features([enc.features_of(w) for w in waves])
  # The StableHLO is the jitted function's own program, and the SavedModel holds it.
  for fmt in ("stablehlo", "onnx"):
    run = serving.load(getattr(serving, f"export_{fmt}")(config, params, mean, tmp_path / fmt))
    # Both in one batch (the short row's other piece slots unused), and the short one alone.
    got = np.asarray(run(*serving.pad_batch(waves))[serving.EMBEDDING])
    assert np.all(cosines(got, want) > 0.99999), fmt
    alone = run(*serving.pad_batch(waves[1:]))[serving.EMBEDDING]
    assert cosines(alone[0], want[1]) > 0.99999, fmt
  if name == "tdnn":  # The whole wave in one pass is another embedding: pieces were taken.
    apply = jax.jit(create_model(config.model, 5).apply, static_argnames="method")
    whole = apply({"params": params}, enc.features_of(waves[0])[None], method=SpeakerModel.embed)
    assert cosines(want[0], np.asarray(whole[0]) - mean) < 0.99  # Centred as the Encoder.


def test_piece_layout_by_hand():
  # Pieces of 3 frames (crop 3): 7 frames -> [0, 3) and [3, 7) (the tail joins the last);
  # 2 frames -> repeated to 3; 3 frames -> one piece. Rows of min(7, 2 * 3 - 1) = 5.
  source, lengths, used = serving.piece_layout(jnp.array([7, 2, 3]), 7, crop=3, max_frames=3)
  np.testing.assert_array_equal(source, [[[0, 1, 2, 3, 4], [3, 4, 5, 6, 0]],
                                         [[0, 1, 0, 1, 0], [1, 0, 1, 0, 1]],
                                         [[0, 1, 2, 0, 1], [0, 1, 2, 0, 1]]])
  np.testing.assert_array_equal(lengths, [[3, 4], [3, 1], [3, 1]])
  np.testing.assert_array_equal(used, [[1, 1], [1, 0], [1, 0]])


def test_window_layout_by_hand():
  # Windows of 4 every 2 frames: 9 frames -> starts 0, 2, 4 and 5 (the last at the end);
  # 3 frames -> one window of the row repeated.
  source, used = serving.window_layout(jnp.array([9, 3]), 9, crop=4, hop=2)
  assert list(encoder_lib.window_starts(9, 4, 2)) == [0, 2, 4, 5]
  np.testing.assert_array_equal(source[0], [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7],
                                            [5, 6, 7, 8]])
  np.testing.assert_array_equal(source[1, 0], [0, 1, 2, 0])
  np.testing.assert_array_equal(used, [[1, 1, 1, 1], [1, 0, 0, 0]])


def test_bucketed_inputs_by_hand():
  # 17000 samples -> the next bucket, ceil(16000 * 2**(1/4)) = 19028; 3 rows -> 4, the new
  # row of 0 samples; past the last bucket (an hour), sizes stay.
  w, n = serving.bucketed(np.ones((3, 17000)), [17000, 5, 1])
  assert w.shape == (4, 19028) and list(n) == [17000, 5, 1, 0]
  assert np.all(w[:, 17000:] == 0) and np.all(w[3] == 0)
  assert serving.bucketed(np.ones((1, 16000)), [16000])[0].shape == (1, 16000)
  assert serving._bucket(70_000_000, serving.SAMPLE_BUCKETS) == 70_000_000
  assert np.all(serving.SAMPLE_BUCKETS[1:] / serving.SAMPLE_BUCKETS[:-1] < 1.19)
  # A padding row (0 samples) gives finite numbers, and changes no other row.
  config, params = small_model("tdnn")
  fn = jax.jit(serving.embedding_function(config, params))
  out = fn(*serving.bucketed(*serving.pad_batch([noise(0.7, 8)] * 3)))
  assert all(np.all(np.isfinite(v)) for v in out.values())
  alone = np.asarray(fn(*serving.pad_batch([noise(0.7, 8)]))[serving.EMBEDDING])
  np.testing.assert_allclose(out[serving.EMBEDDING][:3], alone[[0, 0, 0]], atol=1e-5)


def test_masked_embed_is_the_model_embed():
  config, params = small_model("tdnn")
  model = create_model(config.model, 5)
  features = jax.random.normal(jax.random.PRNGKey(1), (3, 50, 40))
  lengths = jnp.array([50, 41, 7])
  apply = jax.jit(model.apply, static_argnames="method")
  want = apply({"params": params}, features, lengths, method=SpeakerModel.embed)
  got = apply({"params": params}, features, lengths, method=serving._embed_masked)
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_clear_errors(tmp_path):
  config, params = small_model("tdnn")
  config.data.trim_silence = True
  with pytest.raises(ValueError, match="trim silence"):
    serving.embedding_function(config, params)
  (tmp_path / "taken").mkdir()
  (tmp_path / "taken" / "file").write_text("x")
  config.data.trim_silence = False
  with pytest.raises(FileExistsError, match="taken"):
    serving.export_stablehlo(config, params, None, tmp_path / "taken")
  with pytest.raises(ValueError, match="not a hive serving export"):
    serving.load(tmp_path)
  with pytest.raises(ValueError, match="non-empty 1-D"):
    serving.pad_batch([np.zeros(0)])


# --- the shipped model's exports on real speech ---------------------------------------


def real_files() -> dict[str, list[pathlib.Path]]:
  """Two files of each shared corpus: speechcommands' short clips (< 1.6 s, shorter than
  the crop), speechocean762's, and LibriSpeech's shortest and longest (17 s)."""
  corpora = {name: sorted((SHARED_DATA / name).rglob("*.flac"))
             for name in ("speechcommands", "speechocean762", "librispeech")}
  missing = [name for name, paths in corpora.items() if not paths]
  if missing:
    pytest.skip(f"shared corpora {', '.join(missing)} not found under {SHARED_DATA}")
  by_length = sorted(corpora["librispeech"], key=lambda p: sf.info(p).frames)
  return {"speechcommands": corpora["speechcommands"][:2],
          "speechocean762": corpora["speechocean762"][:2],
          "librispeech": [by_length[0], by_length[-1]]}


@pytest.fixture(scope="module")
def reference():
  """Real files, their waves and the shipped Encoder's embeddings and P(female)."""
  paths = [p for group in real_files().values() for p in group]
  enc = Encoder.pretrained()
  waves = [audio.load_wave(p) for p in paths]
  # Encoder.embed(path) of each; embedded together, which changes no embedding (Encoder).
  want, gender = enc.embed_features([enc.features_of(p) for p in paths], with_gender=True)
  assert len(waves[0]) < 16000 * enc.window / 100 < len(waves[-1])  # Short and long.
  assert len(waves[-1]) > 15 * 16000
  return {"encoder": enc, "paths": paths, "waves": waves, "embedding": want, "gender": gender}


def inputs_of(reference) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """All files in one batch of mixed lengths (up to 17 s), and the shortest alone (a clip
  shorter than the crop, so the whole input is repeated to it)."""
  waves = reference["waves"]
  return {"batch": serving.pad_batch(waves), "short": serving.pad_batch(waves[:1])}


def check_parity(reference, outputs: dict[str, dict]):
  want, gender = reference["embedding"], reference["gender"]
  batch = outputs["batch"]
  assert batch[serving.EMBEDDING].shape == want.shape
  worst = cosines(batch[serving.EMBEDDING], want)
  assert np.all(worst >= PARITY), dict(zip(map(str, reference["paths"]), worst))
  np.testing.assert_allclose(batch[serving.GENDER], gender, atol=1e-3)
  assert cosines(outputs["short"][serving.EMBEDDING][0], want[0]) >= PARITY


def export_shipped(reference, tmp_path_factory, fmt: str) -> pathlib.Path:
  enc = reference["encoder"]
  out = tmp_path_factory.mktemp(fmt) / "export"
  getattr(serving, f"export_{fmt}")(enc.config, enc.params, enc.embedding_mean, out,
                                    info={"step": enc.step})
  metadata = json.loads((out / serving.METADATA_FILE).read_text())
  assert metadata["format"] == fmt and metadata["step"] == enc.step
  assert metadata["mode"] == "utterance" and metadata["embed_dim"] == 256
  return out


def test_stablehlo_matches_encoder_on_real_speech(reference, tmp_path_factory):
  out = export_shipped(reference, tmp_path_factory, "stablehlo")
  exported = jax.export.deserialize(bytearray((out / serving.STABLEHLO_FILE).read_bytes()))
  assert exported.platforms == ("cpu", "cuda")
  assert str(exported.in_avals[0].shape) == "(b, s)"  # Any batch, any length.
  run = serving.load(out)
  check_parity(reference, {key: run(*value) for key, value in inputs_of(reference).items()})


def test_onnx_matches_encoder_on_real_speech(reference, tmp_path_factory):
  out = export_shipped(reference, tmp_path_factory, "onnx")
  run = serving.load(out)
  check_parity(reference, {key: run(*value) for key, value in inputs_of(reference).items()})


# Run in a fresh interpreter where jax cannot even be imported: TensorFlow alone serves it.
TF_ONLY = r"""
import sys
sys.modules["jax"] = sys.modules["jaxlib"] = None
import numpy as np
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
inputs, out = np.load(sys.argv[2]), {}
for key in ("batch", "short"):
  result = serve(waveform=tf.constant(inputs[key + ".waveform"]),
                 num_samples=tf.constant(inputs[key + ".num_samples"]))
  for name, value in result.items():
    out[key + "." + name] = value.numpy()
np.savez(sys.argv[3], **out)
"""


def test_savedmodel_matches_encoder_on_real_speech(reference, tmp_path_factory):
  out = export_shipped(reference, tmp_path_factory, "savedmodel")
  work = tmp_path_factory.mktemp("tf-only")
  np.savez(work / "in.npz", **{f"{key}.{name}": value
                               for key, (w, n) in inputs_of(reference).items()
                               for name, value in (("waveform", w), ("num_samples", n))})
  env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
  done = subprocess.run([sys.executable, "-c", TF_ONLY, str(out), str(work / "in.npz"),
                         str(work / "out.npz")], cwd=work, env=env, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  results = np.load(work / "out.npz")
  outputs = {}
  for name in results.files:
    key, output = name.split(".", 1)
    outputs.setdefault(key, {})[output] = results[name]
  check_parity(reference, outputs)
