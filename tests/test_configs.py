"""Every shipped config builds, and saved configs are read back through the schema."""

import importlib.util
import json
import pathlib

import pytest

from hive import config as config_lib, workdir as workdir_lib
from hive.models import abstract_params

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[1] / "configs").glob("*.py"))


def load(path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_the_configs_are_found():
  assert {p.stem for p in CONFIGS} >= {"mtl", "ge2e", "triplet", "release"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_builds_a_model_and_round_trips(path, tmp_path):
  config = load(path)
  base = config_lib.base_config()
  # A config may set fields, never invent them (a typo would be silently ignored).
  assert set(config.to_dict()) == set(base.to_dict())
  for section in ("data", "model", "loss", "train", "eval", "augment"):
    assert set(config[section].to_dict()) == set(base[section].to_dict()), section
  abstract_params(config, 7)  # The model it describes can be built.
  workdir_lib.save_config(tmp_path, config)
  assert workdir_lib.load_config(tmp_path).to_dict() == config.to_dict()


def test_schema_fills_new_fields_drops_retired_and_refuses_unknown(tmp_path):
  saved = config_lib.base_config().to_dict()
  del saved["eval"]  # Written before the field existed: today's default.
  saved["data"]["dev_segments_per_speaker"] = 6  # Retired.
  saved["model"]["tdnn"]["dilations"] = [2, 5]  # JSON lists become the schema's tuples.
  (tmp_path / "config.json").write_text(json.dumps(saved))
  config = workdir_lib.load_config(tmp_path)
  assert config.eval.segment_seconds == config_lib.base_config().eval.segment_seconds
  assert "dev_segments_per_speaker" not in config.data
  assert config.model.tdnn.dilations == (2, 5)
  saved["model"]["tdnn"]["width"] = 3
  (tmp_path / "config.json").write_text(json.dumps(saved))
  with pytest.raises(ValueError, match=r"config.json: unknown config field 'model.tdnn.width'"):
    workdir_lib.load_config(tmp_path)
  saved["model"]["tdnn"] = 4
  (tmp_path / "config.json").write_text(json.dumps(saved))
  with pytest.raises(ValueError, match="'model.tdnn' must be a section"):
    workdir_lib.load_config(tmp_path)
