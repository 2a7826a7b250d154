"""hive.centring: the training mean embedding, fitted, saved, shipped and applied."""

import shutil

import numpy as np
import pytest

from hive import centring, export, scoring, voiceid, workdir as workdir_lib
from hive.encoder import Encoder


def test_centre_by_hand():
  mean = scoring.fit_mean([[1.0, 0.0], [0.0, 2.0]])  # Rows are normalised first.
  np.testing.assert_allclose(mean, [0.5, 0.5])
  # [1, 0] - [0.5, 0.5] = [0.5, -0.5], renormalised.
  np.testing.assert_allclose(scoring.centre([[3.0, 0.0]], mean), [[0.5**0.5, -(0.5**0.5)]],
                             rtol=1e-6)
  # No mean to remove: unit rows come back unchanged.
  np.testing.assert_allclose(scoring.centre([[0.6, 0.8]], [0.0, 0.0]), [[0.6, 0.8]], rtol=1e-6)
  with pytest.raises(ValueError, match="K >= 1"):
    scoring.fit_mean(np.zeros((0, 4)))


def test_centring_removes_a_shared_component():
  """Two speakers whose embeddings share a large common direction: raw cosine says they
  are alike; centred on a training set with the same bias, they are told apart."""
  rng = np.random.default_rng(0)
  shared = np.zeros(16)
  shared[0] = 3.0
  def speaker(direction, n):
    return shared + direction + 0.05 * rng.normal(size=(n, 16))
  a, b = np.eye(16)[1], np.eye(16)[2]
  train = np.concatenate([speaker(np.eye(16)[k], 5) for k in range(3, 12)])
  mean = scoring.fit_mean(train)
  raw = scoring.unit_rows(np.concatenate([speaker(a, 1), speaker(b, 1)]))
  centred = scoring.centre(raw, mean)
  assert raw[0] @ raw[1] > 0.8
  assert centred[0] @ centred[1] < 0.3
  np.testing.assert_allclose(np.linalg.norm(centred, axis=1), 1.0, rtol=1e-6)
  # Scale-free: the input's norm does not matter.
  np.testing.assert_allclose(scoring.centre(7 * raw, mean), centred, rtol=1e-6)


def test_save_load_round_trip_and_bad_files(tmp_path):
  mean = np.array([0.1, -0.2, 0.3])
  workdir_lib.save_mean(tmp_path, mean, step=40)
  assert workdir_lib.read_mean(tmp_path)[1] == 40
  np.testing.assert_allclose(workdir_lib.load_mean(tmp_path, 3, step=40), mean, rtol=1e-6)
  assert workdir_lib.load_mean(tmp_path, 3, step=41) is None  # Fitted for another checkpoint.
  assert workdir_lib.load_mean(tmp_path / "elsewhere", 3, step=40) is None  # No file: no centring.
  with pytest.raises(ValueError, match=r"embedding_mean.npz.*shape \(4,\)"):
    workdir_lib.load_mean(tmp_path, 4, step=40)
  workdir_lib.save_mean(tmp_path, [0.0, 1.0, 0.0], step=40)
  with pytest.raises(ValueError, match="norm < 1"):
    workdir_lib.load_mean(tmp_path, 3, step=40)
  workdir_lib.save_mean(tmp_path, [np.nan, 0.0, 0.0], step=40)
  with pytest.raises(ValueError, match="finite"):
    workdir_lib.load_mean(tmp_path, 3, step=40)
  (tmp_path / workdir_lib.MEAN_FILE).write_bytes(b"not numpy")
  with pytest.raises(workdir_lib.BadWorkdirFile,
                     match=r"embedding_mean.npz: not a hive mean-embedding file \(not a .npz file"):
    workdir_lib.read_mean(tmp_path)[1]


@pytest.fixture
def centred_workdir(tiny, tmp_path):
  """A copy of the tiny workdir with its training mean fitted."""
  workdir = tmp_path / "run"
  shutil.copytree(tiny["workdir"], workdir)
  mean, step, count = centring.fit_workdir(workdir)
  assert count == 18  # The 6 training speakers' 3 utterances each; dev speakers not used.
  workdir_lib.save_mean(workdir, mean, step)
  return workdir


