"""Calibrated scores: the logistic score -> LLR map, Bayes thresholds, AS-Norm, the model's
calibration and cohort files, and what hive.evaluate and hive.voiceid do with them."""

import io
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from hive import evaluate, metrics, scoring, workdir as workdir_lib
from hive.encoder import Encoder
from hive.voiceid import VoiceIdError, commands as voiceid_commands, thresholds

REPO = pathlib.Path(__file__).resolve().parents[1]


def gaussian_trials(mu_target, mu_nontarget, sigma, n=20000, seed=0):
  rng = np.random.default_rng(seed)
  scores = np.r_[rng.normal(mu_target, sigma, n), rng.normal(mu_nontarget, sigma, n)]
  labels = np.r_[np.ones(n, bool), np.zeros(n, bool)]
  return scores, labels


# --- the logistic calibration ----------------------------------------------------------


@pytest.mark.parametrize("prior", [0.5, 0.1])
@pytest.mark.parametrize("mu_t,mu_n,sigma", [(2.0, 0.0, 1.0), (0.6, 0.1, 0.25)])
def test_logistic_fit_recovers_the_llr_of_gaussian_scores(mu_t, mu_n, sigma, prior):
  # Equal-variance Gaussians: log N(s; mu_t) / N(s; mu_n) is linear in s, with slope
  # (mu_t - mu_n) / sigma^2 and offset (mu_n^2 - mu_t^2) / (2 sigma^2), whatever the prior
  # the fit weights the classes with (the model is exact, so every prior finds it).
  scores, labels = gaussian_trials(mu_t, mu_n, sigma)
  slope, offset = scoring.fit_calibration(scores, labels, prior)
  assert slope == pytest.approx((mu_t - mu_n) / sigma**2, rel=0.04)
  assert offset == pytest.approx((mu_n**2 - mu_t**2) / (2 * sigma**2), abs=0.08)


def test_fitted_calibration_is_nearly_the_best_monotonic_one():
  scores, labels = gaussian_trials(0.6, 0.1, 0.25, n=5000, seed=1)
  slope, offset = scoring.fit_calibration(scores, labels)
  fitted = metrics.cllr(scoring.to_llr(scores, slope, offset), labels)
  lowest = metrics.min_cllr(scores, labels)
  assert lowest <= fitted < lowest + 0.01
  # Raw cosines, or the right map scaled or shifted, cost more.
  assert metrics.cllr(scores, labels) > fitted + 0.1
  for s, o in ((2 * slope, 2 * offset), (slope, offset + 2)):
    assert metrics.cllr(scoring.to_llr(scores, s, o), labels) > fitted
  # act_dcf (the fit's Bayes decisions) is never below min_dcf on the same trials.
  llrs = scoring.to_llr(scores, slope, offset)
  act = metrics.detection_cost(llrs, labels, scoring.bayes_threshold(0.01), 0.01)
  assert act >= metrics.min_dcf(scores, labels, 0.01)[0]


def test_separable_scores_keep_a_finite_slope():
  scores = np.r_[np.linspace(0.6, 0.9, 20), np.linspace(-0.2, 0.3, 50)]
  labels = np.r_[np.ones(20, bool), np.zeros(50, bool)]
  slope, offset = scoring.fit_calibration(scores, labels)
  assert np.isfinite(slope) and slope > 0 and np.isfinite(offset)
  assert metrics.cllr(scoring.to_llr(scores, slope, offset), labels) < 0.05
  with pytest.raises(ValueError, match="both target and non-target"):
    scoring.fit_calibration(scores[:20], labels[:20])
  with pytest.raises(ValueError, match="prior"):
    scoring.fit_calibration(scores, labels, prior=1.0)


def test_bayes_threshold_and_its_score_by_hand():
  assert scoring.bayes_threshold(0.5) == pytest.approx(0.0, abs=1e-12)
  assert scoring.bayes_threshold(0.01) == pytest.approx(math.log(99))
  # A miss ten times as costly as a false accept lowers the bar by log 10.
  assert scoring.bayes_threshold(0.01, c_miss=10) == pytest.approx(math.log(9.9))
  with pytest.raises(ValueError, match="prior"):
    scoring.bayes_threshold(0.0)
  # llr = 10 s - 5: the LLR 0 is at s = 0.5, log 99 at (log 99 + 5) / 10.
  assert scoring.score_at_llr(0.0, 10.0, -5.0) == pytest.approx(0.5)
  score = scoring.score_at_llr(math.log(99), 10.0, -5.0)
  assert scoring.to_llr(score, 10.0, -5.0) == pytest.approx(math.log(99))
  with pytest.raises(ValueError, match="increase"):
    scoring.score_at_llr(0.0, -1.0, 0.0)


