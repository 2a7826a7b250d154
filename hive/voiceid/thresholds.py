"""Decision thresholds and calibrated scores: where they come from and how they are checked.

A cosine score at or above the threshold means "same speaker". Unless a command is given
one, a store uses its own threshold; a new store starts with the model's threshold (the
workdir's threshold.json, when calibrated for that checkpoint and training mean), else
DEFAULT_THRESHOLD (0.7), which is only a prior: calibrate for your model, on held-out
speakers, from a `hive.evaluate --out` report (its `eer_threshold`, or the threshold at a
false-accept rate).

The model's calibration (WORKDIR/calibration.json, from a report by `hive.voiceid calibrate
--workdir`) maps a cosine to a log-likelihood ratio (hive/scoring.py) and keeps the
report's thresholds at a grid of false-accept rates, measured on its trials. With it a
threshold can be chosen by what it means: `--far=F`, the cosine whose false-accept rate
was F on those trials (interpolated in log F between grid points), or `--prior=P`, the
Bayes decision for a target prior P with unit costs (accept when the LLR is at least
log((1 - P) / P)).
"""

from __future__ import annotations

import copy
import math
import pathlib
import sys

import numpy as np

from hive import scoring, workdir as workdir_lib
from hive.voiceid.store import DEFAULT_THRESHOLD, VoiceIdError


def check_threshold(value: float, where: str) -> float:
  if not math.isfinite(value) or not -1 <= value <= 1:
    raise VoiceIdError(f"{where}: threshold {value} is not a cosine score in [-1, 1]")
  return float(value)


def threshold_from_report(path, model: dict | None = None) -> float:
  """The eer_threshold of a hive.evaluate report, checked against `model` (a store's
  "model" entry, or a loaded model's record): same step and training mean."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise VoiceIdError(f"{path}: no such evaluation report")
  report = workdir_lib.read_json(path, "evaluation report", VoiceIdError)
  value = report.get("eer_threshold") if isinstance(report, dict) else None
  if not isinstance(value, (int, float)):
    raise VoiceIdError(f"{path}: no numeric eer_threshold (is it a hive.evaluate --out report?)")
  if model is not None:
    for key, what in (("step", "checkpoint_step"), ("centring", "centring")):
      ours, theirs = model.get(key), report.get(what)
      if ours is not None and theirs is not None and ours != theirs:
        raise VoiceIdError(f"{path}: evaluates a model with {what} {theirs}, the model it "
                           f"would calibrate has {ours}")
  return check_threshold(float(value), str(path))


def model_threshold(encoder) -> tuple[float, str]:
  """(threshold, source): the model's calibrated threshold (WORKDIR/threshold.json) when
  it was calibrated for this checkpoint and training mean, else DEFAULT_THRESHOLD."""
  if not encoder.source:
    return DEFAULT_THRESHOLD, "default"
  try:
    saved = workdir_lib.read_threshold(encoder.source)
  except workdir_lib.BadWorkdirFile as e:
    raise VoiceIdError(str(e)) from None
  if saved is None:
    return DEFAULT_THRESHOLD, "default"
  made_for = (saved.get("checkpoint_step"), saved.get("centring"))
  model = (encoder.step, workdir_lib.mean_digest(encoder.embedding_mean))
  where = workdir_lib.path(encoder.source) / workdir_lib.THRESHOLD_FILE
  if made_for != model:
    print(f"note: {where} was calibrated for step {made_for[0]}, centring {made_for[1]}; the "
          f"model is step {model[0]}, centring {model[1]}: using the default threshold "
          f"{DEFAULT_THRESHOLD}", file=sys.stderr)
    return DEFAULT_THRESHOLD, "default"
  return check_threshold(float(saved["threshold"]), str(where)), f"model: {saved.get('source')}"


def save_model_threshold(encoder, threshold: float, source: str):
  """Writes WORKDIR/threshold.json for the encoder's checkpoint and training mean."""
  return workdir_lib.save_threshold(encoder.source, {
      "threshold": check_threshold(float(threshold), source), "source": source,
      "checkpoint_step": int(encoder.step),
      "centring": workdir_lib.mean_digest(encoder.embedding_mean)})


