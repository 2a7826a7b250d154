"""hive: speaker embeddings trained by multi-task learning, in JAX/Flax."""


def __getattr__(name):
  # `hive.Encoder` without importing JAX for users of the data tools alone.
  if name == "Encoder":
    from hive.encoder import Encoder
    return Encoder
  raise AttributeError(f"module 'hive' has no attribute {name!r}")
