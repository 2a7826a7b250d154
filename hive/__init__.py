"""hive: speaker embeddings trained by multi-task learning, in JAX/Flax."""
