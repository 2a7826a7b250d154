"""Verification and identification metrics: known answers and scikit-learn's ROC."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from hive import metrics


def _trials(targets, nontargets):
  scores = np.r_[np.asarray(targets, float), np.asarray(nontargets, float)]
  labels = np.r_[np.ones(len(targets), bool), np.zeros(len(nontargets), bool)]
  return scores, labels


def _phi(x):
  return 0.5 * math.erfc(-x / math.sqrt(2))


# ---------------------------------------------------------------- EER by hand


def test_eer_perfectly_separated_is_zero():
  scores, labels = _trials([0.6, 0.7, 0.8, 0.9], [0.1, 0.2, 0.3, 0.4])
  rate, threshold = metrics.eer(scores, labels)
  assert rate == 0.0
  assert 0.4 < threshold <= 0.6  # Accepting >= threshold separates the classes.
  dcf, _ = metrics.min_dcf(scores, labels)
  assert dcf == 0.0


def test_eer_fully_reversed_is_one():
  scores, labels = _trials([0.1, 0.2, 0.3, 0.4], [0.6, 0.7, 0.8, 0.9])
  assert metrics.eer(scores, labels)[0] == pytest.approx(1.0)


def test_eer_interleaved_scores():
  # Descending: .8N .7T .6N .5T .4N .3T .2N .1T. Operating points (fpr, fnr) accepting >= t:
  #   inf (0, 1); .8 (.25, 1); .7 (.25, .75); .6 (.5, .75); .5 (.5, .5) <- fpr == fnr.
  scores, labels = _trials([0.1, 0.3, 0.5, 0.7], [0.2, 0.4, 0.6, 0.8])
  rate, threshold = metrics.eer(scores, labels)
  assert rate == pytest.approx(0.5)
  assert threshold == pytest.approx(0.5)
  # p_target 0.5: cost = fnr + fpr, which is 1 at the first point and never lower.
  dcf, dcf_threshold = metrics.min_dcf(scores, labels, p_target=0.5)
  assert dcf == pytest.approx(1.0) and dcf_threshold == np.inf
  # Shifted the other way (targets above each non-target): .8T .7N .6T .5N .4T ...
  #   inf (0, 1); .8 (0, .75); .7 (.25, .75); .6 (.25, .5); .5 (.5, .5) -> again 0.5
  # along the horizontal step from (.25, .5) to (.5, .5).
  scores, labels = _trials([0.2, 0.4, 0.6, 0.8], [0.1, 0.3, 0.5, 0.7])
  assert metrics.eer(scores, labels)[0] == pytest.approx(0.5)


def test_eer_interpolated_crossing_by_hand():
  # Targets {0.9, 0.5}, non-targets {0.5, 0.1}; a target and a non-target tie at 0.5.
  # Points: inf (0, 1), diff 1; 0.9 (0, 0.5), diff 0.5; 0.5 (0.5, 0), diff -0.5.
  # The segment from (0, .5) to (.5, 0) crosses fpr == fnr halfway: t = .5 / (.5 + .5) = .5,
  # EER = 0 + .5 * .5 = 0.25, threshold = 0.9 + .5 * (0.5 - 0.9) = 0.7.
  scores, labels = _trials([0.9, 0.5], [0.5, 0.1])
  rate, threshold = metrics.eer(scores, labels)
  assert rate == pytest.approx(0.25)
  assert threshold == pytest.approx(0.7)
  fpr, fnr, thresholds = metrics.roc(scores, labels)
  np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
  np.testing.assert_allclose(fnr, [1, 0.5, 0, 0])
  np.testing.assert_allclose(thresholds, [np.inf, 0.9, 0.5, 0.1])


def test_eer_gaussian_scores_match_theory():
  # Targets ~ N(d', 1), non-targets ~ N(0, 1): EER = Phi(-d'/2) at threshold d'/2.
  rng = np.random.default_rng(0)
  n = 20000  # Binomial standard error of a rate near 0.16 with 20000 trials: ~0.0026.
  for d_prime in (1.0, 2.0, 3.0):
    scores, labels = _trials(rng.normal(d_prime, 1.0, n), rng.normal(0.0, 1.0, n))
    rate, threshold = metrics.eer(scores, labels)
    assert rate == pytest.approx(_phi(-d_prime / 2), abs=0.01), d_prime
    assert threshold == pytest.approx(d_prime / 2, abs=0.05), d_prime


def test_eer_is_invariant_to_trial_order():
  rng = np.random.default_rng(1)
  scores, labels = _trials(rng.normal(1, 1, 300), rng.normal(0, 1, 500))
  order = rng.permutation(len(scores))
  assert metrics.eer(scores[order], labels[order]) == metrics.eer(scores, labels)
  assert metrics.min_dcf(scores[order], labels[order]) == metrics.min_dcf(scores, labels)


# ---------------------------------------------------------------- against scikit-learn


def _sklearn_eer(scores, labels):
  """EER from sklearn's ROC: linear interpolation of the first fnr - fpr sign change."""
  fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
  fnr = 1 - tpr
  diff = fnr - fpr
  i = int(np.flatnonzero(diff <= 0)[0])
  if diff[i] == 0:
    return fpr[i]
  t = diff[i - 1] / (diff[i - 1] - diff[i])
  return fpr[i - 1] + t * (fpr[i] - fpr[i - 1])


def _sklearn_min_dcf(scores, labels, p_target):
  fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
  cost = p_target * (1 - tpr) + (1 - p_target) * fpr
  return np.min(cost) / min(p_target, 1 - p_target)


