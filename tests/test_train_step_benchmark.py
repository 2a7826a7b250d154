"""benchmarks/train_step.py's pure parts: the fixed batch, medians of medians, ratios, gaps."""

import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import train_step  # noqa: E402


def test_batch_is_speaker_major_and_fixed():
  race = train_step.Race("tdnn", n=4, m=3, num_speakers=10)
  batch = train_step.make_batch(race)
  assert batch["features"].shape == (12, train_step.T, train_step.F)
  assert batch["features"].dtype == np.float32
  speakers = batch["speaker"].reshape(4, 3)
  assert (speakers == speakers[:, :1]).all()  # Rows j*M .. j*M+M-1 are speaker j.
  assert len(set(speakers[:, 0])) == 4 and speakers.max() < 10
  assert set(batch["gender"]) <= {0, 1}
  again = train_step.make_batch(race)
  for k in batch:
    np.testing.assert_array_equal(batch[k], again[k])


def _report(median, peak, losses=(1.0,)):
  return {"median_s": median, "peak_mb": peak, "losses": list(losses)}


def test_summary_is_median_of_process_medians():
  # LSTM batch: 64 x 10 = 640 utterances. hive's processes: 2, 4, 3 s -> median 3 s,
  # 213.3 utt/s; PyTorch's 6, 5, 9 s -> 6 s, 106.7 utt/s; ratio 2.0.
  runs = {"lstm_bf16": {"hive": [_report(2, 100), _report(4, 300), _report(3, 200)],
                        "torch": [_report(6, 50), _report(5, 70), _report(9, 60)]}}
  row = train_step.summarise(runs)["lstm_bf16"]
  assert row["hive"]["median_s"] == 3 and row["torch"]["median_s"] == 6
  assert row["hive"]["utterances_per_s"] == pytest.approx(640 / 3)
  assert row["hive"]["peak_mb"] == 200 and row["torch"]["peak_mb"] == 60
  assert row["ratio"] == pytest.approx(2.0)


def test_loss_gap_compares_bf16_with_f32_step_by_step():
  runs = {"tdnn_bf16": {"hive": [_report(1, 1, (10.0, 8.8))], "torch": [_report(1, 1, (5.0, 4.0))]},
          "tdnn_f32": {"hive": [_report(1, 1, (10.0, 8.0))], "torch": [_report(1, 1, (5.0, 4.0))]}}
  summary = train_step.summarise(runs)
  assert train_step.loss_gap(summary, "tdnn", "hive") == pytest.approx(0.1)
  assert train_step.loss_gap(summary, "tdnn", "torch") == 0.0
  assert train_step.loss_gap(summary, "lstm", "hive") is None


def test_unknown_race_is_an_error(capsys):
  with pytest.raises(SystemExit):
    train_step.main(["--races", "lstm_fp8"])
  assert "choose from lstm_bf16, lstm_f32, tdnn_bf16, tdnn_f32" in capsys.readouterr().err
