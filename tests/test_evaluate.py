"""hive.evaluate: the report's numbers (EER and minDCF against scikit-learn), splits, the CLI."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from hive import checkpoint, evaluate, voiceid, workdir as workdir_lib
from hive.data import builder as builder_lib, examples as examples_lib
from hive.encoder import Encoder

REPO = pathlib.Path(__file__).resolve().parents[1]
REPORT_KEYS = {"eer", "eer_threshold", "min_dcf", "min_dcf_threshold", "num_trials",
               "num_target_trials", "identification_accuracy", "num_identification_trials",
               "gender_accuracy", "num_gender_labelled", "num_speakers", "num_utterances",
               "seconds_of_audio", "embed_seconds"}


@pytest.fixture(scope="module")
def enc(tiny_encoder):
  return tiny_encoder


@pytest.fixture(scope="module")
def examples(tiny_examples):
  return tiny_examples


@pytest.fixture(scope="module")
def report(enc, examples):
  return evaluate.evaluate(enc, examples)


def test_report_keys_and_counts(report, examples):
  assert REPORT_KEYS <= set(report)
  n, speakers = len(examples.utterance_ids), len(set(examples.speakers))
  assert (n, speakers) == (24, 8)
  assert report["num_utterances"] == n and report["num_speakers"] == speakers
  assert report["num_trials"] == n * (n - 1) // 2
  assert report["num_target_trials"] == speakers * 3 * 2 // 2  # 3 utterances per speaker.
  assert report["num_identification_trials"] == n - speakers  # One enrolment each.
  assert 0 <= report["identification_accuracy"] <= 1
  assert report["_embeddings"].shape == (n, 16)
  # The synthetic corpus has SPEAKERS.TXT, so every utterance carries a gender label.
  assert report["num_gender_labelled"] == n and 0 <= report["gender_accuracy"] <= 1
  assert report["seconds_of_audio"] == pytest.approx(np.sum(examples.num_frames) * 0.01, abs=0.01)


def test_gender_accuracy_is_none_without_labels(enc, examples):
  unlabelled = dataclasses.replace(examples, genders=np.full_like(examples.genders, -1))
  result = evaluate.evaluate(enc, unlabelled)
  assert result["gender_accuracy"] is None and result["num_gender_labelled"] == 0


def sklearn_eer_and_min_dcf(scores, labels, p_target=0.01):
  """EER by linear interpolation where fnr crosses fpr, and minDCF, from sklearn's ROC."""
  fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
  fnr = 1 - tpr
  diff = fnr - fpr
  i = int(np.flatnonzero(diff <= 0)[0])
  if diff[i] == 0:
    eer, eer_threshold = fpr[i], thresholds[i]
  else:
    t = diff[i - 1] / (diff[i - 1] - diff[i])
    eer = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    eer_threshold = (thresholds[i] if not np.isfinite(thresholds[i - 1]) else
                     thresholds[i - 1] + t * (thresholds[i] - thresholds[i - 1]))
  cost = (p_target * fnr + (1 - p_target) * fpr) / min(p_target, 1 - p_target)
  j = int(np.argmin(cost))
  return eer, eer_threshold, cost[j], thresholds[j]


def test_eer_and_min_dcf_agree_with_sklearn(report, examples):
  e = report["_embeddings"].astype(np.float64)
  e /= np.linalg.norm(e, axis=1, keepdims=True)
  i, j = np.triu_indices(len(e), k=1)
  scores = np.sum(e[i] * e[j], axis=1)
  labels = np.asarray(examples.speakers)[i] == np.asarray(examples.speakers)[j]
  eer, eer_threshold, dcf, dcf_threshold = sklearn_eer_and_min_dcf(scores, labels)
  assert 0 < report["eer"] < 1  # An untrained model: neither perfect nor empty.
  assert report["eer"] == pytest.approx(eer, abs=1e-9)
  assert report["eer_threshold"] == pytest.approx(eer_threshold, abs=1e-6)
  assert report["min_dcf"] == pytest.approx(dcf, abs=1e-9)
  assert report["min_dcf_threshold"] == pytest.approx(dcf_threshold, abs=1e-6)


def test_select_split_keeps_only_the_workdirs_speakers(tiny, examples, tmp_path):
  workdir, corpus = tiny["workdir"], tiny["corpus"]
  lists = workdir_lib.load_speakers(workdir)
  assert lists["dev"] and not set(lists["dev"]) & set(lists["train"])
  for split in ("dev", "train"):
    kept = evaluate.select_split(examples, corpus, workdir, split)
    assert set(kept.speakers) == set(lists[split])
    assert len(kept.features) == len(kept.utterance_ids) == 3 * len(lists[split])
  assert evaluate.select_split(examples, corpus, workdir, "all") is examples
  # A multi-corpus run names speakers "<corpus folder>/<speaker>".
  (tmp_path / "speakers.json").write_text(json.dumps(
      {"train": [], "dev": [f"{corpus.name}/{s}" for s in lists["dev"]]}))
  assert set(evaluate.select_split(examples, corpus, tmp_path, "dev").speakers) == set(lists["dev"])
  (tmp_path / "speakers.json").write_text(json.dumps({"train": [], "dev": ["nobody"]}))
  with pytest.raises(ValueError, match="none of the workdir's dev speakers"):
    evaluate.select_split(examples, corpus, tmp_path, "dev")


