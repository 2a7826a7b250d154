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
  return one_shot_identification_scores(cosine_matrix(embeddings), speakers, utterance_ids)


def one_shot_identification_scores(scores, speakers, utterance_ids) -> dict:
  """`one_shot_identification` from a score matrix [K, K] of every utterance against every
  other (cosines, or normalised scores such as AS-Norm's)."""
  speakers = np.asarray(speakers)
  order = np.argsort(np.asarray(utterance_ids), kind="mergesort")
  enrolled, enrol_rows = np.unique(speakers[order], return_index=True)
  enrol_rows = order[enrol_rows]
  test_rows = np.setdiff1d(np.arange(len(speakers)), enrol_rows)
  if len(test_rows) == 0:
    return {"identification_accuracy": None, "num_identification_trials": 0}
  sims = np.asarray(scores)[np.ix_(test_rows, enrol_rows)]
  predicted = enrolled[np.argmax(sims, axis=1)]
  return {"identification_accuracy": float(np.mean(predicted == speakers[test_rows])),
          "num_identification_trials": int(len(test_rows))}


# --- calibration quality ------------------------------------------------------------


def detection_cost(scores, labels, threshold: float, p_target: float = 0.01,
                   c_miss: float = 1.0, c_fa: float = 1.0) -> float:
  """Normalised detection cost (NIST SRE) of accepting `score >= threshold`: the actual
  DCF when `threshold` was chosen before seeing these trials."""
  scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
  if labels.all() or not labels.any():
    raise ValueError("need both target and non-target trials")
  accept = scores >= threshold
  cost = c_miss * p_target * np.mean(~accept[labels]) + c_fa * (1 - p_target) * np.mean(
      accept[~labels])
  return float(cost / min(c_miss * p_target, c_fa * (1 - p_target)))


def cllr(llrs, labels) -> float:
  """The log-likelihood-ratio cost (Brümmer & du Preez 2006), in bits: 0 for perfect
  LLRs, 1 for LLRs that say nothing (all 0), more for misleading ones.

    Cllr = (mean_targets log2(1 + e^-llr) + mean_non-targets log2(1 + e^llr)) / 2
  """
  llrs, labels = np.asarray(llrs, np.float64), np.asarray(labels, bool)
  if labels.all() or not labels.any():
    raise ValueError("need both target and non-target trials")
  target = np.mean(np.logaddexp(0.0, -llrs[labels]))
  nontarget = np.mean(np.logaddexp(0.0, llrs[~labels]))
  return float((target + nontarget) / (2 * np.log(2)))


def pav_llrs(scores, labels) -> np.ndarray:
  """The LLRs of the best monotonic map of `scores` on these trials (pool adjacent
  violators, as BOSARIS's `opt_loglr`), one per trial; equal scores get equal LLRs.

  Isotonic regression of the labels on the scores is the posterior probability under the
  empirical prior; its log-odds minus the prior's log-odds is the LLR. scipy's
  `isotonic_regression` does the pooling, on one weighted point per distinct score so
  ties are kept together. +-inf where a pool holds a single class.
  """
  scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
  positives, negatives = labels.sum(), (~labels).sum()
  if positives == 0 or negatives == 0:
    raise ValueError("need both target and non-target trials")
  from scipy.optimize import isotonic_regression  # scipy >= 1.12.
  values, group = np.unique(scores, return_inverse=True)
  counts = np.bincount(group, minlength=len(values)).astype(np.float64)
  targets = np.bincount(group, weights=labels, minlength=len(values))
  posterior = isotonic_regression(targets / counts, weights=counts).x
  posterior = np.clip(posterior, 0.0, 1.0)  # Pools' means are in [0, 1] up to rounding.
  with np.errstate(divide="ignore"):
    log_odds = np.log(posterior) - np.log1p(-posterior)
  return (log_odds - np.log(positives / negatives))[group]


def min_cllr(scores, labels) -> float:
  """Cllr after the best monotonic calibration of `scores` on these trials (PAV): the
  discrimination part of Cllr; `cllr - min_cllr` is what calibration loses."""
  llrs, labels = pav_llrs(scores, labels), np.asarray(labels, bool)
  # A pool of one class has an infinite LLR of the right sign: its cost is 0, not nan.
  target = np.logaddexp(0.0, -llrs[labels])
  nontarget = np.logaddexp(0.0, llrs[~labels])
  return float((np.mean(target) + np.mean(nontarget)) / (2 * np.log(2)))


# --- operating points -------------------------------------------------------------

