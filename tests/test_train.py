"""Training: one step learns, resume equals an uninterrupted run, NaN guard, the CLI."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from hive import checkpoint, config as config_lib, parallel, train, workdir as workdir_lib
from hive.data import input_pipeline, synthetic
from hive.models import abstract_params

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
  root = tmp_path_factory.mktemp("corpus")
  synthetic.generate_corpus(root, num_speakers=8, utterances_per_speaker=3, seconds=(1.0, 1.5),
                            seed=3)
  return root


def tiny_config(corpus, data_dir, steps=6):
  c = config_lib.base_config()
  c.data.root = str(corpus)
  c.data.data_dir = str(data_dir)
  c.data.n_speakers, c.data.n_utterances, c.data.crop_frames = 4, 3, 40
  c.data.dev_fraction = 0.25
  c.eval.utterances_per_speaker = 2
  c.model.embed_dim = 16
  c.model.lstm.hidden, c.model.lstm.layers = 32, 1
  c.augment.enabled = True  # Exercise the augmentation RNG through resume too.
  c.train.steps = steps
  c.train.warmup_steps = 2
  c.train.log_every = 2
  c.train.eval_every = 3
  c.train.checkpoint_every = 1
  return c


def test_speed_factors_add_train_speakers_and_leave_dev_alone(tiny_corpus, tmp_path):
  config = tiny_config(tiny_corpus, tmp_path)
  plain = input_pipeline.load_inputs(config)
  config.data.speed_factors = (0.9, 1.1)
  augmented = input_pipeline.load_inputs(config)
  assert augmented.dev_speakers == plain.dev_speakers
  assert augmented.dev.utterance_ids == plain.dev.utterance_ids
  for a, b in zip(augmented.dev.features, plain.dev.features):
    np.testing.assert_array_equal(a, b)
  assert augmented.train_speakers == plain.train_speakers  # The real ones.
  assert augmented.centring.utterance_ids == plain.centring.utterance_ids
  assert augmented.table.speakers == sorted(
      s + tag for s in plain.table.speakers for tag in ("", "~sp0.9", "~sp1.1"))
  assert len(augmented.table.label) == 3 * len(plain.table.label)


def params_of(workdir, config):
  inputs = input_pipeline.load_inputs(config)
  target = train._init_state(config, inputs.table.num_speakers, parallel.make_mesh())
  state = checkpoint.restore_latest(checkpoint.make_manager(workdir), target)
  return jax.device_get(state.params), int(state.step)


def fixed_batch(n, m, t, f, seed=0):
  rng = np.random.default_rng(seed)
  base = rng.normal(size=(n, 1, t, f))  # Each speaker its own pattern, plus noise.
  features = (base + 0.3 * rng.normal(size=(n, m, t, f))).reshape(n * m, t, f)
  return {"features": features.astype(np.float32),
          "speaker": np.repeat(np.arange(n), m).astype(np.int32),
          "gender": np.tile([0, 1], n * m // 2).astype(np.int32)}


def test_steps_decrease_loss_on_fixed_batch(tiny_corpus, tmp_path):
  config = tiny_config(tiny_corpus, tmp_path)
  config.augment.enabled = False
  config.train.schedule = "constant"
  mesh = parallel.make_mesh()
  state = train._init_state(config, 4, mesh)
  step = train.make_train_step(config, mesh)
  batch = parallel.global_batch(fixed_batch(4, 3, 40, 40), mesh)
  losses = []
  for _ in range(5):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0]
  for term in ("ge2e", "triplet", "speaker_id", "gender", "grad_norm", "learning_rate"):
    assert term in metrics
  assert int(state.step) == 5


def test_resume_after_interruption_matches_uninterrupted(tiny_corpus, tmp_path, monkeypatch):
  config = tiny_config(tiny_corpus, tmp_path / "tfds")
  straight = train.train_and_evaluate(config, str(tmp_path / "straight"))
  assert straight["steps"] == 6

  original = input_pipeline.train_batches

  def crashing_batches(*args, **kwargs):
    it = original(*args, **kwargs)
    for _ in range(4):
      yield next(it)
    raise KeyboardInterrupt("simulated crash after 4 steps")

  monkeypatch.setattr(input_pipeline, "train_batches", crashing_batches)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, str(tmp_path / "resumed"))
  monkeypatch.setattr(input_pipeline, "train_batches", original)
  assert checkpoint.make_manager(tmp_path / "resumed").latest_step() == 4
  resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert resumed["steps"] == 6

  a, _ = params_of(tmp_path / "straight", config)
  b, _ = params_of(tmp_path / "resumed", config)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b)
  assert resumed["dev_eer"] == pytest.approx(straight["dev_eer"], abs=1e-6)
  assert (tmp_path / "straight" / "config.json").is_file()


def test_non_finite_loss_stops_without_checkpoint(tiny_corpus, tmp_path, monkeypatch):
  config = tiny_config(tiny_corpus, tmp_path / "tfds")
  original = input_pipeline.train_batches

  def poisoned(*args, **kwargs):
    it = original(*args, **kwargs)
    yield next(it)
    batch = next(it)
    batch = dict(batch, features=np.full_like(batch["features"], np.nan))
    yield batch

  monkeypatch.setattr(input_pipeline, "train_batches", poisoned)
  with pytest.raises(train.NonFiniteLoss, match="at step 2"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert checkpoint.make_manager(tmp_path / "run").all_steps() == [1]


def test_cli_overrides_checkpoint_events_and_json(tiny_corpus, tmp_path):
  workdir = tmp_path / "run"
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  cmd = [sys.executable, "-m", "hive.main", "--config=configs/mtl.py", f"--workdir={workdir}",
         f"--config.data.root={tiny_corpus}", f"--config.data.data_dir={tmp_path / 'tfds'}",
         "--config.data.n_speakers=4", "--config.data.n_utterances=3",
         "--config.data.crop_frames=40", "--config.data.dev_fraction=0.25",
         "--config.model.embed_dim=16", "--config.model.lstm.hidden=16",
         "--config.model.lstm.layers=1", "--config.train.steps=3",
         "--config.train.eval_every=3", "--config.loss.weights.triplet=0.5"]
  out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  summary = json.loads(out.stdout.strip().splitlines()[-1])
  assert summary["steps"] == 3
  for key in ("dev_eer", "ge2e", "triplet", "speaker_id", "gender", "checkpoint", "seconds"):
    assert key in summary
  assert pathlib.Path(summary["checkpoint"]).is_dir()
  # The training mean embedding is fitted for the last checkpoint (hive/centring.py).
  assert summary["centring_utterances"] > 0
  assert workdir_lib.read_mean(workdir)[1] == 3
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["loss"]["weights"]["triplet"] == 0.5
  assert saved["model"]["lstm"]["hidden"] == 16
  assert list(workdir.glob("events.out.tfevents.*"))


def test_init_from_starts_with_the_other_runs_model(tiny_corpus, tmp_path):
  first = tiny_config(tiny_corpus, tmp_path / "tfds", steps=2)
  train.train_and_evaluate(first, str(tmp_path / "first"))
  started, _ = params_of(tmp_path / "first", first)

  # With a zero learning rate the one fine-tuning step leaves the parameters as loaded.
  second = tiny_config(tiny_corpus, tmp_path / "tfds", steps=1)
  second.train.init_from = str(tmp_path / "first")
  second.train.schedule = "constant"
  second.train.learning_rate = 0.0
  second.data.crop_frames = 60  # Longer crops: the parameters do not depend on them.
  train.train_and_evaluate(second, str(tmp_path / "second"))
  tuned, step = params_of(tmp_path / "second", second)
  assert step == 1
  jax.tree.map(np.testing.assert_array_equal, tuned["model"], started["model"])
  fresh = jax.device_get(train._init_state(second, 6, parallel.make_mesh()).params)
  assert not np.allclose(jax.tree.leaves(fresh["model"])[0], jax.tree.leaves(tuned["model"])[0])

  # Other training speakers: everything but the speaker-ID head carries over.
  other_split = tiny_config(tiny_corpus, tmp_path / "tfds", steps=1)
  other_split.train.init_from = str(tmp_path / "first")
  other_split.train.schedule = "constant"
  other_split.train.learning_rate = 0.0
  other_split.data.split_seed = 1
  train.train_and_evaluate(other_split, str(tmp_path / "third"))
  assert (workdir_lib.load_speakers(tmp_path / "third")["train"]
          != workdir_lib.load_speakers(tmp_path / "first")["train"])
  adapted, _ = params_of(tmp_path / "third", other_split)
  for part in ("encoder", "gender"):
    jax.tree.map(np.testing.assert_array_equal, adapted["model"][part], started["model"][part])
  assert not np.allclose(adapted["model"]["speaker"]["kernel"], started["model"]["speaker"]["kernel"])

  # Another model: named, whether or not its parameter shapes differ (input_norm's don't).
  for field, value, old in (("embed_dim", 24, 16), ("encoder", "tdnn", "'lstm'"),
                            ("input_norm", False, True)):
    other_model = tiny_config(tiny_corpus, tmp_path / "tfds", steps=1)
    other_model.train.init_from = str(tmp_path / "first")
    other_model.model[field] = value
    with pytest.raises(ValueError, match=rf"model settings differ.*model\.{field}={old} there"):
      train.train_and_evaluate(other_model, str(tmp_path / f"other-{field}"))
    assert not (tmp_path / f"other-{field}" / "checkpoints").exists()
  # A checkpoint whose parameters do not fit is refused by shape too, naming it.
  other_model.model.input_norm, other_model.model.embed_dim = True, 24
  abstract = abstract_params(other_model, 6)
  with pytest.raises(ValueError, match=r"first: its model does not fit this config"):
    checkpoint.latest_model_params(tmp_path / "first", abstract)

  missing = tiny_config(tiny_corpus, tmp_path / "tfds", steps=1)
  missing.train.init_from = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="nowhere"):
    train.train_and_evaluate(missing, str(tmp_path / "fourth"))