def parse_threshold(value: str | None, report: str | None, store: dict | None = None):
  """--threshold as a float; None (not given) means the store's or the default."""
  if value is None or value == "":
    return None
  if value == "auto":
    if not report:
      raise VoiceIdError("--threshold=auto needs --report=REPORT.json (from hive.evaluate --out)")
    return threshold_from_report(report, store["model"] if store else None)
  try:
    number = float(value)
  except ValueError:
    raise VoiceIdError(f"--threshold={value}: expected a number in [-1, 1] or 'auto'") from None
  return check_threshold(number, "--threshold")


def calibrate(store: dict, threshold: float, source: str) -> dict:
  store = copy.deepcopy(store)
  store["threshold"] = check_threshold(float(threshold), source)
  store["threshold_source"] = source
  return store


# --- calibrated scores ---------------------------------------------------------------

CALIBRATION_FORMAT = "hive-calibration"


def _check_model(where, record: dict, model: dict | None) -> None:
  """Refuses a report or calibration made for another checkpoint or centring than `model`."""
  if model is None:
    return
  for key, what in (("step", "checkpoint_step"), ("centring", "centring")):
    ours, theirs = model.get(key), record.get(what)
    if ours is not None and theirs is not None and ours != theirs:
      raise VoiceIdError(f"{where}: made for a model with {what} {theirs}, the model it "
                         f"would calibrate has {ours}")


SCORES = ("cosine", "asnorm")


def calibration_from_file(path, model: dict | None = None, scores: str = "auto") -> dict:
  """The calibration record of a hive.evaluate report or of a calibration.json, checked
  against `model` (a model record): same checkpoint step and training mean.

  From a report, `scores` chooses which of its calibrations: "cosine", "asnorm" (a report
  of `hive.evaluate --asnorm`), or "auto": AS-Norm's when the report has it and its
  calibrated cllr is lower (AS-Norm is the model's default only where it was measured to
  win), else the cosine's. The record keeps the report's thresholds by false-accept rate
  for the same scores, and both cllr values.
  """
  if scores not in SCORES + ("auto",):
    raise VoiceIdError(f"--scores={scores}: expected one of auto, {', '.join(SCORES)}")
  path = pathlib.Path(path)
  if not path.is_file():
    raise VoiceIdError(f"{path}: no such report or calibration file")
  found = workdir_lib.read_json(path, "report or calibration file", VoiceIdError)
  if not isinstance(found, dict):
    raise VoiceIdError(f"{path}: not a hive.evaluate report or calibration file")
  _check_model(path, found, model)
  if found.get("format") == CALIBRATION_FORMAT:
    record = dict(found)
    record.setdefault("scores", "cosine")
    if scores != "auto" and record["scores"] != scores:
      raise VoiceIdError(f"{path}: calibrates {record['scores']} scores, not {scores}")
  else:
    if not isinstance(found.get("calibration"), dict):
      raise VoiceIdError(f"{path}: no calibration (is it a hive.evaluate --out report from "
                         "this version of hive?)")
    has_asnorm = isinstance(found.get("asnorm_calibration"), dict)
    if scores == "asnorm" and not has_asnorm:
      raise VoiceIdError(f"{path}: no AS-Norm numbers (evaluate with hive.evaluate --asnorm)")
    if scores == "auto":
      wins = has_asnorm and (found.get("asnorm_cllr") or math.inf) < (found.get("cllr")
                                                                      or math.inf)
      scores = "asnorm" if wins else "cosine"
    prefix = "asnorm_" if scores == "asnorm" else ""
    fit = found[prefix + "calibration"]
    record = {"format": CALIBRATION_FORMAT, "version": 1, "scores": scores,
              "slope": fit.get("slope"), "offset": fit.get("offset"),
              "prior": fit.get("prior"), "fitted_on": fit.get("source"),
              "source": str(path), "far_thresholds": found.get(prefix + "far_thresholds", []),
              **{k: found.get(prefix + k) for k in ("cllr", "min_cllr", "act_dcf", "eer",
                                                    "eer_threshold")},
              **{k: found.get(k) for k in ("checkpoint_step", "centring", "data", "split",
                                           "segment_seconds", "num_trials",
                                           "num_target_trials", "p_target")},
              "cosine_cllr": found.get("cllr"), "asnorm_cllr": found.get("asnorm_cllr")}
    if scores == "asnorm":
      record.update(top_k=found.get("asnorm_top_k"), cohort_size=found.get("asnorm_cohort_size"))
  for key in ("slope", "offset"):
    if not isinstance(record.get(key), (int, float)) or not math.isfinite(record[key]):
      raise VoiceIdError(f"{path}: calibration {key} {record.get(key)!r} is not a number")
  if not record["slope"] > 0:
    raise VoiceIdError(f"{path}: calibration slope {record['slope']} is not positive: the "
                       "scores it was fitted on do not tell speakers apart")
  if record["scores"] == "asnorm" and not (isinstance(record.get("top_k"), int)
                                           and record["top_k"] >= 2):
    raise VoiceIdError(f"{path}: an AS-Norm calibration needs its top_k (an integer >= 2)")
  return record


