"""benchmarks/gender.py's pure parts: reading ages and accuracy per age group, by hand."""

import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import gender  # noqa: E402


def test_read_ages(tmp_path):
  (tmp_path / "spk2age").write_text("0001 12\n\n0002\t34\n")
  assert gender.read_ages(tmp_path) == {"0001": 12, "0002": 34}


@pytest.mark.parametrize("text", ["0001 twelve\n", "0001\n", "0001 12 f\n"])
def test_bad_age_line_names_file_and_line(tmp_path, text):
  (tmp_path / "spk2age").write_text("0000 40\n" + text)
  with pytest.raises(SystemExit, match=r"spk2age:2: expected"):
    gender.read_ages(tmp_path)


def test_missing_age_file_is_named(tmp_path):
  with pytest.raises(SystemExit, match="spk2age: not found"):
    gender.read_ages(tmp_path)


def test_accuracy_by_group_by_hand():
  predicted = np.array([True, True, False, False, True])
  female = np.array([True, False, False, True, True])
  child = np.array([True, True, True, False, False])
  groups = {"all": np.ones(5, bool), "children": child, "adults": ~child, "none": np.zeros(5, bool)}
  # Right: utterances 0, 2, 4. Children 0, 1, 2 -> 2 of 3; adults 3, 4 -> 1 of 2.
  assert gender.accuracy_by_group(predicted, female, groups) == {
      "all": 0.6, "children": pytest.approx(2 / 3), "adults": 0.5, "none": None}


def _utterances(genders, speaker="s1"):
  from hive.data.readers import Utterance
  return [Utterance(id=f"{speaker}-{i}", path=f"{speaker}-{i}.flac", speaker=speaker, gender=g)
          for i, g in enumerate(genders)]


@pytest.mark.parametrize("dev, train, ages, message", [
    ("", "mf", "s1 12\n", "no dev utterance .* has a gender label"),
    ("mf", "ff", "s1 12\n", "need both genders"),
    ("mf", "mf", "s2 12\n", r"spk2age has no age for speakers \['s1'\]"),
])
def test_unusable_labels_are_refused_before_any_model_loads(monkeypatch, tmp_path, dev, train,
                                                            ages, message):
  (tmp_path / "spk2age").write_text(ages)
  split = {"dev": _utterances(dev), "train": _utterances(train)}
  monkeypatch.setattr(gender, "utterances_of", lambda root, workdir, which: split[which])
  with pytest.raises(SystemExit, match=message):
    gender.main([str(tmp_path), "--no_write"])