# False-accept rates at which reports list the threshold (1-2-5 steps).
FAR_GRID = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def threshold_at_far(scores, labels, far: float) -> tuple[float, float, float]:
  """(threshold, false-accept rate, false-reject rate) of the most accepting threshold
  whose false-accept rate on these trials is at most `far`, accepting `score >=
  threshold`. The threshold is +inf when even the highest non-target score is too many."""
  if not 0 <= far <= 1:
    raise ValueError(f"a false-accept rate is in [0, 1], got {far}")
  fpr, fnr, thresholds = roc(scores, labels)
  i = int(np.searchsorted(fpr, far * (1 + 1e-9), side="right")) - 1  # fpr ascends.
  return float(thresholds[i]), float(fpr[i]), float(fnr[i])


def far_table(scores, labels, fars=FAR_GRID) -> list[list[float]]:
  """[far, threshold, false-reject rate] at each target false-accept rate that these
  trials can measure (at least one false accept: far >= 1 / non-target trials)."""
  negatives = int(np.sum(~np.asarray(labels, bool)))
  table = []
  for far in fars:
    if far * negatives >= 1:
      threshold, _, frr = threshold_at_far(scores, labels, far)
      if np.isfinite(threshold):
        table.append([float(far), threshold, frr])
  return table


# --- open-set identification -------------------------------------------------------


def open_set_identification(embeddings, speakers, utterance_ids, threshold: float) -> dict:
  """Open-set identification at a cosine threshold.

  Every other speaker (sorted ids: the 1st, 3rd, ...) is enrolled with its first utterance
  (sorted utterance ids); every other utterance probes the enrolled set: its best match
  is accepted when its score is at least `threshold`. Rates:
    * open_set_false_alarm_rate: probes of unenrolled speakers accepted as someone;
    * open_set_miss_rate: probes of enrolled speakers rejected (best score below);
    * open_set_confusion_rate: probes of enrolled speakers accepted as someone else;
    * open_set_correct_rate: 1 - miss - confusion.
  A rate is None when it has no probe.
  """
  speakers = np.asarray(speakers)
  names = np.unique(speakers)
  enrolled = names[::2]
  order = np.argsort(np.asarray(utterance_ids), kind="mergesort")
  first = order[np.unique(speakers[order], return_index=True)[1]]  # Per name, sorted.
  enrol_rows = first[::2]
  probes = np.setdiff1d(np.arange(len(speakers)), enrol_rows)
  known = np.isin(speakers[probes], enrolled)
  sims = cosine_matrix(np.asarray(embeddings)[probes], np.asarray(embeddings)[enrol_rows])
  best = np.argmax(sims, axis=1)
  accepted = sims[np.arange(len(probes)), best] >= threshold
  right = enrolled[best] == speakers[probes]

  def rate(hits, among):
    return float(np.mean(hits[among])) if among.any() else None

  return {"open_set_threshold": float(threshold),
          "open_set_enrolled_speakers": int(len(enrolled)),
          "open_set_known_probes": int(known.sum()),
          "open_set_unknown_probes": int((~known).sum()),
          "open_set_false_alarm_rate": rate(accepted, ~known),
          "open_set_miss_rate": rate(~accepted, known),
          "open_set_confusion_rate": rate(accepted & ~right, known),
          "open_set_correct_rate": rate(accepted & right, known)}


# --- confidence intervals: a bootstrap over speakers --------------------------------


def resample_counts(num_speakers: int, resamples: int, seed: int = 0) -> np.ndarray:
  """[resamples, num_speakers]: how often each speaker is drawn when `num_speakers` are
  drawn with replacement, for each resample (seeded)."""
  rng = np.random.default_rng(seed)
  draws = rng.integers(0, num_speakers, size=(resamples, num_speakers))
  flat = draws + num_speakers * np.arange(resamples)[:, None]
  return np.bincount(flat.ravel(), minlength=resamples * num_speakers).reshape(
      resamples, num_speakers)


def trial_weights(counts, speaker_a, speaker_b) -> np.ndarray:
  """[R, T] weight of each trial in each resample of speakers (`counts` [R, S]; the trials'
  speakers as indices [T]). A speaker drawn k times is k distinct speakers: each of its
  same-speaker trials counts k times, a trial against a speaker drawn j times counts k * j
  times, and the copies are never scored against each other."""
  counts = np.asarray(counts, np.float64)
  speaker_a, speaker_b = np.asarray(speaker_a), np.asarray(speaker_b)
  same = speaker_a == speaker_b
  return np.where(same, counts[:, speaker_a], counts[:, speaker_a] * counts[:, speaker_b])


