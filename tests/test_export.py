"""hive.export: an inference-only copy loads to the same model, smaller, and refuses misuse."""

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from hive import checkpoint, export, workdir as workdir_lib
from hive.encoder import Encoder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dir_bytes(path):
  return sum(f.stat().st_size for f in pathlib.Path(path).rglob("*") if f.is_file())


def test_export_round_trip_is_exact_and_drops_the_optimiser(tiny, tmp_path):
  out = tmp_path / "exported"
  path = export.export_workdir(tiny["workdir"], out)
  original, exported = Encoder.from_workdir(tiny["workdir"]), Encoder.from_workdir(out)
  assert exported.step == original.step == int(path.name)
  assert exported.speakers == original.speakers
  for a, b in zip(jax.tree.leaves(original.params), jax.tree.leaves(exported.params), strict=True):
    np.testing.assert_array_equal(a, b)
  mels = [np.random.default_rng(0).normal(size=(130, 40)).astype(np.float32)]
  np.testing.assert_array_equal(original.embed_features(mels), exported.embed_features(mels))
  # Adam keeps two moments per parameter: the export is well under half the size.
  full = workdir_lib.checkpoint_dir(tiny["workdir"]) / str(original.step)
  assert dir_bytes(path) < 0.5 * dir_bytes(full)
  # Nothing in the checkpoint names the machine it was written on.
  for f in pathlib.Path(path).rglob("*"):
    if f.is_file():
      assert str(tmp_path).encode() not in f.read_bytes(), f


def test_export_refuses_a_non_empty_target_and_a_missing_step(tiny, tmp_path):
  export.export_workdir(tiny["workdir"], tmp_path / "a")
  with pytest.raises(FileExistsError, match="not empty"):
    export.export_workdir(tiny["workdir"], tmp_path / "a")
  (tmp_path / "c").mkdir()
  (tmp_path / "c" / "notes.txt").write_text("someone's file")
  with pytest.raises(FileExistsError, match="not empty"):  # Nothing of theirs is overwritten.
    export.export_workdir(tiny["workdir"], tmp_path / "c")
  assert [f.name for f in (tmp_path / "c").iterdir()] == ["notes.txt"]
  with pytest.raises(FileNotFoundError, match="step 999"):
    export.export_workdir(tiny["workdir"], tmp_path / "b", step=999)


def test_cli(tiny, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  cmd = [sys.executable, "-m", "hive.export", f"--workdir={tiny['workdir']}",
         f"--out={tmp_path / 'x'}"]
  done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "exported" in done.stdout and (tmp_path / "x" / "config.json").is_file()
  again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert again.returncode == 2
  assert again.stderr.strip().splitlines()[-1].startswith("error:") and "not empty" in again.stderr


def test_workdirs_may_be_buckets(tmp_path, monkeypatch):
  # A multi-host run on hosts without a shared disk writes to a bucket: its address must
  # survive intact (pathlib would turn gs://b into the local directory gs:/b).
  assert str(workdir_lib.checkpoint_dir("gs://bucket/runs/mtl")) == "gs://bucket/runs/mtl/checkpoints"
  monkeypatch.chdir(tmp_path)
  assert str(workdir_lib.checkpoint_dir("runs/mtl")) == str(tmp_path / "runs/mtl/checkpoints")


def test_serving_export_through_the_command_matches_the_encoder(tiny, tmp_path):
  """--format=stablehlo: the waveform-in model, written whole (staged, then renamed)."""
  from hive import serving
  out = tmp_path / "served"
  export.export_for_serving(tiny["workdir"], out, "stablehlo")
  assert sorted(p.name for p in out.iterdir()) == ["embedder.stablehlo", "serving.json"]
  assert not list(tmp_path.glob(".served.export-*"))
  enc = Encoder.from_workdir(tiny["workdir"])
  rng = np.random.default_rng(0)
  waves = [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in (6000, 17000)]
  padded, lengths = serving.pad_batch(waves)
  got = np.asarray(serving.load(out)(padded, lengths)["embedding"])
  want = np.stack([enc.embed(w) for w in waves])
  np.testing.assert_allclose(np.sum(got * want, axis=1), 1.0, atol=1e-3)
  with pytest.raises(FileExistsError, match="not empty"):
    export.export_for_serving(tiny["workdir"], out, "onnx")


def test_export_ships_calibration_and_cohort_made_for_its_step(tiny, tmp_path):
  import shutil
  workdir = tmp_path / "run"
  shutil.copytree(tiny["workdir"], workdir)
  step = Encoder.from_workdir(workdir).step
  workdir_lib.save_calibration(workdir, {"slope": 5.0, "offset": -1.0, "checkpoint_step": step})
  workdir_lib.save_cohort(workdir, np.eye(2, 16), ["a", "b"], step, "none")
  export.export_workdir(workdir, tmp_path / "out")
  assert workdir_lib.read_calibration(tmp_path / "out")["slope"] == 5.0
  assert workdir_lib.read_cohort(tmp_path / "out")["speakers"] == ["a", "b"]
  # Made for another step: they stay behind, as the centring mean does.
  workdir_lib.save_calibration(workdir, {"slope": 5.0, "offset": -1.0,
                                         "checkpoint_step": step + 1})
  workdir_lib.save_cohort(workdir, np.eye(2, 16), ["a", "b"], step + 1, "none")
  export.export_workdir(workdir, tmp_path / "out2")
  assert not (tmp_path / "out2" / workdir_lib.CALIBRATION_FILE).exists()
  assert not (tmp_path / "out2" / workdir_lib.COHORT_FILE).exists()
