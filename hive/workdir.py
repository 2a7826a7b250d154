"""The workdir: the one module that names, writes and reads the files of a training run.

    WORKDIR/
      config.json            the training config (read back through hive/config.py's schema)
      speakers.json          {"train": [...], "dev": [...]}: the speaker-ID head's labels, dev split
      checkpoints/<step>/    orbax checkpoints (hive/checkpoint.py)
      embedding_mean.npz     the training speakers' mean embedding and its step (hive/centring.py)
      threshold.json         the calibrated decision threshold and its step (hive/voiceid)
      calibration.json       the score -> log-likelihood-ratio calibration and its step
      cohort.npz             AS-Norm's cohort: training speakers' mean embeddings, its step
      events.out.tfevents.*  TensorBoard scalars (clu)
      .train.lock            held by the training process writing the workdir (`training_lock`)

An export (`hive.export`) has the same layout without the optimiser state. Every path goes
through `etils.epath`, as orbax's own do, so a workdir may be a bucket (`gs://...`) for hosts
that share no disk. Every file is written whole or not at all (`write_atomically`), and a
write the disk refuses (full, read-only, not permitted) is a one-line `cli.StorageError`.
Read-modify-write of a shared file (a speaker store) and a workdir's training hold a
`FileLock`, so concurrent processes cannot lose each other's writes.

It also answers "is this the same model?": `model_settings` (what a model computes from audio:
features, encoder, heads) for fine-tuning, and `model_record` (those settings, the checkpoint
step and the centring mean) for speaker stores and embedding files, which must not mix
embeddings of two models.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import socket
import tempfile
import time

import ml_collections
import numpy as np
from absl import logging
from etils import epath

from hive import cli, config as config_lib, scoring

CONFIG_FILE = "config.json"
SPEAKERS_FILE = "speakers.json"
CHECKPOINTS_DIR = "checkpoints"
MEAN_FILE = "embedding_mean.npz"
THRESHOLD_FILE = "threshold.json"
LOCK_FILE = ".train.lock"


class BadWorkdirFile(cli.UserError):
  """A workdir file that cannot be used; the message names it and what to do."""


class ModelMismatch(cli.UserError):
  """Embeddings or parameters of one model offered to another; the message says how they differ."""


def path(workdir) -> epath.Path:
  """`workdir` as an absolute epath (orbax wants one); a URL such as gs://... as given."""
  p = epath.Path(workdir)
  return p if "://" in str(workdir) else p.resolve()


def checkpoint_dir(workdir) -> epath.Path:
  return path(workdir) / CHECKPOINTS_DIR


def write_atomically(target, data: str | bytes) -> epath.Path:
  """Writes `data` to `target` so that a reader (or a crash) never sees half a file: a
  temporary file beside it, flushed to disk, then renamed over it. A bucket object is
  written whole by the store itself. A write the disk refuses (full, read-only, not
  permitted) raises `cli.StorageError` naming `target`, and leaves the old file as it was."""
  target = epath.Path(target)
  data = data if isinstance(data, bytes) else data.encode("utf-8")
  if "://" in str(target):
    target.write_bytes(data)
    return target
  tmp = None
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, target)
  except BaseException as e:
    if tmp is not None:
      epath.Path(tmp).unlink(missing_ok=True)
    cause = cli.environment_error(e) if isinstance(e, OSError) else None
    if cause is not None:
      raise cli.storage_error(target, cause, needed=len(data)) from None
    raise
  return target


@contextlib.contextmanager
def staged_directory(out, needed_bytes: int = 0):
  """Yields a folder to write a whole directory (an export) into: a local one is staged
  beside `out` (`.OUT.export-PID.tmp`) and renamed into place when the block completes, so a
  failed or killed export leaves no `out` behind (a killed one's staging folder is removed by
  the next export); a bucket's is `out` itself. `out` must be new or empty. A refused write
  is a one-line StorageError naming `out` and the space needed."""
  out = epath.Path(out)
  if out.exists() and any(out.iterdir()):
    raise FileExistsError(f"{out} is not empty; export into a new or empty directory")
  local = "://" not in str(out)
  staging = out.parent / f".{out.name}.export-{os.getpid()}.tmp" if local else out
  try:
    if local:
      out.parent.mkdir(parents=True, exist_ok=True)
      for leftover in _leftover_exports(out):
        shutil.rmtree(leftover)
      shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    yield staging
    if local:
      os.replace(staging, out)  # Replaces an empty `out` too.
  except BaseException as e:
    if local:
      shutil.rmtree(staging, ignore_errors=True)
    cause = getattr(e, "cause", None) or (
        None if isinstance(e, cli.UserError) else cli.environment_error(e))
    if isinstance(cause, OSError):
      raise cli.storage_error(out, cause, needed_bytes) from None
    raise