class WeightedTrials:
  """Trials scored once, for EER and minDCF under many weightings (bootstrap resamples).

  The ROC is a polyline through one point per distinct score, but along a run of scores
  that are all non-targets it is one horizontal line (and along targets only, one
  vertical line): the polyline through the ends of such runs (and every score that both
  classes share) is the same curve. EER (where it crosses fpr == fnr) and minDCF (a
  linear cost, least at a corner) need only these corners, a few per target trial, so a
  weighting costs one cumulative sum over the non-target trials and work on the corners.
  """

  def __init__(self, scores, labels):
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    if labels.all() or not labels.any():
      raise ValueError("need both target and non-target trials")
    self.order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[self.order], labels[self.order]
    group_end = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # Per distinct score.
    group_targets = np.cumsum(labels)[group_end]
    group_targets = np.diff(np.r_[0, group_targets])
    group_size = np.diff(np.r_[-1, group_end])
    kind = np.where(group_targets == 0, 0, np.where(group_targets == group_size, 1, 2))
    # A corner ends each run of one kind (0: non-targets only, 1: targets only); a score
    # both classes share (2) is a corner of its own.
    last = np.r_[(kind[1:] != kind[:-1]) | (kind[:-1] == 2), True]
    corner_end = group_end[last]
    self.targets_before = np.cumsum(labels)[corner_end]  # Through each corner.
    self.nontargets_before = corner_end + 1 - self.targets_before
    self.labels = labels

  def rates(self, weights):
    """(fpr, fnr) [R, corners + 1] under `weights` [R, T] (trials in the order given),
    starting from (0, 1) at accepting nothing; nan rows where a class weighs nothing."""
    weights = np.atleast_2d(np.asarray(weights, np.float64))[:, self.order]
    return self._rates(weights[:, self.labels], weights[:, ~self.labels])

  def _rates(self, target_weights, nontarget_weights):
    rows = len(target_weights)
    tp = np.c_[np.zeros(rows), np.cumsum(target_weights, axis=1)][:, self.targets_before]
    fp = np.c_[np.zeros(rows), np.cumsum(nontarget_weights, axis=1)][:, self.nontargets_before]
    with np.errstate(invalid="ignore", divide="ignore"):
      fnr, fpr = 1.0 - tp / tp[:, -1:], fp / fp[:, -1:]
    return np.c_[np.zeros(rows), fpr], np.c_[np.ones(rows), fnr]


def eer_rows(fpr, fnr) -> np.ndarray:
  """EER [R] of ROC polylines (rows of `roc`-like rates, from (0, 1) to (1, 0)): where the
  line between the last point with fnr > fpr and the next crosses fpr == fnr; nan rows
  stay nan."""
  fpr, fnr = np.atleast_2d(fpr), np.atleast_2d(fnr)
  diff = fnr - fpr
  valid = np.isfinite(diff).all(axis=1)
  i = np.argmax(np.where(valid[:, None], diff <= 0, True), axis=1)  # First at/past crossing.
  r, before = np.arange(len(diff)), np.maximum(i - 1, 0)
  with np.errstate(invalid="ignore", divide="ignore"):
    t = np.where((i == 0) | (diff[r, i] == 0), 1.0,
                 diff[r, before] / (diff[r, before] - diff[r, i]))
  return np.where(valid, fpr[r, before] + t * (fpr[r, i] - fpr[r, before]), np.nan)


def min_dcf_rows(fpr, fnr, p_target: float = 0.01) -> np.ndarray:
  """minDCF [R] of rows of rates (unit costs)."""
  cost = p_target * np.atleast_2d(fnr) + (1 - p_target) * np.atleast_2d(fpr)
  return cost.min(axis=1) / min(p_target, 1 - p_target)


def weighted_eer_min_dcf(scores, labels, weights, p_target: float = 0.01):
  """EER and minDCF ([R] each) of the trials under each row of `weights` [R, T] (a trial
  of weight w counts as w copies of it; all ones give `eer` and `min_dcf`). nan where a
  row leaves no target or no non-target trial."""
  fpr, fnr = WeightedTrials(scores, labels).rates(weights)
  return eer_rows(fpr, fnr), min_dcf_rows(fpr, fnr, p_target)


