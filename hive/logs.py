"""Console hygiene for the command-line entry points."""

from __future__ import annotations

import logging

from absl import logging as absl_logging

_NOISY = ("/orbax/", "/tensorflow_datasets/", "/jax/_src/", "/apache_beam/", "/grain/")


class _QuietLibraries(logging.Filter):
  """Drops orbax, TFDS and JAX chatter below ERROR (each checkpoint write alone logs
  ~20 lines); hive's own messages and every library's errors still show."""

  def filter(self, record):
    return record.levelno >= logging.ERROR or not any(n in record.pathname for n in _NOISY)


def quiet_libraries() -> None:
  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
    handler.addFilter(_QuietLibraries())
  # Beam logs through the standard root logger, not absl's: each worker's start-up alone
  # writes a dozen INFO lines.
  logging.getLogger("apache_beam").setLevel(logging.WARNING)