# --- AS-Norm -----------------------------------------------------------------------------


def test_asnorm_by_hand():
  # Top 2 cohort scores: a: 0.9, 0.3 (mean 0.6, std 0.3); b: 0.5, 0.5 ... made distinct:
  # b: 0.4, 0.2 (mean 0.3, std 0.1). A score of 0.9: ((0.9 - 0.6) / 0.3 + (0.9 - 0.3) / 0.1)
  # / 2 = (1 + 6) / 2 = 3.5.
  stats_a = scoring.asnorm_stats([[0.1, 0.2, 0.3, 0.9]], top_k=2)
  stats_b = scoring.asnorm_stats([[0.4, -0.5, 0.2, 0.0]], top_k=2)
  np.testing.assert_allclose(stats_a, [[0.6], [0.3]])
  np.testing.assert_allclose(stats_b, [[0.3], [0.1]])
  assert scoring.asnorm([[0.9]], stats_a, stats_b)[0, 0] == pytest.approx(3.5)
  # top_k at or above the cohort size: S-norm over the whole cohort.
  whole = scoring.asnorm_stats([[0.1, 0.2, 0.3, 0.9]], top_k=10)
  np.testing.assert_allclose(whole, [[0.375], [np.std([0.1, 0.2, 0.3, 0.9])]])
  with pytest.raises(ValueError, match="top_k >= 2"):
    scoring.asnorm_stats([[0.1, 0.2]], top_k=1)
  with pytest.raises(ValueError, match="cohort of 2 or more"):
    scoring.asnorm_stats([[0.1]], top_k=5)


def test_asnorm_invariances():
  rng = np.random.default_rng(2)
  a, b, cohort = rng.normal(size=(5, 8)), rng.normal(size=(7, 8)), rng.normal(size=(30, 8))
  a, b, cohort = scoring.unit_rows(a), scoring.unit_rows(b), scoring.unit_rows(cohort)
  scores = a @ b.T
  stats_a, stats_b = scoring.asnorm_stats(a @ cohort.T, 10), scoring.asnorm_stats(b @ cohort.T, 10)
  normed = scoring.asnorm(scores, stats_a, stats_b)
  # Symmetric: enrolment and test may swap.
  np.testing.assert_allclose(scoring.asnorm(scores.T, stats_b, stats_a), normed.T)
  # The cohort is a set: its order does not matter.
  shuffled = cohort[rng.permutation(len(cohort))]
  np.testing.assert_allclose(scoring.asnorm(scores, scoring.asnorm_stats(a @ shuffled.T, 10),
                                            scoring.asnorm_stats(b @ shuffled.T, 10)), normed)
  # An increasing affine map of every score (trial and cohort alike) changes nothing.
  f = lambda x: 3.0 * x - 0.7
  np.testing.assert_allclose(scoring.asnorm(f(scores), scoring.asnorm_stats(f(a @ cohort.T), 10),
                                            scoring.asnorm_stats(f(b @ cohort.T), 10)), normed)


def test_speaker_means_by_hand():
  names, means = scoring.speaker_means([[2.0, 0.0], [0.0, 3.0], [0.0, -1.0]], ["x", "x", "y"])
  assert names.tolist() == ["x", "y"]
  np.testing.assert_allclose(means, [[1 / math.sqrt(2), 1 / math.sqrt(2)], [0.0, -1.0]])


# --- the workdir's files ----------------------------------------------------------------


