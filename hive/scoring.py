"""The scoring back end: pure numpy functions from embeddings to scores.

Centring: a speaker embedding trained on a few hundred speakers keeps a large component
shared by every utterance (the "average voice" of its training set, plus the recording
conditions). Cosine scores between any two utterances are inflated by it, which hides the
speaker differences. Subtracting the mean embedding of the training utterances and
renormalising (the standard first step of a speaker-recognition back end) removes it. The
mean is fitted on training speakers only (hive/centring.py), so it never sees dev or test
speakers.

Calibration: a cosine score says which of two trials is more likely the same speaker, not
how likely; its meaning changes with the model and the data. A logistic calibration maps
it to a log-likelihood ratio, llr = slope * score + offset, fitted on held-out trials
with the prior-weighted logistic loss of BOSARIS / NIST SRE practice (Brümmer). With
LLRs, the decision for a prior is fixed by Bayes' rule (`bayes_threshold`), with no
threshold to tune.

AS-Norm (adaptive symmetric score normalisation, Matejka et al. 2017): each side of a
trial is scored against a cohort of training-speaker embeddings; the mean and standard
deviation of its `top_k` highest cohort scores z-normalise the trial score from that
side, and the two are averaged. It removes each utterance's own tendency to score high
or low against everyone.
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


# --- calibration -------------------------------------------------------------------


def logit(p: float) -> float:
  return float(np.log(p) - np.log1p(-p))


def fit_calibration(scores, labels, prior: float = 0.5) -> tuple[float, float]:
  """(slope, offset) of the LLR `slope * score + offset` that minimises the prior-weighted
  logistic loss on these trials (BOSARIS `train_linear_calibration`):

    prior * mean_targets log(1 + e^-(llr + logit(prior)))
      + (1 - prior) * mean_non-targets log(1 + e^(llr + logit(prior)))

  which is Cllr at prior 0.5. That is a logistic regression with class weights prior /
  targets and (1 - prior) / non-targets; scikit-learn's fits it, and its intercept is
  offset + logit(prior). Its L2 penalty is made negligible (C = 1e6 against weights
  summing to the number of trials) but keeps the slope finite when the scores separate
  the classes, where the unpenalised fit has no finite optimum.
  """
  from sklearn.linear_model import LogisticRegression  # Only callers that fit pay for it.
  scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
  targets, nontargets = int(labels.sum()), int((~labels).sum())
  if targets == 0 or nontargets == 0:
    raise ValueError("calibration needs both target and non-target trials")
  if not 0 < prior < 1:
    raise ValueError(f"the calibration prior must be in (0, 1), got {prior}")
  weights = np.where(labels, prior / targets, (1 - prior) / nontargets) * len(scores)
  model = LogisticRegression(C=1e6, tol=1e-10, max_iter=10_000)
  model.fit(scores[:, None], labels, sample_weight=weights)
  return float(model.coef_[0, 0]), float(model.intercept_[0]) - logit(prior)


def to_llr(scores, slope: float, offset: float) -> np.ndarray:
  """Calibrated log-likelihood ratios of scores."""
  return slope * np.asarray(scores, np.float64) + offset


def bayes_threshold(p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
  """The LLR at and above which accepting costs less than rejecting, for a prior
  p_target and costs c_miss, c_fa: log(c_fa (1 - p) / (c_miss p)) (-logit(p) for unit
  costs)."""
  if not 0 < p_target < 1:
    raise ValueError(f"a prior is in (0, 1), got {p_target}")
  return float(np.log(c_fa / c_miss) - logit(p_target))


def score_at_llr(llr: float, slope: float, offset: float) -> float:
  """The score whose calibrated LLR is `llr` (the inverse of `to_llr`; slope > 0)."""
  if not slope > 0:
    raise ValueError(f"a calibration must increase with the score, got slope {slope}")
  return float((llr - offset) / slope)


# --- AS-Norm -----------------------------------------------------------------------


def speaker_means(embeddings, speakers) -> tuple[np.ndarray, np.ndarray]:
  """(names [S], unit mean embedding [S, D] of each speaker's unit embeddings): a cohort."""
  speakers = np.asarray(speakers)
  names, index = np.unique(speakers, return_inverse=True)
  sums = np.zeros((len(names), np.shape(embeddings)[1]))
  np.add.at(sums, index, unit_rows(embeddings))
  return names, unit_rows(sums)


def asnorm_stats(cohort_scores, top_k: int) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std) [N] of each row's `top_k` highest cohort scores (`cohort_scores` [N, C]:
  utterances against the cohort); the whole cohort when it is smaller (S-norm)."""
  cohort_scores = np.asarray(cohort_scores, np.float64)
  if cohort_scores.ndim != 2 or cohort_scores.shape[1] < 2:
    raise ValueError(f"AS-Norm needs scores against a cohort of 2 or more, got shape "
                     f"{cohort_scores.shape}")
  if top_k < 2:
    raise ValueError(f"AS-Norm needs top_k >= 2, got {top_k}")
  k = min(int(top_k), cohort_scores.shape[1])
  top = -np.partition(-cohort_scores, k - 1, axis=1)[:, :k]
  return top.mean(axis=1), np.maximum(top.std(axis=1), 1e-12)


def asnorm(scores, stats_a, stats_b) -> np.ndarray:
  """AS-Norm of a score matrix [A, B] (side a against side b), each side's (mean, std)
  from `asnorm_stats`: ((s - mean_a) / std_a + (s - mean_b) / std_b) / 2."""
  scores = np.asarray(scores, np.float64)
  (mean_a, std_a), (mean_b, std_b) = stats_a, stats_b
  return 0.5 * ((scores - np.asarray(mean_a)[:, None]) / np.asarray(std_a)[:, None]
                + (scores - np.asarray(mean_b)[None, :]) / np.asarray(std_b)[None, :])
