"""Trains a speaker embedding: `python -m hive.main --config=configs/mtl.py --workdir=DIR`.

Any config field can be overridden, e.g. `--config.train.steps=200
--config.data.root=PATH`. Re-running the same command resumes from the latest
checkpoint in DIR. When training ends, the training speakers' mean embedding is
fitted for the last checkpoint (hive/centring.py). The run ends by printing one
line of JSON.
"""

from __future__ import annotations

import json

import tensorflow as tf

# tf.data only feeds batches: keep TensorFlow off the accelerators JAX uses.
tf.config.set_visible_devices([], "GPU")

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from hive import centring, logs, parallel, train  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and config.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
_COORDINATOR = flags.DEFINE_string("coordinator", None,
                                   "host:port of process 0 for multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logs.quiet_libraries()
  parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  summary = train.train_and_evaluate(flags.FLAGS.config, _WORKDIR.value)
  # Every process reads the data (its barriers need all), process 0 writes.
  mean, step, count = centring.fit_workdir(_WORKDIR.value)
  summary["centring_utterances"] = count
  if jax.process_index() == 0:
    centring.save(_WORKDIR.value, mean, step)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  app.run(main)