def test_calibration_and_cohort_files_round_trip_and_refuse_bad_ones(tmp_path):
  assert workdir_lib.read_calibration(tmp_path) is None
  assert workdir_lib.read_cohort(tmp_path) is None
  record = {"slope": 12.0, "offset": -4.0, "far_thresholds": [[0.01, 0.5, 0.2]],
            "checkpoint_step": 3, "centring": "abc"}
  workdir_lib.save_calibration(tmp_path, record)
  assert workdir_lib.read_calibration(tmp_path) == record
  embeddings = np.eye(3, 4)
  workdir_lib.save_cohort(tmp_path, embeddings, ["a", "b", "c"], 3, "abc")
  cohort = workdir_lib.read_cohort(tmp_path)
  np.testing.assert_array_equal(cohort["embeddings"], embeddings)
  assert (cohort["speakers"], cohort["step"], cohort["centring"]) == (["a", "b", "c"], 3, "abc")

  file = tmp_path / workdir_lib.CALIBRATION_FILE
  for content, message in (("{", "not a JSON calibration file"),
                           (json.dumps({"slope": -1, "offset": 0}), "slope > 0"),
                           (json.dumps({"slope": 1, "offset": 0, "far_thresholds": [[1, 2]]}),
                            "far_thresholds")):
    file.write_text(content)
    with pytest.raises(workdir_lib.BadWorkdirFile, match=f"{file}: .*{message}"):
      workdir_lib.read_calibration(tmp_path)
  (tmp_path / workdir_lib.COHORT_FILE).write_text("not numpy")
  with pytest.raises(workdir_lib.BadWorkdirFile, match="not a hive cohort file"):
    workdir_lib.read_cohort(tmp_path)
  with pytest.raises(ValueError, match="one embedding per speaker"):
    workdir_lib.save_cohort(tmp_path, embeddings, ["a"], 3, "abc")


# --- the model's calibration record and thresholds --------------------------------------


def a_report(path, asnorm_cllr=None, **extra):
  report = {"checkpoint_step": 7, "centring": "c0ffee", "eer_threshold": 0.3,
            "calibration": {"slope": 10.0, "offset": -5.0, "prior": 0.5, "source": "fitted"},
            "cllr": 0.3, "far_thresholds": [[0.001, 0.6, 0.5], [0.01, 0.4, 0.2],
                                            [0.1, 0.2, 0.05]], **extra}
  if asnorm_cllr is not None:
    report.update(asnorm_calibration={"slope": 2.0, "offset": -3.0, "prior": 0.5},
                  asnorm_cllr=asnorm_cllr, asnorm_top_k=50, asnorm_cohort_size=300,
                  asnorm_far_thresholds=[[0.01, 2.5, 0.1]])
  path.write_text(json.dumps(report))
  return path


def test_calibration_from_a_report_keeps_asnorm_only_where_it_wins(tmp_path):
  model = {"step": 7, "centring": "c0ffee"}
  cosine = thresholds.calibration_from_file(a_report(tmp_path / "r.json"), model)
  assert (cosine["scores"], cosine["slope"], cosine["offset"]) == ("cosine", 10.0, -5.0)
  assert cosine["far_thresholds"][1] == [0.01, 0.4, 0.2]
  wins = thresholds.calibration_from_file(a_report(tmp_path / "w.json", asnorm_cllr=0.2), model)
  assert (wins["scores"], wins["slope"], wins["top_k"]) == ("asnorm", 2.0, 50)
  assert wins["far_thresholds"] == [[0.01, 2.5, 0.1]] and wins["cllr"] == 0.2
  loses = a_report(tmp_path / "l.json", asnorm_cllr=0.4)
  assert thresholds.calibration_from_file(loses, model)["scores"] == "cosine"
  assert thresholds.calibration_from_file(loses, model, "asnorm")["scores"] == "asnorm"
  with pytest.raises(VoiceIdError, match="no AS-Norm numbers"):
    thresholds.calibration_from_file(tmp_path / "r.json", model, "asnorm")
  with pytest.raises(VoiceIdError, match="checkpoint_step 7"):
    thresholds.calibration_from_file(tmp_path / "r.json", {"step": 8})
  (tmp_path / "old.json").write_text(json.dumps({"eer_threshold": 0.3}))
  with pytest.raises(VoiceIdError, match="no calibration"):
    thresholds.calibration_from_file(tmp_path / "old.json")
  flat = a_report(tmp_path / "flat.json", calibration={"slope": -2.0, "offset": 0.0})
  with pytest.raises(VoiceIdError, match="not positive"):
    thresholds.calibration_from_file(flat)