def model_calibration(encoder) -> dict | None:
  """The model's calibration (WORKDIR/calibration.json) when it was made for this checkpoint
  and training mean, else None (with a note when it was made for another)."""
  if not encoder.source:
    return None
  try:
    saved = workdir_lib.read_calibration(encoder.source)
  except workdir_lib.BadWorkdirFile as e:
    raise VoiceIdError(str(e)) from None
  if saved is None:
    return None
  made_for = (saved.get("checkpoint_step"), saved.get("centring"))
  model = (encoder.step, workdir_lib.mean_digest(encoder.embedding_mean))
  if made_for != model:
    where = workdir_lib.path(encoder.source) / workdir_lib.CALIBRATION_FILE
    print(f"note: {where} was made for step {made_for[0]}, centring {made_for[1]}; the "
          f"model is step {model[0]}, centring {model[1]}: no calibrated scores",
          file=sys.stderr)
    return None
  return saved


def save_model_calibration(encoder, record: dict):
  """Writes WORKDIR/calibration.json for the encoder's checkpoint and training mean."""
  record = {**record, "checkpoint_step": int(encoder.step),
            "centring": workdir_lib.mean_digest(encoder.embedding_mean)}
  return workdir_lib.save_calibration(encoder.source, record)


def llr(calibration: dict, score: float) -> float:
  """The calibrated log-likelihood ratio of a score of the calibration's kind."""
  return float(scoring.to_llr(score, calibration["slope"], calibration["offset"]))


def threshold_at_far(calibration: dict, far: float, where: str = "--far") -> float:
  """The threshold at false-accept rate `far` on the calibration's scores (cosines, or
  AS-Norm scores), from its table (linear in log far between its rows; outside them, an
  error naming the range)."""
  if not 0 < far < 1:
    raise VoiceIdError(f"{where}={far}: a false-accept rate is in (0, 1)")
  table = sorted(calibration.get("far_thresholds") or [])
  if not table:
    raise VoiceIdError(f"{calibration.get('source')}: no thresholds by false-accept rate; "
                       "recalibrate from a hive.evaluate report of this version")
  fars = np.array([row[0] for row in table], np.float64)
  thresholds = np.array([row[1] for row in table], np.float64)
  if not fars[0] * (1 - 1e-9) <= far <= fars[-1] * (1 + 1e-9):
    raise VoiceIdError(f"{where}={far:g}: the calibration measured false-accept rates from "
                       f"{fars[0]:g} to {fars[-1]:g} only (its trials: "
                       f"{calibration.get('source')})")
  return float(np.interp(np.log(far), np.log(fars), thresholds))


def threshold_for_prior(calibration: dict, prior: float, where: str = "--prior") -> float:
  """The score (the calibration's kind) whose LLR is the Bayes threshold of `prior`."""
  if not 0 < prior < 1:
    raise VoiceIdError(f"{where}={prior}: a prior is in (0, 1)")
  value = scoring.score_at_llr(scoring.bayes_threshold(prior), calibration["slope"],
                               calibration["offset"])
  if calibration.get("scores", "cosine") == "cosine" and not -1 <= value <= 1:
    raise VoiceIdError(f"{where}={prior:g}: the calibrated decision needs a cosine of "
                       f"{value:.3f}, which no score reaches; choose a prior nearer 0.5")
  return float(value)


