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


# ---------------------------------------------------------------- calibration quality


def test_cllr_by_hand_and_min_cllr_of_calibrated_llrs():
  # Two score values. Targets: 3 at "high", 1 at "low"; non-targets: 1 high, 3 low. The
  # calibrated LLR of "high" is log(P(high | target) / P(high | non-target)) = log(3/4 / 1/4)
  # = log 3, of "low" -log 3. Cllr = (3/4 log2(1 + 1/3) + 1/4 log2(1 + 3)) for each class:
  # 0.75 * log2(4/3) + 0.25 * 2 = 0.8113.
  scores, labels = _trials([1, 1, 1, 0], [1, 0, 0, 0])
  llrs = np.where(scores == 1, np.log(3), -np.log(3))
  expected = 0.75 * math.log2(4 / 3) + 0.25 * 2
  assert metrics.cllr(llrs, labels) == pytest.approx(expected, abs=1e-12)
  # These LLRs are already the best monotonic map of the scores (PAV finds the same).
  assert metrics.min_cllr(scores, labels) == pytest.approx(expected, abs=1e-12)
  np.testing.assert_allclose(metrics.pav_llrs(scores, labels), llrs, atol=1e-12)
  # LLRs that say nothing cost exactly 1 bit; the same LLRs with the wrong sign more.
  assert metrics.cllr(np.zeros(8), labels) == pytest.approx(1.0, abs=1e-12)
  assert metrics.cllr(-llrs, labels) > 1.0


def test_min_cllr_lower_bounds_cllr_and_ignores_monotonic_maps():
  rng = np.random.default_rng(4)
  scores, labels = _trials(rng.normal(1.5, 1, 300), rng.normal(0, 1, 2000))
  lowest = metrics.min_cllr(scores, labels)
  for slope, offset in ((1.0, 0.0), (3.0, -2.0), (0.5, 1.0), (2.5, -3.75)):
    assert lowest <= metrics.cllr(slope * scores + offset, labels)
  # Discrimination alone: any increasing map of the scores leaves it as it is.
  assert metrics.min_cllr(np.exp(scores), labels) == pytest.approx(lowest, abs=1e-12)
  assert metrics.min_cllr(7 * scores - 3, labels) == pytest.approx(lowest, abs=1e-12)
  # Perfectly separated scores: PAV gives +-inf LLRs, which cost nothing.
  assert metrics.min_cllr(*_trials([2.0, 3.0], [0.0, 1.0])) == 0.0


def test_pav_keeps_ties_together():
  # A target and a non-target share 0.5: one pool, so one LLR (posterior 1/2 against the
  # empirical prior 2/4: LLR 0).
  scores, labels = _trials([0.9, 0.5], [0.5, 0.1])
  llrs = metrics.pav_llrs(scores, labels)
  assert llrs[1] == llrs[2] == pytest.approx(0.0, abs=1e-12)
  assert llrs[0] == np.inf and llrs[3] == -np.inf


def test_detection_cost_by_hand():
  # Accepting >= 0.5: misses 1 of 4 targets (0.4), false accepts 1 of 4 (0.6).
  scores, labels = _trials([0.9, 0.8, 0.7, 0.4], [0.6, 0.3, 0.2, 0.1])
  cost = metrics.detection_cost(scores, labels, 0.5, p_target=0.1)
  assert cost == pytest.approx((0.1 * 0.25 + 0.9 * 0.25) / 0.1)
  # Whatever threshold it is given, it never beats minDCF on the same trials.
  for threshold in np.linspace(0, 1, 11):
    assert cost >= metrics.min_dcf(scores, labels, 0.1)[0] - 1e-12


# ---------------------------------------------------------------- operating points


