"""hive: speaker embeddings trained by multi-task learning, in JAX/Flax."""

import os

# TensorFlow only reads data here; its start-up notices (oneDNN, CPU features) would open
# every command's stderr. Set before any hive module imports it; the user's settings win.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def __getattr__(name):
  # `hive.Encoder` without importing JAX for users of the data tools alone.
  if name == "Encoder":
    from hive.encoder import Encoder
    return Encoder
  raise AttributeError(f"module 'hive' has no attribute {name!r}")