def _score_sets():
  rng = np.random.default_rng(2)
  sets = []
  for n_t, n_n, sep, decimals in [(50, 500, 1.0, None), (200, 3000, 2.5, None),
                                  (30, 40, 0.5, 1), (400, 400, 1.5, 1), (100, 1000, 0.0, 0),
                                  (1000, 9000, 2.0, 2), (5, 7, 1.0, None)]:
    scores, labels = _trials(rng.normal(sep, 1, n_t), rng.normal(0, 1, n_n))
    if decimals is not None:  # Rounding makes many ties, across the classes too.
      scores = np.round(scores, decimals)
    order = rng.permutation(len(scores))
    sets.append((scores[order], labels[order]))
  return sets


@pytest.mark.parametrize("index", range(7))
def test_roc_eer_and_min_dcf_agree_with_sklearn(index):
  scores, labels = _score_sets()[index]
  fpr, fnr, thresholds = metrics.roc(scores, labels)
  sk_fpr, sk_tpr, sk_thresholds = roc_curve(labels, scores, drop_intermediate=False)
  np.testing.assert_allclose(fpr, sk_fpr, atol=1e-12)
  np.testing.assert_allclose(fnr, 1 - sk_tpr, atol=1e-12)
  np.testing.assert_allclose(thresholds[1:], sk_thresholds[1:])
  assert metrics.eer(scores, labels)[0] == pytest.approx(_sklearn_eer(scores, labels), abs=1e-12)
  for p_target in (0.01, 0.05, 0.5):
    dcf, dcf_threshold = metrics.min_dcf(scores, labels, p_target)
    assert dcf == pytest.approx(_sklearn_min_dcf(scores, labels, p_target), abs=1e-12)
    # The returned threshold attains that cost when accepting scores >= threshold.
    accept = scores >= dcf_threshold
    cost = (p_target * np.mean(~accept[labels]) + (1 - p_target) * np.mean(accept[~labels])) / (
        min(p_target, 1 - p_target))
    assert cost == pytest.approx(dcf, abs=1e-12)


def test_min_dcf_costs():
  scores, labels = _score_sets()[0]
  fpr, fnr, _ = metrics.roc(scores, labels)
  c = 0.01 * 10 * fnr + 0.99 * 1 * fpr
  assert metrics.min_dcf(scores, labels, 0.01, c_miss=10.0)[0] == pytest.approx(
      np.min(c) / min(0.1, 0.99))


@pytest.mark.parametrize("labels", [[True, True, True], [False, False], []])
def test_roc_needs_both_classes(labels):
  scores = np.linspace(0, 1, len(labels))
  with pytest.raises(ValueError):
    metrics.roc(scores, labels)
  with pytest.raises(ValueError):
    metrics.eer(scores, labels)
  with pytest.raises(ValueError):
    metrics.min_dcf(scores, labels)


# ---------------------------------------------------------------- identification


def test_one_shot_identification_by_hand():
  # Rows in shuffled order. Enrolment (first utterance id per speaker): a0, b0, c0.
  rows = [
      ("a2", "A", [0.0, 1.0]),    # test: closest enrolled is b0 (0,1) -> wrong
      ("b1", "B", [0.2, 1.0]),    # test: closest b0 -> right
      ("c0", "C", [-1.0, 0.0]),   # C's only utterance: enrolled, never tested
      ("a0", "A", [1.0, 0.0]),    # enrolment of A
      ("b0", "B", [0.0, 1.0]),    # enrolment of B
      ("a1", "A", [1.0, 0.2]),    # test: closest a0 -> right
      ("b2", "B", [-0.2, 1.0]),   # test: cos 0.98 with b0, 0.2 with c0 -> right
  ]
  ids, speakers, embeddings = zip(*rows)
  result = metrics.one_shot_identification(np.array(embeddings), speakers, ids)
  assert result["num_identification_trials"] == 4
  assert result["identification_accuracy"] == pytest.approx(0.75)
  # Enrolling by input order instead (a2, b1, c0) would give 0 of 4 here.
  # Any reordering of the rows gives the same answer.
  order = [4, 6, 0, 2, 5, 1, 3]
  again = metrics.one_shot_identification(np.array(embeddings)[order],
                                          np.array(speakers)[order], np.array(ids)[order])
  assert again == result


def test_one_shot_identification_all_singletons():
  result = metrics.one_shot_identification(np.eye(3), ["x", "y", "z"], ["1", "2", "3"])
  assert result == {"identification_accuracy": None, "num_identification_trials": 0}


# ---------------------------------------------------------------- verification


def test_verification_counts_trials():
  counts = [3, 2, 4, 1]
  speakers = np.repeat(np.arange(4), counts)
  rng = np.random.default_rng(3)
  centres = rng.normal(size=(4, 16)) * 5
  embeddings = centres[speakers] + rng.normal(size=(len(speakers), 16)) * 0.1
  result = metrics.verification(embeddings, speakers)
  n = len(speakers)
  assert result["num_trials"] == n * (n - 1) // 2 == 45
  assert result["num_target_trials"] == sum(c * (c - 1) // 2 for c in counts) == 10
  assert result["eer"] == 0.0 and result["min_dcf"] == 0.0
  for key in ("eer_threshold", "min_dcf_threshold"):
    assert np.isfinite(result[key])


def test_all_pairs_trials():
  embeddings = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
  scores, labels = metrics.all_pairs_trials(embeddings, ["s", "s", "t"])
  np.testing.assert_allclose(scores, [1.0, 0.0, 0.0], atol=1e-12)  # pairs (0,1), (0,2), (1,2)
  np.testing.assert_array_equal(labels, [True, False, False])