def test_thresholds_by_far_and_by_prior_by_hand(tmp_path):
  calibration = thresholds.calibration_from_file(a_report(tmp_path / "r.json"))
  # Linear in log far: 10^-2.5 is halfway between 0.001 (0.6) and 0.01 (0.4).
  assert thresholds.threshold_at_far(calibration, 10**-2.5) == pytest.approx(0.5)
  assert thresholds.threshold_at_far(calibration, 0.01) == pytest.approx(0.4)
  with pytest.raises(VoiceIdError, match="from 0.001 to 0.1 only"):
    thresholds.threshold_at_far(calibration, 0.0001)
  # llr = 10 s - 5: prior 0.5 -> llr 0 -> s = 0.5; prior 0.01 -> (log 99 + 5) / 10.
  assert thresholds.threshold_for_prior(calibration, 0.5) == pytest.approx(0.5)
  assert thresholds.threshold_for_prior(calibration, 0.01) == pytest.approx(
      (math.log(99) + 5) / 10)
  with pytest.raises(VoiceIdError, match="no score reaches"):
    thresholds.threshold_for_prior(calibration, 1e-4)  # (log 9999 + 5) / 10 > 1.
  assert thresholds.chosen_threshold(calibration, None, None) is None
  assert thresholds.chosen_threshold(calibration, 0.01, None) == (
      pytest.approx(0.4), "at false-accept rate 0.01")
  with pytest.raises(VoiceIdError, match="one of --far and --prior"):
    thresholds.chosen_threshold(calibration, 0.01, 0.5)
  with pytest.raises(VoiceIdError, match="need a calibrated model"):
    thresholds.chosen_threshold(None, 0.01, None)


def test_calibrated_scores_and_identification():
  rng = np.random.default_rng(3)
  enrolled = scoring.unit_rows(rng.normal(size=(4, 6)))
  cohort = scoring.unit_rows(rng.normal(size=(20, 6)))
  probe = enrolled[2] + 0.1 * rng.normal(size=6)
  cosine = {"scores": "cosine", "slope": 10.0, "offset": -5.0}
  np.testing.assert_allclose(thresholds.calibrated_scores(cosine, enrolled, probe),
                             enrolled @ scoring.unit_rows(probe))
  asnorm = {"scores": "asnorm", "slope": 2.0, "offset": -3.0, "top_k": 5}
  expected = scoring.asnorm((enrolled @ scoring.unit_rows(probe))[:, None],
                            scoring.asnorm_stats(enrolled @ cohort.T, 5),
                            scoring.asnorm_stats(scoring.unit_rows(probe)[None] @ cohort.T, 5))
  np.testing.assert_allclose(thresholds.calibrated_scores(asnorm, enrolled, probe, cohort),
                             expected[:, 0])
  with pytest.raises(VoiceIdError, match="needs the model's AS-Norm cohort"):
    thresholds.calibrated_scores(asnorm, enrolled, probe)
  store = {"speakers": {name: {"embedding": e.tolist()} for name, e in
                        zip("abcd", enrolled)}}
  found = thresholds.identify_calibrated(store, probe, asnorm, cohort, threshold=-100.0)
  assert found["speaker"] == found["best"] == "c"
  assert found["llr"] == pytest.approx(2.0 * expected[2, 0] - 3.0)
  assert found["score"] == pytest.approx(float(enrolled[2] @ scoring.unit_rows(probe)))
  rejected = thresholds.identify_calibrated(store, probe, asnorm, cohort, threshold=100.0)
  assert rejected["speaker"] is None and rejected["best"] == "c"


# --- the evaluator, hive.evaluate and hive.voiceid on the tiny model ---------------------


@pytest.fixture(scope="module")
def model(tiny, tmp_path_factory):
  """A copy of the tiny model (the shared one stays uncalibrated) with an AS-Norm cohort
  of its training corpus' speakers."""
  workdir = tmp_path_factory.mktemp("calibrated") / "model"
  shutil.copytree(tiny["workdir"], workdir)
  return workdir


@pytest.fixture(scope="module")
def encoder(model):
  return Encoder.from_workdir(model)


