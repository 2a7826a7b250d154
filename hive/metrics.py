"""Verification and identification metrics: pure numpy functions of scores."""

from __future__ import annotations

import numpy as np


def roc(scores, labels):
  """False-positive and false-negative rates at every distinct threshold.

  Returns (fpr, fnr, thresholds), thresholds descending; accepting `score >=
  threshold`. The first point accepts nothing (fpr 0, fnr 1).
  """
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels, bool)
  positives, negatives = labels.sum(), (~labels).sum()
  if positives == 0 or negatives == 0:
    raise ValueError("need both target and non-target trials")
  order = np.argsort(-scores, kind="mergesort")
  scores, labels = scores[order], labels[order]
  distinct = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # Last index per value.
  tp = np.cumsum(labels)[distinct]
  fp = np.cumsum(~labels)[distinct]
  fpr = np.r_[0.0, fp / negatives]
  fnr = np.r_[1.0, 1.0 - tp / positives]
  thresholds = np.r_[np.inf, scores[distinct]]
  return fpr, fnr, thresholds


def eer(scores, labels) -> tuple[float, float]:
  """Equal error rate and its threshold.

  The ROC is piecewise linear between operating points; the EER is where that
  line crosses fpr == fnr.
  """
  fpr, fnr, thresholds = roc(scores, labels)
  diff = fnr - fpr  # Decreasing from 1 to -1 along the ROC.
  i = int(np.flatnonzero(diff <= 0)[0])  # First point at or past the crossing.
  if diff[i] == 0 or i == 0:
    return float(fpr[i]), float(thresholds[i])
  t = diff[i - 1] / (diff[i - 1] - diff[i])
  rate = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
  threshold = thresholds[i] if not np.isfinite(thresholds[i - 1]) else (
      thresholds[i - 1] + t * (thresholds[i] - thresholds[i - 1]))
  return float(rate), float(threshold)


def min_dcf(scores, labels, p_target: float = 0.01, c_miss: float = 1.0,
            c_fa: float = 1.0) -> tuple[float, float]:
  """Minimum normalised detection cost (NIST SRE) and its threshold."""
  fpr, fnr, thresholds = roc(scores, labels)
  cost = c_miss * p_target * fnr + c_fa * (1 - p_target) * fpr
  cost /= min(c_miss * p_target, c_fa * (1 - p_target))
  i = int(np.argmin(cost))
  return float(cost[i]), float(thresholds[i])


def cosine_matrix(a, b=None):
  a = np.asarray(a, np.float64)
  a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
  if b is None:
    return a @ a.T
  b = np.asarray(b, np.float64)
  b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
  return a @ b.T


def all_pairs_trials(embeddings, speakers):
  """Cosine scores and same-speaker labels of every unordered pair of embeddings."""
  sims = cosine_matrix(embeddings)
  speakers = np.asarray(speakers)
  i, j = np.triu_indices(len(speakers), k=1)
  return sims[i, j], speakers[i] == speakers[j]


def verification(embeddings, speakers, p_target: float = 0.01) -> dict:
  """EER, minDCF and their thresholds over all pairs (cosine scoring)."""
  scores, labels = all_pairs_trials(embeddings, speakers)
  rate, eer_threshold = eer(scores, labels)
  dcf, dcf_threshold = min_dcf(scores, labels, p_target)
  return {"eer": rate, "eer_threshold": eer_threshold, "min_dcf": dcf,
          "min_dcf_threshold": dcf_threshold, "num_trials": int(len(scores)),
          "num_target_trials": int(labels.sum())}


def one_shot_identification(embeddings, speakers, utterance_ids) -> dict:
  """Closed-set one-shot identification accuracy.

  Each speaker is enrolled with its first utterance (by sorted utterance id);
  every other utterance goes to the most similar enrolled speaker.
  """
  speakers = np.asarray(speakers)
  order = np.argsort(np.asarray(utterance_ids), kind="mergesort")
  enrolled, enrol_rows = np.unique(speakers[order], return_index=True)
  enrol_rows = order[enrol_rows]
  test_rows = np.setdiff1d(np.arange(len(speakers)), enrol_rows)
  if len(test_rows) == 0:
    return {"identification_accuracy": None, "num_identification_trials": 0}
  sims = cosine_matrix(np.asarray(embeddings)[test_rows], np.asarray(embeddings)[enrol_rows])
  predicted = enrolled[np.argmax(sims, axis=1)]
  return {"identification_accuracy": float(np.mean(predicted == speakers[test_rows])),
          "num_identification_trials": int(len(test_rows))}