def test_encoder_centres_and_the_gender_head_reads_the_raw_embedding(centred_workdir, tiny):
  centred = Encoder.from_workdir(centred_workdir)
  raw = Encoder.from_workdir(centred_workdir, centring=False)
  assert centred.embedding_mean is not None and raw.embedding_mean is None
  mels = [np.random.default_rng(i).normal(size=(90 + 20 * i, 40)).astype(np.float32)
          for i in range(3)]
  raw_embeddings, raw_gender = raw.embed_features(mels, with_gender=True)
  embeddings, gender = centred.embed_features(mels, with_gender=True)
  np.testing.assert_allclose(embeddings, scoring.centre(raw_embeddings, centred.embedding_mean),
                             atol=1e-6)
  np.testing.assert_allclose(gender, raw_gender, atol=1e-6)
  np.testing.assert_allclose(centred.embed_features(mels), embeddings, atol=1e-6)
  # The training mean is what the model's training embeddings average to: centred, the
  # training utterances average to (near) nothing.
  from hive.data import builder
  from hive import evaluate
  prepared, _ = builder.prepare(tiny["corpus"], tiny["data_dir"], centred.feature_config)
  train = evaluate.select_split(builder.read_examples(prepared), tiny["corpus"],
                                centred_workdir, "train")
  centred_train = centred.embed_features(train.features)
  assert np.linalg.norm(centred_train.mean(0)) < 0.5 * np.linalg.norm(centred.embedding_mean)


def test_export_ships_the_mean_and_voiceid_tells_models_apart(centred_workdir, tmp_path):
  out = tmp_path / "exported"
  export.export_workdir(centred_workdir, out)
  assert (out / workdir_lib.MEAN_FILE).is_file()
  original, exported = Encoder.from_workdir(centred_workdir), Encoder.from_workdir(out)
  np.testing.assert_array_equal(original.embedding_mean, exported.embedding_mean)

  centred_info = exported.model_record()
  raw_info = Encoder.from_workdir(out, centring=False).model_record()
  assert centred_info["centring"] == workdir_lib.mean_digest(exported.embedding_mean) != "none"
  assert raw_info["centring"] == "none"
  dim = exported.config.model.embed_dim
  store = voiceid.new_store(raw_info, dim)
  voiceid.check_model(store, raw_info)  # Same model: accepted.
  with pytest.raises(voiceid.VoiceIdError, match="centring none"):
    voiceid.check_model(store, centred_info)
  # A store written before centring existed has no "centring": it was uncentred.
  old = dict(store, model={k: v for k, v in raw_info.items() if k != "centring"})
  with pytest.raises(voiceid.VoiceIdError, match="re-enroll"):
    voiceid.check_model(old, centred_info)


def test_a_mean_for_another_step_is_not_exported_or_applied(centred_workdir, tmp_path):
  step = workdir_lib.read_mean(centred_workdir)[1]
  mean = workdir_lib.load_mean(centred_workdir, 16, step)
  workdir_lib.save_mean(centred_workdir, mean, step + 1)
  assert Encoder.from_workdir(centred_workdir).embedding_mean is None
  export.export_workdir(centred_workdir, tmp_path / "out")
  assert not (tmp_path / "out" / workdir_lib.MEAN_FILE).exists()


@pytest.mark.parametrize("command", ["embed", "voiceid", "export"])
def test_commands_name_a_corrupt_mean_file_and_exit_2(centred_workdir, tiny, tmp_path, command):
  import os
  import subprocess
  import sys
  (centred_workdir / workdir_lib.MEAN_FILE).write_bytes(b"junk")
  clip = str(sorted(tiny["corpus"].rglob("*.flac"))[0])
  args = {"embed": ["hive.embed", f"--workdir={centred_workdir}", f"--out={tmp_path / 'e.npz'}",
                    clip],
          "voiceid": ["hive.voiceid", "verify", f"--workdir={centred_workdir}", clip, clip],
          "export": ["hive.export", f"--workdir={centred_workdir}", f"--out={tmp_path / 'x'}"]}
  done = subprocess.run([sys.executable, "-m", *args[command]], capture_output=True, text=True,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        env=dict(os.environ, JAX_PLATFORMS="cpu", HIVE_CACHE=str(tmp_path)),
                        timeout=300)
  assert done.returncode == 2, done.stderr[-2000:]
  assert f"error: {centred_workdir / workdir_lib.MEAN_FILE}: not a hive mean-embedding file" \
      in done.stderr
  assert "Traceback" not in done.stderr
  assert not (tmp_path / "e.npz").exists() and not (tmp_path / "x").exists()  # Nothing written.
