"""Shared test set-up: CPU only, quiet TensorFlow, the shared data location."""

import os
import pathlib

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # TF must not grab a GPU JAX may use.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data():
  """../shared/data, or a skip naming what is missing."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"shared data not found at {SHARED_DATA}")
  return SHARED_DATA


def tiny_config(corpus, data_dir, steps=4):
  """A tiny LSTM that trains in seconds; only the final checkpoint is kept."""
  from hive import config as config_lib
  c = config_lib.base_config()
  c.data.root, c.data.data_dir = str(corpus), str(data_dir)
  c.data.n_speakers, c.data.n_utterances, c.data.crop_frames = 4, 3, 40
  c.data.dev_fraction, c.eval.utterances_per_speaker = 0.25, 2
  c.model.embed_dim = 16
  c.model.lstm.hidden, c.model.lstm.layers = 32, 1
  c.train.steps, c.train.warmup_steps = steps, 2
  c.train.log_every, c.train.eval_every, c.train.checkpoint_every = steps, 10 * steps, steps
  return c


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
  """A tiny synthetic corpus and a model trained on it, shared by the whole session."""
  from hive import train
  from hive.data import synthetic
  root = tmp_path_factory.mktemp("hive-tiny-model")
  corpus = root / "corpus"
  synthetic.generate_corpus(corpus, num_speakers=8, utterances_per_speaker=3,
                            seconds=(1.0, 1.5), seed=3)
  train.train_and_evaluate(tiny_config(corpus, root / "tfds"), str(root / "run"))
  return {"corpus": corpus, "workdir": root / "run", "data_dir": root / "tfds"}


@pytest.fixture(scope="session")
def tiny_encoder(tiny):
  from hive.encoder import Encoder
  return Encoder.from_workdir(tiny["workdir"])


@pytest.fixture(scope="session")
def tiny_examples(tiny, tiny_encoder):
  """The tiny corpus, prepared and read into memory."""
  from hive.data import builder
  prepared, _ = builder.prepare(tiny["corpus"], tiny["data_dir"], tiny_encoder.feature_config)
  return builder.read_examples(prepared)
