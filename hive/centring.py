"""Embedding centring: subtract the training speakers' mean embedding, renormalise.

    python -m hive.centring --workdir=DIR [--step=N]

A speaker embedding trained on a few hundred speakers keeps a large component
shared by every utterance (the "average voice" of its training set, plus the
recording conditions). Cosine scores between any two utterances are inflated by
it, which hides the speaker differences. Subtracting the mean embedding of the
training utterances and renormalising (the standard first step of a
speaker-recognition back end) removes it. It is fitted on training speakers
only, so it never sees dev or test speakers.

`hive.main` fits it when training ends and writes DIR/embedding_mean.npz (the
mean and the checkpoint step it was fitted for); `hive.export` copies it;
`hive.Encoder` applies it when it was fitted for the step being loaded, so every
command's embeddings and cosine scores are centred. This command (re)fits it
for a workdir, e.g. one trained before it existed or another step.
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np
from absl import logging
from etils import epath

MEAN_FILE = "embedding_mean.npz"


class BadMeanFile(ValueError):
  """A workdir's mean-embedding file that cannot be used; the message names it."""


def unit_rows(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def fit_mean(embeddings) -> np.ndarray:
  """The mean of unit-normalised embeddings [K, D] -> [D]."""
  embeddings = np.asarray(embeddings, np.float64)
  if embeddings.ndim != 2 or len(embeddings) == 0:
    raise ValueError(f"need embeddings [K, D] with K >= 1, got shape {embeddings.shape}")
  return unit_rows(embeddings).mean(0)


def centre(embeddings, mean) -> np.ndarray:
  """Unit-normalised embeddings minus `mean`, renormalised: [K, D] -> [K, D] float32."""
  return unit_rows(unit_rows(embeddings) - np.asarray(mean, np.float64)).astype(np.float32)


def digest(mean) -> str:
  """A short digest that tells two means apart ("none" for no centring)."""
  if mean is None:
    return "none"
  return hashlib.sha256(np.asarray(mean, np.float32).tobytes()).hexdigest()[:16]


def save(workdir, mean, step: int) -> epath.Path:
  path = epath.Path(workdir) / MEAN_FILE
  tmp = path.with_name("tmp." + path.name)
  with tmp.open("wb") as f:
    np.savez(f, mean=np.asarray(mean, np.float32), step=np.int64(step))
  tmp.replace(path)  # Atomic: a reader never sees half a file.
  return path


def _read(path: epath.Path) -> tuple[np.ndarray, int]:
  try:
    with path.open("rb") as file, np.load(file, allow_pickle=False) as f:
      return np.asarray(f["mean"]), int(f["step"])
  except (ValueError, OSError, KeyError, TypeError) as e:
    # numpy's own message for a non-.npz file talks about pickles: not helpful here.
    why = "not a .npz file" if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
    raise BadMeanFile(f"{path}: not a hive mean-embedding file ({why}); refit it with "
                      "python -m hive.centring --workdir=...") from None


def fitted_step(workdir) -> int | None:
  """The checkpoint step the workdir's mean was fitted for (None: no mean)."""
  path = epath.Path(workdir) / MEAN_FILE
  return _read(path)[1] if path.is_file() else None


def load(workdir, embed_dim: int, step: int) -> np.ndarray | None:
  """The workdir's mean embedding [embed_dim] for checkpoint `step`, or None when it
  has none (or one fitted for another step, which is logged)."""
  path = epath.Path(workdir) / MEAN_FILE
  if not path.is_file():
    return None
  mean, fitted = _read(path)
  if fitted != step:
    logging.warning("%s was fitted for step %d, not %d: embeddings are not centred "
                    "(python -m hive.centring --workdir=%s --step=%d fits one)",
                    path, fitted, step, workdir, step)
    return None
  if mean.shape != (embed_dim,) or not np.all(np.isfinite(mean)):
    raise BadMeanFile(f"{path}: expected a finite mean embedding of shape ({embed_dim},), got "
                      f"shape {mean.shape}; refit it with python -m hive.centring --workdir=...")
  if np.linalg.norm(mean) >= 1.0 - 1e-6:  # Would leave nothing of some embeddings.
    raise BadMeanFile(f"{path}: the mean of unit vectors must have norm < 1, got "
                      f"{np.linalg.norm(mean):.4f}")
  return mean.astype(np.float64)


def fit_workdir(workdir, step: int | None = None) -> tuple[np.ndarray, int, int]:
  """The mean over every utterance of the workdir's training speakers (their real
  recordings: speed-perturbed copies are not audio a user will bring), for checkpoint
  `step` (default: the latest). Returns (mean, step, number of utterances)."""
  from hive import checkpoint, input_pipeline
  from hive.encoder import Encoder
  config = checkpoint.load_config(workdir)
  train_speakers = set(checkpoint.load_speakers(workdir)["train"])
  examples, _, _ = input_pipeline.load_examples(config.data)
  keep = sorted(set(examples.speakers) & train_speakers)
  if not keep:
    raise ValueError(f"none of {workdir}'s training speakers are in {config.data.root!r}")
  examples = examples.select_speakers(keep)
  encoder = Encoder.from_workdir(workdir, step, centring=False)
  mean = fit_mean(encoder.embed_features(examples.features))
  return mean, encoder.step, len(examples.utterance_ids)


def main(argv) -> int:
  from absl import flags
  from hive import logs
  del argv
  from hive.encoder import use_compilation_cache
  logs.quiet_libraries()
  use_compilation_cache()
  FLAGS = flags.FLAGS
  try:
    mean, step, count = fit_workdir(FLAGS.workdir, FLAGS.step)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  path = save(FLAGS.workdir, mean, step)
  print(f"wrote {path}: mean of {count} training utterances, step {step}")
  return 0


if __name__ == "__main__":
  from absl import app, flags
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")  # TF only reads the prepared features.
  flags.DEFINE_string("workdir", None, "Training workdir (or an export).", required=True)
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
  app.run(main)
