"""The scoring back end: pure numpy functions from embeddings to scores.

Centring: a speaker embedding trained on a few hundred speakers keeps a large component
shared by every utterance (the "average voice" of its training set, plus the recording
conditions). Cosine scores between any two utterances are inflated by it, which hides the
speaker differences. Subtracting the mean embedding of the training utterances and
renormalising (the standard first step of a speaker-recognition back end) removes it. The
mean is fitted on training speakers only (hive/centring.py), so it never sees dev or test
speakers.
"""

from __future__ import annotations

import numpy as np


def unit_rows(x) -> np.ndarray:
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


def mean_problem(mean, embed_dim: int) -> str | None:
  """Why `mean` cannot centre `embed_dim`-d embeddings, or None when it can."""
  mean = np.asarray(mean)
  if mean.shape != (embed_dim,) or not np.all(np.isfinite(mean)):
    return f"expected a finite mean embedding of shape ({embed_dim},), got shape {mean.shape}"
  if np.linalg.norm(mean) >= 1.0 - 1e-6:  # Would leave nothing of some embeddings.
    return f"the mean of unit vectors must have norm < 1, got {np.linalg.norm(mean):.4f}"
  return None
