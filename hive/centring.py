"""Fits a model's centring mean: `python -m hive.centring --workdir=DIR [--step=N]`.

Every hive command centres embeddings: it subtracts the mean embedding of the model's
training speakers and renormalises (hive/scoring.py says why). `hive.main` fits that mean
when training ends and writes DIR/embedding_mean.npz (with the checkpoint step it was fitted
for, hive/workdir.py); `hive.export` copies it; `hive.Encoder` applies it when it was fitted
for the step being loaded. This command (re)fits it for a workdir, e.g. one trained before
it existed or another step.
"""

from __future__ import annotations

import numpy as np

from hive import cli, scoring, workdir as workdir_lib
from hive.data import input_pipeline
from hive.encoder import Encoder


def fit_workdir(workdir, step: int | None = None, chunk: int = 1000
                ) -> tuple[np.ndarray, int, int]:
  """The mean over the utterances of the workdir's training speakers (their real
  recordings: speed-perturbed copies are not audio a user will bring; at most
  `train.centring_utterances` of them, drawn with the seed), for checkpoint `step`
  (default: the latest). Returns (mean, step, number of utterances)."""
  config = workdir_lib.load_config(workdir)
  corpora = input_pipeline.prepare_corpora(config)
  trained = set(workdir_lib.load_speakers(workdir)["train"])
  speakers = sorted({s for c in corpora for s in c.speakers} & trained)
  if not speakers:
    raise ValueError(f"none of {workdir}'s training speakers are in {config.data.root!r}")
  encoder = Encoder.from_workdir(workdir, step, centring=False)
  chosen = input_pipeline.select_utterances(corpora, speakers,
                                            max_utterances=config.train.centring_utterances,
                                            seed=config.seed)
  total = 0.0
  for start in range(0, len(chosen), chunk):  # Read and embedded a chunk at a time.
    part = input_pipeline.read_selected(corpora, chosen[start:start + chunk])
    total = total + scoring.unit_rows(encoder.embed_features(part.features)).sum(0)
  return total / len(chosen), encoder.step, len(chosen)


def define_flags() -> None:
  from absl import flags
  flags.DEFINE_string("workdir", None, "Training workdir (or an export).", required=True)
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")


def main(argv) -> None:
  from absl import flags
  cli.no_arguments(argv)
  cli.use_compilation_cache()
  mean, step, count = fit_workdir(flags.FLAGS.workdir, flags.FLAGS.step)
  path = workdir_lib.save_mean(flags.FLAGS.workdir, mean, step)
  print(f"wrote {path}: mean of {count} training utterances, step {step}")


def run() -> None:
  cli.run(main, define_flags)


if __name__ == "__main__":
  run()
