"""Multi-device and multi-process training give the answer of one device.

Both run in subprocesses: the number of (simulated) CPU devices is fixed when
JAX starts.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from hive import checkpoint, parallel, train, workdir as workdir_lib
from hive.data import synthetic

REPO = pathlib.Path(__file__).resolve().parents[1]


def _env(**extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
             PYTHONPATH=str(REPO), **extra)
  env.pop("XLA_FLAGS", None)
  env.update(extra)
  return env


def test_eight_devices_match_one_device():
  out = subprocess.run([sys.executable, str(REPO / "tests" / "multidevice_step.py")], cwd=REPO,
                       env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=8"),
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["devices"] == 8
  assert result["shards"] == [1, 8]  # The batch really was split over 8 devices.
  assert result["max_param_diff"] < 1e-5
  for key, value in result["metrics_one"].items():
    assert result["metrics_all"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
  assert "ge2e" in result["metrics_one"]


def _main_flags(corpus, data_dir, workdir):
  return ["--config=configs/mtl.py", f"--workdir={workdir}", f"--config.data.root={corpus}",
          f"--config.data.data_dir={data_dir}", "--config.data.n_speakers=4",
          "--config.data.n_utterances=3", "--config.data.crop_frames=40",
          "--config.data.dev_fraction=0.25", "--config.model.embed_dim=16",
          "--config.model.lstm.hidden=16", "--config.model.lstm.layers=1",
          "--config.train.steps=4", "--config.train.eval_every=4",
          "--config.train.checkpoint_every=2"]


def _params(workdir):
  config = workdir_lib.load_config(workdir)
  speakers = workdir_lib.load_speakers(workdir)["train"]
  target = train.create_train_state(config, len(speakers), jax.random.PRNGKey(0))
  manager = checkpoint.make_manager(workdir)
  state = checkpoint.restore_latest(manager, target)
  return parallel.fetch(state.params), manager.all_steps()


def test_two_processes_match_one_process(tmp_path):
  corpus = synthetic.generate_corpus(tmp_path / "corpus", num_speakers=8,
                                     utterances_per_speaker=3, seconds=(1.0, 1.5), seed=5)
  data_dir = tmp_path / "tfds"
  single = subprocess.run(
      [sys.executable, "-m", "hive.main", *_main_flags(corpus, data_dir, tmp_path / "one")],
      cwd=REPO, env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"),
      capture_output=True, text=True, timeout=400)
  assert single.returncode == 0, single.stderr[-3000:]
  multi = subprocess.run(
      ["bash", "launch/local.sh", "2", "2", *_main_flags(corpus, data_dir, tmp_path / "two")],
      cwd=REPO, env=_env(PYTHON=sys.executable, HIVE_LOG_DIR=str(tmp_path / "logs")),
      capture_output=True, text=True, timeout=400)
  logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
  assert multi.returncode == 0, multi.stderr[-3000:] + logs[-3000:]

  one = json.loads(single.stdout.strip().splitlines()[-1])
  summaries = [l for l in multi.stdout.splitlines() if l.startswith("{")]
  assert len(summaries) == 1  # Only process 0 prints the summary.
  two = json.loads(summaries[0])
  for key in ("steps", "ge2e", "triplet", "speaker_id", "gender", "loss", "dev_eer"):
    assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-5), key
  params_one, steps_one = _params(tmp_path / "one")
  params_two, steps_two = _params(tmp_path / "two")
  assert steps_one == steps_two == [2, 4]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               params_one, params_two)