def test_threshold_at_far_by_hand():
  # Non-targets 0.1 .. 1.0 (ten), targets 0.55, 0.85, 0.95. FAR 0.2 allows two false
  # accepts (0.9 and 1.0); the most accepting threshold that keeps it there is the next
  # score down, the target 0.85: it misses only 0.55, FRR 1/3.
  scores, labels = _trials([0.55, 0.85, 0.95], np.arange(1, 11) / 10)
  threshold, far, frr = metrics.threshold_at_far(scores, labels, 0.2)
  assert (threshold, far, frr) == (0.85, pytest.approx(0.2), pytest.approx(1 / 3))
  # 0.15 allows one false accept (1.0): down to the target 0.95, FAR 0.1, FRR 2/3.
  assert metrics.threshold_at_far(scores, labels, 0.15) == (0.95, pytest.approx(0.1),
                                                            pytest.approx(2 / 3))
  # Not even one: nothing can be accepted.
  assert metrics.threshold_at_far(scores, labels, 0.05)[0] == np.inf
  with pytest.raises(ValueError, match="in \\[0, 1\\]"):
    metrics.threshold_at_far(scores, labels, 1.5)
  # The table keeps the rates ten non-targets can measure (>= 0.1), thresholds falling:
  # FAR 0.5 lets 0.6 .. 1.0 through and reaches down to the target 0.55 (FRR 0).
  table = metrics.far_table(scores, labels)
  assert [row[0] for row in table] == [0.1, 0.2, 0.5]
  assert [row[1] for row in table] == pytest.approx([0.95, 0.85, 0.55])
  assert [row[2] for row in table] == pytest.approx([2 / 3, 1 / 3, 0.0])


def test_open_set_identification_by_hand():
  # Speakers A, B, C, D (sorted): A and C are enrolled (every other), each with its first
  # utterance by id. Probes: a1 (A), c1 (C), b0, b1 (B), d0 (D).
  rows = [("a0", "A", [1.0, 0.0, 0.0]), ("a1", "A", [0.9, 0.1, 0.0]),   # a1 -> A, 0.99
          ("c0", "C", [0.0, 1.0, 0.0]), ("c1", "C", [0.6, 0.5, 0.6]),   # c1 -> A (0.69 > 0.58)
          ("b0", "B", [0.0, 0.0, 1.0]),                                # b0: best 0.0
          ("b1", "B", [0.0, 0.95, 0.3]),                               # b1 -> C, 0.95
          ("d0", "D", [0.3, 0.0, 0.95])]                               # d0 -> A, 0.30
  ids, speakers, embeddings = zip(*rows)
  result = metrics.open_set_identification(np.array(embeddings), speakers, ids, threshold=0.5)
  assert result["open_set_enrolled_speakers"] == 2
  assert (result["open_set_known_probes"], result["open_set_unknown_probes"]) == (2, 3)
  assert result["open_set_false_alarm_rate"] == pytest.approx(1 / 3)  # b1 taken for C.
  assert result["open_set_miss_rate"] == 0.0
  assert result["open_set_confusion_rate"] == pytest.approx(0.5)  # c1 taken for A.
  assert result["open_set_correct_rate"] == pytest.approx(0.5)
  strict = metrics.open_set_identification(np.array(embeddings), speakers, ids, threshold=0.98)
  assert strict["open_set_false_alarm_rate"] == 0.0
  assert strict["open_set_miss_rate"] == pytest.approx(0.5)  # c1 (0.69) rejected, a1 kept.
  assert strict["open_set_confusion_rate"] == 0.0


# ---------------------------------------------------------------- bootstrap over speakers


def test_trial_weights_by_hand():
  # Speakers 0, 1, 2 drawn 2, 0, 1 times. Trials: (0, 0) target, (0, 1), (0, 2), (2, 2).
  counts = np.array([[2, 0, 1]])
  weights = metrics.trial_weights(counts, [0, 0, 0, 2], [0, 1, 2, 2])
  np.testing.assert_array_equal(weights, [[2, 0, 2, 1]])


