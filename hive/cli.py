"""What every hive command shares: start-up, one-line errors, the compilation cache.

Each command module (`hive.main`, `hive.prepare`, `hive.evaluate`, `hive.embed`,
`hive.export`, `hive.centring`, `hive.voiceid`) defines its flags in a `define_flags()` that
runs only when it is the program (so importing several commands in one process, as tests
and notebooks do, cannot clash on flag names), a `main(argv)`, and a `run()` that is both
its `python -m` entry and its console script (pyproject.toml).

Bad input a user can fix ends a command with one line per problem, `error: ...`, on stderr
and exit status 2, never a traceback: every such error is a `UserError` (or one of the
standard file errors below), and so is a write that fails for lack of space or permission,
however a library wraps it (orbax and TensorFlow report the operating system's error as text
in their own exception types): `environment_error` finds it, and the line names the path, the
cause and, for a full disk, the disk and its free space.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import sys
from typing import Callable

from hive import logs


class UserError(ValueError):
  """Bad input or state the user can fix; the message names the file and the problem."""


# OSErrors that are the user's environment rather than a bug: reported as one line.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_FILE_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)
# How libraries that wrap the OS error in their own exception spell it: tensorstore (orbax)
# appends "[os_error_code='28']", TensorFlow, TFDS and array_record quote strerror.
_ERRNO_TEXT = re.compile(r"os_error_code='(\d+)'")
_STRERRORS = {os.strerror(n): n for n in _ENVIRONMENT_ERRNOS}
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])(/[^\s\"';,]+)")


class StorageError(UserError):
  """A write the disk refused (full, over quota, read-only, not permitted); the message
  names the path, the cause and, for a full disk, its free space. `cause`: the OSError."""

  def __init__(self, message: str, cause: OSError | None = None):
    super().__init__(message)
    self.cause = cause


def format_size(size: float) -> str:
  for unit in ("B", "KiB", "MiB", "GiB"):
    if size < 1024 or unit == "GiB":
      return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
    size /= 1024
  raise AssertionError("unreachable")


def disk_of(path) -> tuple[str, int] | None:
  """(mount point, free bytes) of the local filesystem that holds `path` (or would: its
  nearest existing folder); None for a bucket address or when it cannot be told."""
  if path is None or "://" in str(path):
    return None
  folder = os.path.abspath(str(path))
  while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
    folder = os.path.dirname(folder)
  try:
    free = shutil.disk_usage(folder).free
  except OSError:
    return None
  mount = folder
  while not os.path.ismount(mount):
    mount = os.path.dirname(mount)
  return mount, free


def storage_error(path, cause: OSError, needed: int | None = None) -> StorageError:
  """The one-line error for a write to `path` that failed with `cause`; `needed`: bytes the
  write needs, when known."""
  line = f"{path}: {cause.strerror or os.strerror(cause.errno)}"
  if cause.errno in _SPACE_ERRNOS:
    disk = disk_of(path)
    room = f"{disk[0]} has {format_size(disk[1])} free" if disk else ""
    need = f"about {format_size(needed)} needed" if needed else ""
    if room or need:
      line += f" ({'; '.join(x for x in (room, need) if x)})"
    line += "; free some space or use a disk with room"
  return StorageError(line, cause)


def _chain(e: BaseException):
  """`e` and the exceptions it was raised from or during, once each."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    yield e
    e = e.__cause__ or e.__context__


def error_in_text(text: str) -> OSError | None:
  """The OS error a library's message reports as text, with the last absolute path in it as
  its filename (the file being written, in the messages of orbax and TFDS); or None."""
  code = _ERRNO_TEXT.search(text)
  number = int(code.group(1)) if code else next(
      (n for s, n in _STRERRORS.items() if s in text), None)
  if number not in _ENVIRONMENT_ERRNOS:
    return None
  paths = _ABSOLUTE_PATH.findall(text)
  return OSError(number, os.strerror(number), paths[-1].rstrip(".:)]") if paths else None)


def environment_error(e: BaseException) -> OSError | None:
  """The full disk, quota, read-only disk or refused permission behind `e`, wherever it is
  in the chain of exceptions and however a library wrapped it; None when there is none."""
  for link in _chain(e):
    if isinstance(link, UserError):
      return None  # Already worded for the user.
    if isinstance(link, OSError) and link.errno in _ENVIRONMENT_ERRNOS:
      return link
    found = error_in_text(str(link))
    if found is not None:
      return found
  return None


def error_lines(e: BaseException) -> list[str]:
  """The one-line messages a command prints for `e`."""
  cause = None if isinstance(e, UserError) else environment_error(e)
  if cause is not None:
    return [str(storage_error(cause.filename or "write", cause))]
  if isinstance(e, OSError) and e.strerror and not isinstance(e, UserError):
    where = e.filename if e.filename is not None else "write"
    return [f"{where}: {e.strerror}"]
  return [line for line in str(e).splitlines() if line.strip()] or [type(e).__name__]


def is_user_error(e: BaseException, extra: tuple = ()) -> bool:
  if isinstance(e, (UserError,) + _FILE_ERRORS + tuple(extra)):
    return True
  return environment_error(e) is not None


# Libraries that write in background threads, log a failed write there and raise it again
# in the main thread: orbax (checkpoints) and clu (TensorBoard events).
_RERAISING_WRITERS = ("/orbax/", "/clu/")


class ReportedByHive(logging.Filter):
  """Drops the error logs orbax and clu write (with tracebacks, from each background thread
  the failure passes through) of a write the disk refused: they raise it again in the main
  thread, where it becomes the command's one `error:` line."""

  def filter(self, record):
    if record.levelno < logging.ERROR or not any(p in record.pathname
                                                 for p in _RERAISING_WRITERS):
      return True
    exc = record.exc_info[1] if record.exc_info else None
    return not (error_in_text(record.getMessage()) or (exc and environment_error(exc)))


def _drop_background_noise(hook: Callable) -> Callable:
  """An unraisable-exception hook without the echoes of a failure orbax raises in the main
  thread (which the command then reports once):
    * tensorstore's "Event loop is closed": when one write of a save fails, orbax closes the
      event loop while other writes are in flight, and each says it cannot call back;
    * orbax's coroutines that failed alongside the one raised (every array of a damaged
      checkpoint it was reading), reported again as "Exception ignored in: <coroutine>".
  Anything else goes to `hook`."""
  def hook_without_noise(unraisable):
    value, source = unraisable.exc_value, getattr(unraisable, "object", None)
    if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
      return
    code = getattr(source, "cr_code", None)
    if code is not None and "/orbax/" in code.co_filename:
      return
    hook(unraisable)
  hook_without_noise.drops_background_noise = True
  return hook_without_noise


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
  from absl import app, logging as absl_logging
  if define_flags is not None:
    define_flags()

  def guarded(argv):
    logs.quiet_libraries()
    handler = absl_logging.get_absl_handler()
    if not any(isinstance(f, ReportedByHive) for f in handler.filters):
      handler.addFilter(ReportedByHive())
    if not getattr(sys.unraisablehook, "drops_background_noise", False):
      sys.unraisablehook = _drop_background_noise(sys.unraisablehook)
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
