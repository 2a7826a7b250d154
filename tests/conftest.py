"""Shared test set-up: CPU only, quiet TensorFlow, the shared data location."""

import os
import pathlib

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # TF must not grab a GPU JAX may use.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data():
  """../shared/data, or a skip naming what is missing."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"shared data not found at {SHARED_DATA}")
  return SHARED_DATA