def bootstrap_samples(score_matrix, speakers, utterance_ids, counts,
                      p_target: float = 0.01) -> dict:
  """{"eer", "min_dcf", "identification_accuracy"}: [R] values, one per resample of the
  speakers (`counts` [R, S], speakers in sorted order), from a matrix [K, K] of every
  utterance scored against every other (`speaker_bootstrap` says how); the same
  `counts` for two scorings of the same utterances give paired samples."""
  speakers = np.asarray(speakers)
  names, index = np.unique(speakers, return_inverse=True)
  counts = np.asarray(counts)
  if counts.ndim != 2 or counts.shape[1] != len(names):
    raise ValueError(f"need resample counts [R, {len(names)}], got shape {counts.shape}")
  score_matrix = np.asarray(score_matrix)
  a, b = np.triu_indices(len(speakers), k=1)
  scores, labels = score_matrix[a, b], index[a] == index[b]
  trials = WeightedTrials(scores, labels)
  a, b = index[a][trials.order], index[b][trials.order]
  target_speaker = a[trials.labels]
  nontarget_a, nontarget_b = a[~trials.labels], b[~trials.labels]
  # float32 sums of whole numbers are exact below 2**24, far above these totals.
  dtype = np.float32 if len(scores) < 2**22 else np.float64
  chunk = max(1, int(2_000_000 // max(len(scores), 1)))
  eers, dcfs = [], []
  for start in range(0, len(counts), chunk):
    c = counts[start:start + chunk].astype(dtype)
    fpr, fnr = trials._rates(c[:, target_speaker], c[:, nontarget_a] * c[:, nontarget_b])
    eers.append(eer_rows(fpr, fnr))
    dcfs.append(min_dcf_rows(fpr, fnr, p_target))
  samples = {"eer": np.concatenate(eers), "min_dcf": np.concatenate(dcfs),
             "identification_accuracy": None}
  order = np.argsort(np.asarray(utterance_ids), kind="mergesort")
  enrol_rows = order[np.unique(index[order], return_index=True)[1]]  # One per speaker, sorted.
  test_rows = np.setdiff1d(np.arange(len(speakers)), enrol_rows)
  if len(test_rows):
    own = index[test_rows]
    right = np.argmax(score_matrix[np.ix_(test_rows, enrol_rows)], axis=1) == own
    tests = np.bincount(own, minlength=len(names))  # Per speaker.
    hits = np.bincount(own, weights=right, minlength=len(names))
    with np.errstate(invalid="ignore", divide="ignore"):
      samples["identification_accuracy"] = (counts @ hits) / (counts @ tests)
  return samples


def percentile_interval(values, level: float = 0.95) -> list[float] | None:
  """[low, high]: the central `level` of `values` (nan ignored); None when all are nan."""
  if values is None or np.isnan(values).all():
    return None
  tail = 100 * (1 - level) / 2
  return [float(v) for v in np.nanpercentile(values, [tail, 100 - tail])]


def speaker_bootstrap(embeddings, speakers, utterance_ids, resamples: int = 1000,
                      seed: int = 0, p_target: float = 0.01, level: float = 0.95,
                      score_matrix=None) -> dict:
  """Percentile confidence intervals of EER, minDCF and one-shot identification accuracy
  (eer_ci, min_dcf_ci, identification_accuracy_ci) from a bootstrap over speakers:
  `resamples` times, draw as many speakers as there are with replacement and recompute
  each number from the trials among them (all pairs, `trial_weights`). Trials of one
  speaker are not independent, so resampling trials would give intervals far too narrow.
  Vectorised: the trials are sorted once and each resample is a weighted cumulative sum
  over the non-target trials, in chunks that bound memory. Cosine scores of `embeddings`
  unless a `score_matrix` [K, K] is given.

  Identification keeps every speaker enrolled and resamples the test utterances by
  speaker: a resample holds only about 63 % distinct speakers, and choosing among fewer
  is easier, so identifying among the drawn speakers alone would shift the interval
  above the number it is meant to qualify (on 200 synthetic speakers it no longer
  contained it)."""
  if resamples < 1:
    raise ValueError(f"need at least one resample, got {resamples}")
  counts = resample_counts(len(np.unique(np.asarray(speakers))), resamples, seed)
  matrix = cosine_matrix(embeddings) if score_matrix is None else score_matrix
  samples = bootstrap_samples(matrix, speakers, utterance_ids, counts, p_target)
  report = {f"{k}_ci": percentile_interval(v, level) for k, v in samples.items()}
  report.update({"bootstrap_resamples": int(resamples), "bootstrap_seed": int(seed),
                 "bootstrap_level": float(level)})
  return report