def not_json(constant):
  raise ValueError(f"{constant} is not JSON")


def test_cli_writes_report_and_plots(tiny, tmp_path):
  out, plots = tmp_path / "report.json", tmp_path / "plots"
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg")
  cmd = [sys.executable, "-m", "hive.evaluate", f"--workdir={tiny['workdir']}",
         f"--data={tiny['corpus']}", f"--data_dir={tiny['data_dir']}", f"--out={out}",
         f"--plots={plots}"]
  done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  saved = json.loads(out.read_text(), parse_constant=not_json)  # Strict: no Infinity/NaN.
  assert REPORT_KEYS <= set(saved) and saved["num_utterances"] == 24
  assert saved == json.loads(done.stdout.strip().splitlines()[-1], parse_constant=not_json)
  assert saved["checkpoint_step"] == 4 and saved["split"] == "all"
  assert voiceid.threshold_from_report(out) == saved["eer_threshold"]  # What calibrate stores.
  for name in ("det.png", "embeddings.png"):
    png = (plots / name).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
  assert saved["plots"] == [str(plots / "det.png"), str(plots / "embeddings.png")]


def test_consecutive_segments_by_hand():
  pieces = examples_lib.consecutive_segments(np.arange(10), 3)  # The tail of 1 joins the last.
  assert [p.tolist() for p in pieces] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
  assert [len(p) for p in examples_lib.consecutive_segments(np.arange(5), 3)] == [5]
  assert [len(p) for p in examples_lib.consecutive_segments(np.arange(6), 3)] == [3, 3]


def test_cut_segments_by_hand():
  mels = [np.arange(100 * 2, dtype=np.float32).reshape(100, 2), np.zeros((20, 2), np.float32)]
  ex = examples_lib.Examples(["a", "b"], ["s1", "s2"], np.array([0, 1], np.int32),
                            np.array([100, 20], np.int32), mels)
  cut = ex.cut_segments(30)
  # 100 frames -> 30, 30, 40 (the short tail joins the last segment); 20 frames stay whole.
  assert cut.utterance_ids == ["a#0", "a#1", "a#2", "b#0"]
  assert cut.num_frames.tolist() == [30, 30, 40, 20]
  assert cut.speakers == ["s1", "s1", "s1", "s2"] and cut.genders.tolist() == [0, 0, 0, 1]
  np.testing.assert_array_equal(np.concatenate(cut.features[:3]), mels[0])  # Nothing dropped.
  with pytest.raises(ValueError, match="at least one frame"):
    ex.cut_segments(0)


def test_single_utterance_speakers_need_segments(enc, examples):
  first = {}
  for i, s in enumerate(examples.speakers):
    first.setdefault(s, i)
  idx = sorted(first.values())
  one_each = examples_lib.Examples(
      [examples.utterance_ids[i] for i in idx], [examples.speakers[i] for i in idx],
      examples.genders[idx], examples.num_frames[idx], [examples.features[i] for i in idx])
  with pytest.raises(ValueError, match="--segment_seconds"):
    evaluate.evaluate(enc, one_each)
  report = evaluate.evaluate(enc, one_each.cut_segments(50))
  assert report["num_target_trials"] > 0 and report["num_speakers"] == 8


def test_degraded_copy_is_seeded_per_utterance_and_keeps_ids(tiny, enc, tmp_path):
  stored = builder_lib.Storage(store_waveform=True)
  prepared, _ = builder_lib.prepare(tiny["corpus"], tmp_path, enc.feature_config, storage=stored)
  examples = builder_lib.read_examples(prepared).first_per_speaker(2)
  a = evaluate.degraded(prepared, examples, "telephone+noise:10", enc.feature_config)
  b = evaluate.degraded(prepared, examples, "telephone+noise:10", enc.feature_config)
  assert a.utterance_ids == examples.utterance_ids and a.speakers == examples.speakers
  for x, y, clean in zip(a.features, b.features, examples.features):
    np.testing.assert_array_equal(x, y)  # The same corruption in every run.
    assert x.shape == clean.shape and not np.allclose(x, clean, atol=0.5)
  # Above 4 kHz a telephone line carries nothing: the top mel bands sit at the log floor.
  from hive import features
  top = np.mean([f[:, -8:].mean() for f in a.features])
  assert abs(top - np.log(features.LOG_FLOOR)) < 0.2


def test_listed_dev_speakers_join_the_file(tmp_path):
  from hive import config as config_lib
  from hive.data import input_pipeline
  c = config_lib.base_config().data
  assert input_pipeline.listed_dev_speakers(c) is None
  listing = tmp_path / "dev.txt"
  listing.write_text("# comment\nb\n\n a \n")
  c.dev_speakers, c.dev_speakers_file = ("c",), str(listing)
  assert input_pipeline.listed_dev_speakers(c) == ["c", "b", "a"]
  c.dev_speakers_file = str(tmp_path / "missing.txt")
  with pytest.raises(FileNotFoundError, match="missing.txt: no such dev speaker list"):
    input_pipeline.listed_dev_speakers(c)
