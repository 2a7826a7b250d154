"""Decision thresholds: where they come from and how they are checked.

A cosine score at or above the threshold means "same speaker". Unless a command is given
one, a store uses its own threshold; a new store starts with the model's threshold (the
workdir's threshold.json, when calibrated for that checkpoint and training mean), else
DEFAULT_THRESHOLD (0.7), which is only a prior: calibrate for your model, on held-out
speakers, from the `eer_threshold` of a `hive.evaluate --out` report.
"""

from __future__ import annotations

import copy
import math
import pathlib
import sys

from hive import workdir as workdir_lib
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
