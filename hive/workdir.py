"""The workdir: the one module that names, writes and reads the files of a training run.

    WORKDIR/
      config.json            the training config (read back through hive/config.py's schema)
      speakers.json          {"train": [...], "dev": [...]}: the speaker-ID head's labels, dev split
      checkpoints/<step>/    orbax checkpoints (hive/checkpoint.py)
      embedding_mean.npz     the training speakers' mean embedding and its step (hive/centring.py)
      threshold.json         the calibrated decision threshold and its step (hive/voiceid)
      events.out.tfevents.*  TensorBoard scalars (clu)

An export (`hive.export`) has the same layout without the optimiser state. Every path goes
through `etils.epath`, as orbax's own do, so a workdir may be a bucket (`gs://...`) for hosts
that share no disk. Every file is written whole or not at all (`write_atomically`).

It also answers "is this the same model?": `model_settings` (what a model computes from audio:
features, encoder, heads) for fine-tuning, and `model_record` (those settings, the checkpoint
step and the centring mean) for speaker stores and embedding files, which must not mix
embeddings of two models.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile

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
  written whole by the store itself."""
  target = epath.Path(target)
  if "://" in str(target):
    (target.write_bytes if isinstance(data, bytes) else target.write_text)(data)
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data if isinstance(data, bytes) else data.encode("utf-8"))
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, target)
  except BaseException:
    epath.Path(tmp).unlink(missing_ok=True)
    raise
  return target


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