def test_evaluator_reports_calibration_operating_points_and_intervals(encoder, tiny_examples):
  first = evaluate.evaluate(encoder, tiny_examples, far=0.05, bootstrap=40)
  embeddings = first.pop("_embeddings")
  scores, labels = metrics.all_pairs_trials(embeddings, tiny_examples.speakers)
  assert first["calibration"]["source"] == "fitted on these trials"
  slope, offset = first["calibration"]["slope"], first["calibration"]["offset"]
  assert first["cllr"] == pytest.approx(metrics.cllr(slope * scores + offset, labels))
  assert first["min_cllr"] <= first["cllr"] and first["act_dcf"] >= first["min_dcf"]
  assert first["far"] == 0.05
  assert (first["far_threshold"], first["far_false_accept"], first["far_false_reject"]) == \
      pytest.approx(metrics.threshold_at_far(scores, labels, 0.05))
  assert first["open_set_threshold"] == first["far_threshold"]
  assert first["open_set_enrolled_speakers"] == 4  # Every other one of 8.
  assert first["open_set_known_probes"] + first["open_set_unknown_probes"] == 24 - 4
  for key in ("eer", "min_dcf"):
    lo, hi = first[f"{key}_ci"]
    assert lo <= hi and first["bootstrap_resamples"] == 40
  # A calibration given is applied, not refitted.
  given = {"slope": 2 * slope, "offset": offset, "source": "test"}
  second = evaluate.evaluate(encoder, tiny_examples, calibration=given)
  assert second["calibration"] == given and "eer_ci" not in second
  assert second["cllr"] == pytest.approx(metrics.cllr(2 * slope * scores + offset, labels))
  assert second["min_cllr"] == first["min_cllr"]
  # AS-Norm against a cohort of the speakers' own means (mechanics only).
  _, means = scoring.speaker_means(embeddings, tiny_examples.speakers)
  third = evaluate.evaluate(encoder, tiny_examples, cohort=means, top_k=4, bootstrap=40)
  assert (third["asnorm_cohort_size"], third["asnorm_top_k"]) == (8, 4)
  for key in ("eer", "min_dcf", "identification_accuracy"):  # Paired with the cosine's.
    assert third[f"asnorm_{key}_ci"][0] <= third[f"asnorm_{key}"] <= third[f"asnorm_{key}_ci"][1]
    lo, hi = third[f"asnorm_{key}_change_ci"]
    assert lo <= hi
  assert 0 <= third["asnorm_eer"] <= 1 and third["asnorm_min_cllr"] <= third["asnorm_cllr"]
  with pytest.raises(ValueError, match="needs the model's AS-Norm cohort"):
    evaluate.evaluate(encoder, tiny_examples, calibration={**given, "scores": "asnorm"})


def clips(corpus, speakers=2, per_speaker=2):
  found = {}
  for f in sorted(pathlib.Path(corpus).rglob("*.flac")) + sorted(
      pathlib.Path(corpus).rglob("*.wav")):
    speaker = f.name.split("-")[0]
    if len(found.get(speaker, [])) < per_speaker and (len(found) < speakers or speaker in found):
      found.setdefault(speaker, []).append(str(f))
  return found


