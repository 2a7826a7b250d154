"""What every hive command shares: start-up, one-line errors, the compilation cache.

Each command module (`hive.main`, `hive.prepare`, `hive.evaluate`, `hive.embed`,
`hive.export`, `hive.centring`, `hive.voiceid`) defines its flags in a `define_flags()` that
runs only when it is the program (so importing several commands in one process, as tests
and notebooks do, cannot clash on flag names), a `main(argv)`, and a `run()` that is both
its `python -m` entry and its console script (pyproject.toml).

Bad input a user can fix ends a command with one line per problem, `error: ...`, on stderr
and exit status 2, never a traceback: every such error is a `UserError` (or one of the
standard file errors below), and so is a write that fails for lack of space or permission.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Callable

from hive import logs


class UserError(ValueError):
  """Bad input or state the user can fix; the message names the file and the problem."""


# OSErrors that are the user's environment rather than a bug: reported as one line.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
_FILE_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)


def error_lines(e: BaseException) -> list[str]:
  """The one-line messages a command prints for `e`."""
  if isinstance(e, OSError) and e.strerror and not isinstance(e, UserError):
    where = e.filename if e.filename is not None else "write"
    return [f"{where}: {e.strerror}"]
  return [line for line in str(e).splitlines() if line.strip()] or [type(e).__name__]


def is_user_error(e: BaseException, extra: tuple = ()) -> bool:
  if isinstance(e, (UserError,) + _FILE_ERRORS + tuple(extra)):
    return True
  return isinstance(e, OSError) and e.errno in _ENVIRONMENT_ERRNOS


def fail(e: BaseException) -> None:
  for line in error_lines(e):
    print(f"error: {line}", file=sys.stderr)
  sys.stdout.flush()
  # os._exit: orbax and TensorFlow threads would otherwise print shutdown noise
  # ("Event loop is closed") after the message; nothing is left to flush.
  sys.stderr.flush()
  os._exit(2)


def run(main: Callable, define_flags: Callable | None = None, errors: tuple = ()) -> None:
  """Runs a command's `main(argv)` under absl, turning user errors (`UserError`, missing
  files, a full disk, and the command's own `errors`) into one-line messages, status 2."""
  from absl import app
  if define_flags is not None:
    define_flags()

  def guarded(argv):
    logs.quiet_libraries()
    try:
      return main(argv)
    except Exception as e:  # noqa: BLE001 - re-raised unless it is the user's to fix.
      if is_user_error(e, errors):
        fail(e)
      raise

  app.run(guarded)


def no_arguments(argv) -> None:
  if len(argv) > 1:
    from absl import app
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")


def use_compilation_cache() -> None:
  """Keeps compiled XLA programs on disk, in $HIVE_CACHE/jax (default ~/.cache/hive/jax),
  so a command's next run skips compiling the batch shapes this one met (each takes a
  fraction of a second to seconds on a CPU). A cache directory already chosen
  (JAX_COMPILATION_CACHE_DIR) is left alone."""
  import jax
  if jax.config.jax_compilation_cache_dir is None:
    jax.config.update("jax_compilation_cache_dir", os.path.join(cache_root(), "jax"))
  # JAX's default keeps only programs that took over 1 s to compile; ours take less,
  # but a run meets dozens of them.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


def cache_root() -> str:
  """$HIVE_CACHE, default ~/.cache/hive: prepared datasets, compiled programs, RIR banks."""
  return os.environ.get("HIVE_CACHE", os.path.expanduser("~/.cache/hive"))


def hide_gpus_from_tensorflow() -> None:
  """tf.data only reads data here: keep TensorFlow off the accelerators JAX uses."""
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