def _leftover_exports(out: epath.Path) -> list[epath.Path]:
  """Staging folders of exports into `out` whose process is gone (killed mid-export)."""
  found = []
  for folder in out.parent.glob(f".{out.name}.export-*.tmp"):
    match = re.fullmatch(rf"\.{re.escape(out.name)}\.export-(\d+)\.tmp", folder.name)
    if match is None:
      continue
    try:
      os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
      found.append(folder)
    except PermissionError:
      pass  # Alive, another user's.
  return found


def write_npz(target, arrays: dict) -> epath.Path:
  """`np.savez` of `arrays`, written atomically."""
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  return write_atomically(target, buffer.getvalue())


def read_json(file, what: str, error: type[Exception] = BadWorkdirFile):
  """A JSON file's content; `error` naming the file and `what` it should be when it is
  not JSON."""
  try:
    return json.loads(epath.Path(file).read_text(encoding="utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise error(f"{file}: not a JSON {what} ({e})") from None


# --- locks ------------------------------------------------------------------------


class Busy(cli.UserError):
  """Another process holds a lock this one needs; the message names it and what to do."""


class FileLock:
  """An exclusive lock on `file` (created if missing) for one process at a time.

  `fcntl.flock` on an open file: the operating system drops it when the process ends, even
  by kill -9, so a lock file left behind never blocks anyone (it is never deleted: deleting
  it would let two processes lock two different files). The file names the holder (pid,
  host) for the message others get. Local files only. Not the `filelock` package: it is not
  in the pinned requirements (it comes only with torch) and cannot name the holder.
  """

  def __init__(self, file, what: str):
    self.file, self.what, self._fd = str(file), what, None

  def acquire(self, timeout: float = 0.0, poll: float = 0.05) -> "FileLock":
    """Takes the lock, waiting up to `timeout` seconds; raises Busy naming the holder."""
    os.makedirs(os.path.dirname(os.path.abspath(self.file)), exist_ok=True)
    fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    while True:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
      except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
          holder = self.holder()
          os.close(fd)
          if e.errno not in (errno.EAGAIN, errno.EACCES):
            raise
          raise Busy(f"{self.what} is in use by another process"
                     f"{f' ({holder})' if holder else ''}"
                     f"{f'; waited {timeout:g} s' if timeout else ''}") from None
        time.sleep(poll)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    self._fd = fd
    return self

  def holder(self) -> str:
    """Who holds (or last held) the lock, as its file says: "pid N on HOST"."""
    try:
      with open(self.file, encoding="utf-8") as f:
        return f.read(200).strip()
    except OSError:
      return ""

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # Closing the file drops the lock.
      self._fd = None

  @property
  def held(self) -> bool:
    return self._fd is not None

  def __enter__(self) -> "FileLock":
    return self if self.held else self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()

  def __del__(self):
    self.release()


def training_lock(workdir) -> FileLock | None:
  """The lock a training process holds on its workdir, taken at once or refused (Busy):
  two runs writing the same checkpoints would overwrite each other. None for a bucket
  (no locks there: one run per bucket workdir is the user's to keep)."""
  if "://" in str(workdir):
    logging.warning("%s: a bucket workdir cannot be locked; make sure no other run writes it",
                    workdir)
    return None
  lock = FileLock(path(workdir) / LOCK_FILE, f"{workdir}: training")
  try:
    return lock.acquire()
  except Busy as e:
    raise Busy(f"{e}: two runs must not write one workdir; wait for that run to finish (or "
               "stop it) and run this command again, or choose another --workdir") from None


# --- config and speakers -------------------------------------------------------


def save_config(workdir, config: ml_collections.ConfigDict) -> None:
  write_atomically(path(workdir) / CONFIG_FILE, config.to_json_best_effort(indent=2,
                                                                            sort_keys=True))


def load_config(workdir) -> ml_collections.ConfigDict:
  """The workdir's config, read through the schema (hive/config.py)."""
  file = path(workdir) / CONFIG_FILE
  if not file.is_file():
    raise FileNotFoundError(f"{file}: no saved config (is {workdir} a hive workdir?)")
  saved = read_json(file, "config")
  if not isinstance(saved, dict):
    raise BadWorkdirFile(f"{file}: not a config (a JSON object expected)")
  return config_lib.from_dict(saved, str(file))


def save_speakers(workdir, train_speakers, dev_speakers) -> None:
  """The speaker-ID head's label names and the held-out dev speakers."""
  write_atomically(path(workdir) / SPEAKERS_FILE, json.dumps(
      {"train": list(train_speakers), "dev": list(dev_speakers)}, indent=1))


def load_speakers(workdir) -> dict:
  file = path(workdir) / SPEAKERS_FILE
  if not file.is_file():
    raise FileNotFoundError(f"{file}: no speaker list (is {workdir} a hive workdir?)")
  speakers = read_json(file, "speaker list")
  if not (isinstance(speakers, dict) and isinstance(speakers.get("train"), list)
          and isinstance(speakers.get("dev", []), list)):
    raise BadWorkdirFile(f"{file}: expected {{\"train\": [...], \"dev\": [...]}}")
  return speakers


# --- the training mean embedding (hive/centring.py) ------------------------------


def save_mean(workdir, mean, step: int) -> epath.Path:
  return write_npz(path(workdir) / MEAN_FILE,
                   {"mean": np.asarray(mean, np.float32), "step": np.int64(step)})


def read_mean(workdir) -> tuple[np.ndarray, int] | None:
  """(mean, step it was fitted for), or None when the workdir has no mean."""
  file = path(workdir) / MEAN_FILE
  if not file.is_file():
    return None
  try:
    with file.open("rb") as stream, np.load(stream, allow_pickle=False) as f:
      return np.asarray(f["mean"]), int(f["step"])
  except (ValueError, OSError, KeyError, TypeError) as e:
    # numpy's own message for a non-.npz file talks about pickles: not helpful here.
    why = "not a .npz file" if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
    raise BadWorkdirFile(f"{file}: not a hive mean-embedding file ({why}); refit it with "
                         "python -m hive.centring --workdir=...") from None


def load_mean(workdir, embed_dim: int, step: int) -> np.ndarray | None:
  """The workdir's mean embedding [embed_dim] for checkpoint `step`; None when it has none,
  or one fitted for another step (logged: the embeddings are then not centred)."""
  found = read_mean(workdir)
  if found is None:
    return None
  mean, fitted = found
  file = path(workdir) / MEAN_FILE
  if fitted != step:
    logging.warning("%s was fitted for step %d, not %d: embeddings are not centred "
                    "(python -m hive.centring --workdir=%s --step=%d fits one)",
                    file, fitted, step, workdir, step)
    return None
  problem = scoring.mean_problem(mean, embed_dim)
  if problem:
    raise BadWorkdirFile(f"{file}: {problem}; refit it with python -m hive.centring "
                         "--workdir=...")
  return mean.astype(np.float64)


# --- the calibrated threshold (hive/voiceid) ------------------------------------


def save_threshold(workdir, record: dict) -> epath.Path:
  return write_atomically(path(workdir) / THRESHOLD_FILE, json.dumps(record, indent=1) + "\n")


def read_threshold(workdir) -> dict | None:
  """The threshold record, or None when the workdir has none."""
  file = path(workdir) / THRESHOLD_FILE
  if not file.is_file():
    return None
  record = read_json(file, "threshold file")
  if not isinstance(record, dict) or not isinstance(record.get("threshold"), (int, float)):
    raise BadWorkdirFile(f"{file}: no numeric threshold")
  return record


# --- the score calibration and the AS-Norm cohort (hive/scoring.py) -------------

CALIBRATION_FILE = "calibration.json"
COHORT_FILE = "cohort.npz"


def save_calibration(workdir, record: dict) -> epath.Path:
  return write_atomically(path(workdir) / CALIBRATION_FILE,
                          json.dumps(record, indent=1, allow_nan=False) + "\n")


def read_calibration(workdir) -> dict | None:
  """The calibration record ({"slope", "offset", "far_thresholds": [[far, threshold,
  false-reject rate], ...], "checkpoint_step", "centring", ...}), or None when the workdir
  has none."""
  file = path(workdir) / CALIBRATION_FILE
  if not file.is_file():
    return None
  record = read_json(file, "calibration file")
  numbers = isinstance(record, dict) and all(
      isinstance(record.get(k), (int, float)) and not isinstance(record.get(k), bool)
      for k in ("slope", "offset"))
  if not numbers or not record["slope"] > 0:
    raise BadWorkdirFile(f"{file}: expected a numeric slope > 0 and offset (recalibrate: "
                         "python -m hive.voiceid calibrate --workdir=... --report=...)")
  table = record.get("far_thresholds", [])
  if not (isinstance(table, list) and all(
      isinstance(row, list) and len(row) == 3 and
      all(isinstance(x, (int, float)) for x in row) for row in table)):
    raise BadWorkdirFile(f"{file}: far_thresholds must be [far, threshold, frr] rows")
  return record


def save_cohort(workdir, embeddings, speakers, step: int, centring: str) -> epath.Path:
  """AS-Norm's cohort: one unit embedding per training speaker (`speakers` names them),
  made by checkpoint `step` with the centring mean whose `mean_digest` is `centring`."""
  embeddings = np.asarray(embeddings, np.float32)
  if embeddings.ndim != 2 or len(embeddings) != len(speakers):
    raise ValueError(f"a cohort needs one embedding per speaker, got {embeddings.shape} for "
                     f"{len(speakers)} speakers")
  return write_npz(path(workdir) / COHORT_FILE, {
      "embeddings": embeddings, "speakers": np.asarray(list(speakers), np.str_),
      "step": np.int64(step), "centring": np.asarray(centring, np.str_)})


def read_cohort(workdir) -> dict | None:
  """{"embeddings" [C, D], "speakers" [C], "step", "centring"}, or None when the workdir
  has no cohort."""
  file = path(workdir) / COHORT_FILE
  if not file.is_file():
    return None
  try:
    with file.open("rb") as stream, np.load(stream, allow_pickle=False) as f:
      cohort = {"embeddings": np.asarray(f["embeddings"], np.float64),
                "speakers": [str(s) for s in f["speakers"]], "step": int(f["step"]),
                "centring": str(f["centring"])}
  except (ValueError, OSError, KeyError, TypeError) as e:
    why = "not a .npz file" if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
    raise BadWorkdirFile(f"{file}: not a hive cohort file ({why}); rebuild it with "
                         "python -m hive.evaluate --split=train --write_cohort ...") from None
  if cohort["embeddings"].ndim != 2 or len(cohort["embeddings"]) != len(cohort["speakers"]):
    raise BadWorkdirFile(f"{file}: {cohort['embeddings'].shape} embeddings for "
                         f"{len(cohort['speakers'])} speakers")
  return cohort


# --- model identity --------------------------------------------------------------


def model_settings(config: ml_collections.ConfigDict) -> dict:
  """The settings that define what a model computes from audio: its features, encoder and
  heads (not its compute dtype), flattened to {"model.tdnn.channels": 128, ...} with tuples
  as lists, so a config read back from JSON compares equal."""
  model = config.model
  settings = {"data.n_mels": config.data.n_mels, "data.trim_silence": config.data.trim_silence,
              **{f"model.{k}": model[k] for k in ("encoder", "embed_dim", "speaker_head",
                                                    "input_norm")}}
  if model.encoder in model:  # The chosen encoder's own sizes.
    for key, value in model[model.encoder].items():
      settings[f"model.{model.encoder}.{key}"] = value
  return json.loads(json.dumps(settings, default=list))


def settings_differences(theirs: ml_collections.ConfigDict,
                         ours: ml_collections.ConfigDict) -> list[str]:
  """Human-readable differences of two configs' model settings (empty: the same model)."""
  a, b = model_settings(theirs), model_settings(ours)
  return [f"{k}={a.get(k)!r} there, {b[k]!r} here" for k in b if a.get(k) != b[k]]


def check_same_settings(workdir, config: ml_collections.ConfigDict) -> None:
  """Raises ModelMismatch when `workdir`'s model settings differ from `config`'s: parameter
  shapes alone would not catch, e.g., another dilation or input normalisation."""
  differ = settings_differences(load_config(workdir), config)
  if differ:
    raise ModelMismatch(f"{workdir}: its model settings differ from this config's: "
                        f"{'; '.join(differ)}")


def digest(value) -> str:
  """A short digest of a JSON-able value; equal values give equal digests."""
  text = json.dumps(value, sort_keys=True, default=list)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def mean_digest(mean) -> str:
  """A short digest that tells two centring means apart ("none" for no centring)."""
  if mean is None:
    return "none"
  return hashlib.sha256(np.asarray(mean, np.float32).tobytes()).hexdigest()[:16]


def model_record(config, step: int | None, mean, source=None) -> dict:
  """What identifies the model that made an embedding: its settings, its checkpoint step
  and its centring mean (stored by speaker stores and embedding files)."""
  return {"workdir": str(path(source)) if source else None,
          "step": None if step is None else int(step),
          "settings_digest": digest(model_settings(config)),
          "centring": mean_digest(mean),
          "embedding_dim": int(config.model.embed_dim)}


def check_same_model(stored: dict, current: dict, where: str) -> None:
  """Raises ModelMismatch when embeddings made by the model `stored` describes would be
  compared with those of `current` (two `model_record`s): scores across models mean
  nothing. Fields a record lacks (written by an older hive) are not compared."""
  for key, what in (("embedding_dim", "embedding size"), ("settings_digest", "model settings"),
                    ("step", "checkpoint step"), ("centring", "centring")):
    ours, theirs = stored.get(key), current.get(key)
    if key == "centring" and ours is None and theirs is not None:
      ours = "none"  # Records from before centring existed were made without it.
    if ours is not None and theirs is not None and ours != theirs:
      raise ModelMismatch(
          f"{where}: made by another model ({what} {ours} there, {theirs} now; its workdir "
          f"{stored.get('workdir')}); use that model (--workdir/--step) or start afresh")