def chosen_threshold(calibration: dict | None, far: float | None, prior: float | None,
                     where: str = "the model") -> tuple[float, str] | None:
  """(threshold, how it was chosen) for --far or --prior; None when neither is given."""
  if far is None and prior is None:
    return None
  if far is not None and prior is not None:
    raise VoiceIdError("give one of --far and --prior, not both")
  if calibration is None:
    raise VoiceIdError(f"--far and --prior need a calibrated model, and {where} has none: "
                       "python -m hive.voiceid calibrate --workdir=DIR --report=REPORT.json "
                       "(a hive.evaluate --out report)")
  if far is not None:
    return threshold_at_far(calibration, far), f"at false-accept rate {far:g}"
  return threshold_for_prior(calibration, prior), f"Bayes decision at prior {prior:g}"


def model_cohort(encoder) -> np.ndarray:
  """The AS-Norm cohort [C, D] of the encoder's workdir, made by this checkpoint and
  centring; VoiceIdError saying how to make one otherwise."""
  file = f"{encoder.source}/{workdir_lib.COHORT_FILE}"
  try:
    cohort = workdir_lib.read_cohort(encoder.source) if encoder.source else None
  except workdir_lib.BadWorkdirFile as e:
    raise VoiceIdError(str(e)) from None
  if cohort is None:
    raise VoiceIdError(f"{file}: no AS-Norm cohort; make one with python -m hive.evaluate "
                       f"--workdir={encoder.source} --data=TRAINING_DATA --split=train "
                       "--write_cohort")
  made_for = (cohort["step"], cohort["centring"])
  model = (encoder.step, workdir_lib.mean_digest(encoder.embedding_mean))
  if made_for != model:
    raise VoiceIdError(f"{file}: made for step {made_for[0]}, centring {made_for[1]}; the "
                       f"model is step {model[0]}, centring {model[1]}: rebuild it "
                       "(hive.evaluate --write_cohort)")
  return cohort["embeddings"]


def calibrated_scores(calibration: dict, enrolled, probe, cohort=None) -> np.ndarray:
  """The scores `calibration` maps, of `probe` [D] against each of `enrolled` [E, D]: their
  cosines, or for an AS-Norm calibration their AS-Norm scores against `cohort` [C, D]."""
  enrolled = scoring.unit_rows(np.atleast_2d(enrolled))
  probe = scoring.unit_rows(np.atleast_2d(probe))
  cosines = enrolled @ probe.T  # [E, 1]
  if calibration.get("scores", "cosine") == "cosine":
    return cosines[:, 0]
  if cohort is None:
    raise VoiceIdError("an AS-Norm calibration needs the model's AS-Norm cohort")
  cohort = scoring.unit_rows(cohort)
  top_k = int(calibration["top_k"])
  stats_e = scoring.asnorm_stats(enrolled @ cohort.T, top_k)
  stats_p = scoring.asnorm_stats(probe @ cohort.T, top_k)
  return scoring.asnorm(cosines, stats_e, stats_p)[:, 0]


def score_name(calibration: dict | None) -> str:
  return "AS-Norm score" if (calibration or {}).get("scores") == "asnorm" else "cosine"


def identify_calibrated(store: dict, embedding, calibration: dict, cohort=None,
                        threshold: float | None = None, top: int = 3) -> dict:
  """Identification on calibrated scores: the enrolled speakers ranked by the calibration's
  scores (cosines or AS-Norm), each with its cosine ("score") and LLR. With a `threshold`
  (on the calibration's scores) the best is accepted at or above it ("speaker": None
  below); without one, "speaker" is left to the caller."""
  names = sorted(store["speakers"])
  if not names:
    raise VoiceIdError("the speaker store is empty: enroll speakers first")
  enrolled = np.array([store["speakers"][n]["embedding"] for n in names], np.float64)
  values = calibrated_scores(calibration, enrolled, embedding, cohort)
  cosines = calibrated_scores({"scores": "cosine"}, enrolled, embedding)
  order = np.argsort(-values, kind="stable")  # Ties: alphabetical, as store.scores.
  best = order[0]
  result = {"best": names[best], "score": float(cosines[best]),
            "calibrated_score": float(values[best]), "scores": calibration.get("scores",
                                                                               "cosine"),
            "llr": llr(calibration, values[best]),
            "candidates": [{"speaker": names[i], "score": float(cosines[i]),
                            "llr": llr(calibration, values[i])} for i in order[:top]]}
  if threshold is not None:
    result["speaker"] = names[best] if values[best] >= threshold else None
    result["threshold"] = float(threshold)
  return result