@pytest.mark.parametrize("index", range(7))
def test_weighted_rates_are_rates_of_repeated_trials(index):
  scores, labels = _score_sets()[index]  # Several of them full of ties.
  eer, dcf = metrics.weighted_eer_min_dcf(scores, labels, np.ones((1, len(scores))))
  assert eer[0] == pytest.approx(metrics.eer(scores, labels)[0], abs=1e-12)
  assert dcf[0] == pytest.approx(metrics.min_dcf(scores, labels)[0], abs=1e-12)
  # Whole-number weights are the rates of the trials repeated that often.
  rng = np.random.default_rng(index)
  weights = rng.integers(0, 4, size=(3, len(scores)))
  weights[:, np.flatnonzero(labels)[0]] += 1  # Both classes keep a trial.
  weights[:, np.flatnonzero(~labels)[0]] += 1
  eers, dcfs = metrics.weighted_eer_min_dcf(scores, labels, weights, p_target=0.05)
  for row, (e, d) in enumerate(zip(eers, dcfs)):
    s, l = np.repeat(scores, weights[row]), np.repeat(labels, weights[row])
    assert e == pytest.approx(metrics.eer(s, l)[0], abs=1e-12)
    assert d == pytest.approx(metrics.min_dcf(s, l, 0.05)[0], abs=1e-12)
  # A weighting that leaves no target is nan, not an error.
  no_targets = np.where(labels, 0, 1)[None, :]
  assert np.isnan(metrics.weighted_eer_min_dcf(scores, labels, no_targets)[0]).all()


def _speakers(num_speakers, per_speaker, seed, spread=1.0):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_speakers, 16))
  speakers = np.repeat(np.arange(num_speakers), per_speaker)
  embeddings = centres[speakers] + spread * rng.normal(size=(len(speakers), 16))
  ids = [f"{s:04d}-{u}" for s in range(num_speakers) for u in range(per_speaker)]
  return embeddings, speakers, ids


def test_resample_counts_draw_as_many_speakers_as_there_are():
  counts = metrics.resample_counts(7, 50, seed=3)
  assert counts.shape == (50, 7) and (counts.sum(axis=1) == 7).all()
  np.testing.assert_array_equal(counts, metrics.resample_counts(7, 50, seed=3))
  assert (counts.max(axis=1) > 1).any()  # With replacement.


def test_bootstrap_intervals_hold_the_estimate_and_shrink_with_more_speakers():
  widths = []
  for num_speakers in (20, 200):
    embeddings, speakers, ids = _speakers(num_speakers, 4, seed=6, spread=1.2)
    report = metrics.speaker_bootstrap(embeddings, speakers, ids, resamples=300, seed=1)
    point = metrics.verification(embeddings, speakers)
    identification = metrics.one_shot_identification(embeddings, speakers, ids)
    lo, hi = report["eer_ci"]
    assert lo <= point["eer"] <= hi
    assert report["min_dcf_ci"][0] <= point["min_dcf"] <= report["min_dcf_ci"][1]
    lo_id, hi_id = report["identification_accuracy_ci"]
    assert lo_id <= identification["identification_accuracy"] <= hi_id
    widths.append((hi - lo, hi_id - lo_id))
  assert widths[1][0] < widths[0][0] / 2 and widths[1][1] < widths[0][1] / 2
  assert report["bootstrap_resamples"] == 300
  # Seeded: the same seed gives the same intervals, another seed others.
  again = metrics.speaker_bootstrap(embeddings, speakers, ids, resamples=300, seed=1)
  assert again == report
  assert metrics.speaker_bootstrap(embeddings, speakers, ids, 300, seed=2) != report
  # Every test utterance right: every resample is too.
  easy, easy_speakers, easy_ids = _speakers(30, 3, seed=7, spread=0.01)
  easy_report = metrics.speaker_bootstrap(easy, easy_speakers, easy_ids, 50)
  assert easy_report["identification_accuracy_ci"] == [1.0, 1.0]


def test_bootstrap_samples_are_paired_and_blind_to_monotonic_maps():
  embeddings, speakers, ids = _speakers(15, 3, seed=8, spread=1.0)
  counts = metrics.resample_counts(15, 100, seed=4)
  matrix = metrics.cosine_matrix(embeddings)
  plain = metrics.bootstrap_samples(matrix, speakers, ids, counts)
  mapped = metrics.bootstrap_samples(3 * matrix - 1, speakers, ids, counts)
  for key in ("eer", "min_dcf", "identification_accuracy"):
    np.testing.assert_allclose(mapped[key], plain[key], atol=1e-12)  # Change: exactly 0.
  with pytest.raises(ValueError, match="resample counts"):
    metrics.bootstrap_samples(matrix, speakers, ids, counts[:, :3])

