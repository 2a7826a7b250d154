"""benchmarks/ablation.py: each variant changes only what it says, and bad choices fail early."""

import argparse
import subprocess
import sys
import pathlib

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import ablation  # noqa: E402

TERMS = ("ge2e", "triplet", "speaker_id", "gender")


@pytest.mark.parametrize("name, term", [("GE2E", "ge2e"), ("triplet", "triplet"),
                                        ("speaker-ID", "speaker_id"),
                                        ("triplet semi-hard", "triplet")])
def test_single_objective_variants_switch_off_every_other_term(name, term):
  overrides = ablation.VARIANTS[name]
  assert {t: overrides[f"loss.weights.{t}"] for t in TERMS} == {t: float(t == term)
                                                                 for t in TERMS}


def test_only_the_semi_hard_variants_change_the_mining_and_mtl_changes_nothing():
  semi_hard = {"triplet semi-hard", "MTL semi-hard"}
  for name in semi_hard:
    assert ablation.VARIANTS[name]["loss.triplet_mining"] == "semi_hard"
  assert all("loss.triplet_mining" not in v for k, v in ablation.VARIANTS.items()
             if k not in semi_hard)
  assert ablation.VARIANTS["MTL"] == {}  # The config's own weights.
  assert ablation.VARIANTS["MTL semi-hard"] == {"loss.triplet_mining": "semi_hard"}
  assert set(ablation.DEFAULT_VARIANTS) == {"GE2E", "triplet", "speaker-ID", "MTL"}


def test_train_variant_passes_the_overrides_to_hive_main(monkeypatch, tmp_path):
  seen = {}

  def fake_run(argv, **kwargs):
    seen["argv"] = argv
    return subprocess.CompletedProcess(argv, 0, stdout='log\n{"seconds": 1.5}\n', stderr="")

  monkeypatch.setattr(ablation.subprocess, "run", fake_run)
  summary = ablation.train_variant("configs/release.py", ablation.VARIANTS["triplet semi-hard"],
                                   40, tmp_path)
  assert summary == {"seconds": 1.5}
  argv = seen["argv"]
  assert argv[1:3] == ["-m", "hive.main"]
  assert "--config.train.steps=40" in argv and f"--workdir={tmp_path}" in argv
  assert "--config.loss.triplet_mining=semi_hard" in argv
  assert "--config.loss.weights.ge2e=0.0" in argv and "--config.loss.weights.triplet=1.0" in argv


def test_a_failed_run_reports_its_stderr(monkeypatch, tmp_path):
  monkeypatch.setattr(ablation.subprocess, "run", lambda argv, **kw: subprocess.CompletedProcess(
      argv, 1, stdout="", stderr="error: no data"))
  with pytest.raises(RuntimeError, match="no data"):
    ablation.train_variant("configs/release.py", {}, 1, tmp_path)


def test_unknown_variant_is_refused_before_anything_runs(capsys):
  with pytest.raises(SystemExit):
    ablation.main(["--variants", "GE2E,quadruplet"])
  assert "quadruplet" in capsys.readouterr().err


def test_a_finished_variant_is_not_retrained(monkeypatch, tmp_path):
  calls = []

  def fake_run(argv, **kwargs):
    calls.append(argv)
    return subprocess.CompletedProcess(argv, 0, stdout='{"steps": 40, "seconds": 9.0}\n',
                                       stderr="")

  monkeypatch.setattr(ablation.subprocess, "run", fake_run)
  first = ablation.train_variant("configs/release.py", {}, 40, tmp_path)
  again = ablation.train_variant("configs/release.py", {}, 40, tmp_path)
  assert first == again == {"steps": 40, "seconds": 9.0} and len(calls) == 1
  ablation.train_variant("configs/release.py", {}, 80, tmp_path)  # Longer: trains on.
  assert len(calls) == 2


def test_section_says_when_it_is_partial():
  args = argparse.Namespace(section="S", config="configs/release.py", steps=40)
  row = {"train_seconds": 12.0, "corpora": {"c": dict(
      eer=0.1, min_dcf=0.5, identification_accuracy=0.75, gender_probe_accuracy=0.9,
      gender_accuracy=0.8)}}
  partial = ablation.section_text(args, {"GE2E": row}, planned=2)
  assert partial.startswith("## S\n") and "1 of 2 variants so far" in partial
  assert "| GE2E | c | 10.00% | 0.500 | 75.00% | 90.00% | 12 |" in partial
  done = ablation.section_text(args, {"GE2E": row, "MTL": row}, planned=2)
  assert "so far" not in done and "| MTL | c | 10.00% | 0.500 | 75.00% | 90.00% (80.00%) | 12 |" in done


def test_only_variants_that_train_the_gender_head_report_it():
  with_head = [n for n in ablation.VARIANTS if ablation.trains_gender_head(n)]
  assert with_head == ["MTL", "MTL semi-hard", "no waveform augmentation"]


def test_the_augmentation_variant_changes_only_the_waveform_augmentation():
  assert ablation.VARIANTS["no waveform augmentation"] == {
      "augment.wave.enabled": False, "data.store_waveform": True}  # Same records, same dev.


def test_update_section_replaces_one_section_and_keeps_the_others(tmp_path):
  import results
  path = tmp_path / "RESULTS.md"
  path.write_text("# hive benchmarks\n\n## A\n\nold a\n\n## B\n\nb\n")
  results.update_section("A", "## A\n\nnew a\n", path)
  assert path.read_text() == "# hive benchmarks\n\n## A\n\nnew a\n\n## B\n\nb\n"
  results.update_section("C", "## C\n\nc", path)  # A new title is appended.
  assert path.read_text() == "# hive benchmarks\n\n## A\n\nnew a\n\n## B\n\nb\n\n## C\n\nc\n"