def test_evaluate_cli_calibrate_and_decisions_at_a_far(tiny, model, encoder, tmp_path,
                                                       monkeypatch):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  base = [sys.executable, "-m", "hive.evaluate", f"--workdir={model}", f"--data={tiny['corpus']}",
          f"--data_dir={tiny['data_dir']}"]
  # A cohort first (here every speaker of the tiny corpus), then an evaluation with it.
  examples = evaluate.builder_lib.read_examples(evaluate.builder_lib.prepare(
      tiny["corpus"], tiny["data_dir"], encoder.feature_config)[0])
  embeddings = evaluate.evaluate(encoder, examples)["_embeddings"]
  evaluate.write_cohort(encoder, embeddings, examples.speakers, "tiny/")
  report = tmp_path / "report.json"
  done = subprocess.run(base + ["--asnorm", "--top_k=4", "--bootstrap=30", "--far=0.05",
                                f"--out={report}"], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  saved = json.loads(report.read_text())
  for key in ("cllr", "min_cllr", "act_dcf", "far_threshold", "open_set_false_alarm_rate",
              "open_set_miss_rate", "open_set_confusion_rate", "eer_ci",
              "identification_accuracy_ci", "asnorm_eer", "asnorm_far_thresholds"):
    assert key in saved, key
  assert saved["far"] == 0.05 and saved["bootstrap_resamples"] == 30

  monkeypatch.setattr(voiceid_commands, "load_encoder", lambda w, step=None: encoder)
  out = io.StringIO()
  voiceid_commands.run_calibrate(None, report=str(report), workdir=str(model), far=0.05,
                                 scores="cosine", out=out)
  assert "calibration of cosines" in out.getvalue()
  stored = workdir_lib.read_threshold(model)["threshold"]
  assert stored == pytest.approx(thresholds.threshold_at_far(
      thresholds.calibration_from_file(report), 0.05))
  calibration = thresholds.model_calibration(encoder)
  assert (calibration["slope"], calibration["scores"]) == (saved["calibration"]["slope"],
                                                           "cosine")
  # verify prints the LLR, and decides at the false-accept rate asked for.
  (a1, a2), (b1, _) = list(clips(tiny["corpus"]).values())
  out = io.StringIO()
  voiceid_commands.run_verify(str(model), [a1, b1], far=0.05, as_json=True, out=out)
  result = json.loads(out.getvalue())
  score = result["score"]
  assert result["llr"] == pytest.approx(thresholds.llr(calibration, score))
  assert result["threshold"] == pytest.approx(thresholds.threshold_at_far(calibration, 0.05))
  assert result["same"] == (score >= result["threshold"])
  out = io.StringIO()
  voiceid_commands.run_verify(str(model), [a1, a2], prior=0.5, out=out)
  assert ", LLR " in out.getvalue() and "Bayes decision at prior 0.5" in out.getvalue()
  with pytest.raises(VoiceIdError, match="one of --threshold, --far and --prior"):
    voiceid_commands.run_verify(str(model), [a1, a2], threshold="0.3", far=0.05)
  # identify: enrol one speaker, decide at a false-accept rate, print LLRs.
  db = tmp_path / "db.json"
  voiceid_commands.run_enroll(db, str(model), "a", [a1], out=io.StringIO())
  out = io.StringIO()
  assert voiceid_commands.run_identify(str(db), [a2], far=0.05, as_json=True, out=out) == 0
  found = json.loads(out.getvalue())
  assert found["best"] == "a" and found["llr"] == pytest.approx(
      thresholds.llr(calibration, found["score"]))
  # The model's calibration, applied to the same trials, gives the report's numbers back.
  again = evaluate.evaluate(encoder, examples, calibration=calibration)
  assert again["cllr"] == pytest.approx(saved["cllr"])
  assert again["act_dcf"] == pytest.approx(saved["act_dcf"])


def test_summary_lines_by_hand():
  report = {"num_speakers": 25, "cllr": 0.2166, "min_cllr": 0.2102, "act_dcf": 0.6606,
            "act_dcf_threshold": 0.60541, "calibration": {"source": "fitted on these trials"},
            "far": 0.01, "far_threshold": 0.48059, "far_false_reject": 0.23758,
            "open_set_enrolled_speakers": 13, "open_set_unknown_probes": 144,
            "open_set_known_probes": 143, "open_set_false_alarm_rate": 0.09028,
            "open_set_miss_rate": 0.23776, "open_set_confusion_rate": 0.04196,
            "bootstrap_resamples": 1000, "eer_ci": [0.04182, 0.07724],
            "min_dcf_ci": [0.3642, 0.7739], "identification_accuracy_ci": [0.8, 0.93818],
            "asnorm_eer": 0.04759, "asnorm_min_dcf": 0.5603, "asnorm_cllr": 0.1789,
            "asnorm_identification_accuracy": 0.88, "asnorm_top_k": 100,
            "asnorm_cohort_size": 301, "asnorm_eer_change_ci": [-0.01939, -0.00521],
            "asnorm_min_dcf_change_ci": [-0.1837, 0.0243]}
  assert evaluate.calibration_lines(report) == [
      "  calibrated   cllr 0.217 (best monotonic map 0.210), actual DCF 0.661 at cosine 0.605",
      "  FAR 1 %      threshold 0.481, false rejects 23.76 %",
      "  open set     13 of 25 speakers enrolled, same threshold: 9.03 % of 144 others "
      "accepted;",
      "               of 143 utterances of enrolled speakers: 23.78 % rejected, 4.20 % taken "
      "for another",
      "  95 % CI      EER [4.18, 7.72] %, minDCF [0.364, 0.774], one-shot ID [80.00, 93.82] % "
      "(1,000 resamples)",
      "  AS-Norm      EER 4.76 %, minDCF 0.560, cllr 0.179, one-shot ID 88.00 % (top 100 of 301)",
      "               change from cosine (95 % CI, paired): EER [-1.94, -0.52] points, minDCF "
      "[-0.184, 0.024]"]
  assert evaluate.calibration_lines({"num_speakers": 3}) == []  # Older reports: nothing.

