"""Trains a speaker embedding: `python -m hive.main --config=configs/mtl.py --workdir=DIR`.

Any config field can be overridden, e.g. `--config.train.steps=200
--config.data.root=PATH`. Re-running the same command resumes from the latest
checkpoint in DIR. When training ends, the training speakers' mean embedding is
fitted for the last checkpoint (hive/centring.py). The run ends by printing one
line of JSON. Also installed as the console script `hive-train`.
"""

from __future__ import annotations

import json

import jax
from absl import flags

from hive import centring, cli, parallel, train, workdir as workdir_lib

FLAGS = flags.FLAGS


def define_flags() -> None:
  from ml_collections import config_flags
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and config.")
  config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                  lock_config=True)
  flags.DEFINE_string("coordinator", None, "host:port of process 0 for multi-process runs.")
  flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
  flags.DEFINE_integer("process_id", None, "This process's index.")
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
  cli.no_arguments(argv)
  cli.hide_gpus_from_tensorflow()
  parallel.initialize_distributed(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
  summary = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  # Every process reads the data (its barriers need all), process 0 writes.
  mean, step, count = centring.fit_workdir(FLAGS.workdir)
  summary["centring_utterances"] = count
  if jax.process_index() == 0:
    workdir_lib.save_mean(FLAGS.workdir, mean, step)
    print(json.dumps(summary), flush=True)


def run() -> None:
  cli.run(main, define_flags)


if __name__ == "__main__":
  run()
