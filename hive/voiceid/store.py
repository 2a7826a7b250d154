"""The speaker store: enrolled speakers' embeddings in one JSON file, and the math on it.

    {"format": "hive-voiceid", "version": 2, "embedding_dim": D,
     "model": {model record, hive/workdir.py}, "threshold": T,
     "threshold_source": "default" | "model: ..." | report path | "manual",
     "speakers": {name: {"embedding": [D floats, unit norm], "mean": [D floats],
                         "clips": n, "files": [...]}}}

"mean" is the unnormalised mean of the clip embeddings, kept so re-enrolment is an exact
running mean. A store belongs to one model (its record: settings, checkpoint step,
embedding size, centring mean); embeddings of another model are refused, since scores
across models mean nothing. Plain JSON (never pickle), written atomically, so a reader
(identify, verify) always reads a whole store without waiting. Writers change it through
`update_store`, which holds a lock (`.NAME.lock` beside it) from reading to writing, so
concurrent enrolments all land. Version 1 stores (whose model record held a digest of the
whole training config) are read and written back as version 2.

Why JSON and not an embedded database (SQLite): a store is read whole for every
identification anyway, holds one short vector per speaker, and stays a file a person can
read and copy; the lock is what it lacked.
"""

from __future__ import annotations

import copy
import json
import pathlib
from typing import Callable

import numpy as np

from hive import cli, workdir as workdir_lib

FORMAT = "hive-voiceid"
VERSION = 2
DEFAULT_THRESHOLD = 0.7
TOP_K = 3
LOCK_TIMEOUT = 60.0  # Seconds a writer waits for another: each holds the lock for milliseconds.


class VoiceIdError(cli.UserError):
  """A problem with the user's input, reported as one line and exit status 2."""


def new_store(model: dict, embedding_dim: int, threshold: float = DEFAULT_THRESHOLD,
              source: str = "default") -> dict:
  return {"format": FORMAT, "version": VERSION, "embedding_dim": int(embedding_dim),
          "model": dict(model), "threshold": float(threshold), "threshold_source": source,
          "speakers": {}}


def check_model(store: dict, model: dict, where: str = "speaker store") -> None:
  """Refuses a model (its record) other than the one that made the store's embeddings."""
  if int(model["embedding_dim"]) != store["embedding_dim"]:
    raise VoiceIdError(f"{where}: holds {store['embedding_dim']}-d embeddings, the model makes "
                       f"{model['embedding_dim']}-d ones; use the store's model or a new store")
  try:
    workdir_lib.check_same_model(store["model"], model, where)
  except workdir_lib.ModelMismatch as e:
    raise VoiceIdError(f"{e}; scores across two models mean nothing: use the store's model "
                       "or re-enroll into a new store") from None


def _unit(x) -> np.ndarray:
  x = np.asarray(x, np.float64)
  norm = np.linalg.norm(x)
  if not np.isfinite(norm) or norm == 0:
    raise VoiceIdError("cannot normalise a zero or non-finite embedding")
  return x / norm


def enroll(store: dict, name: str, embeddings, files) -> dict:
  """A new store with `embeddings` [K, D] of `files` added to speaker `name`."""
  name = (name or "").strip()
  if not name:
    raise VoiceIdError("enroll needs a speaker name (--speaker=NAME)")
  if name == "unknown":
    raise VoiceIdError("'unknown' is what identify prints for no match; choose another name")
  embeddings = np.asarray(embeddings, np.float64)
  files = [str(f) for f in files]
  if embeddings.ndim != 2 or len(embeddings) == 0 or len(embeddings) != len(files):
    raise VoiceIdError(f"enroll needs one embedding per file, got {embeddings.shape} for "
                       f"{len(files)} files")
  if embeddings.shape[1] != store["embedding_dim"]:
    raise VoiceIdError(f"embeddings are {embeddings.shape[1]}-d, the store holds "
                       f"{store['embedding_dim']}-d ones")
  store = copy.deepcopy(store)
  old = store["speakers"].get(name, {"mean": np.zeros(embeddings.shape[1]), "clips": 0,
                                     "files": []})
  clips = old["clips"] + len(embeddings)
  # Running mean of the clip embeddings: the old mean weighted by its clip count.
  mean = (np.asarray(old["mean"], np.float64) * old["clips"] + embeddings.sum(0)) / clips
  store["speakers"][name] = {"embedding": _unit(mean).tolist(), "mean": mean.tolist(),
                             "clips": int(clips), "files": list(old["files"]) + files}
  return store


def scores(store: dict, embedding) -> list[tuple[str, float]]:
  """(speaker, cosine score) for every enrolled speaker, best first."""
  if not store["speakers"]:
    raise VoiceIdError("the speaker store is empty: enroll speakers first")
  names = sorted(store["speakers"])
  enrolled = np.array([store["speakers"][n]["embedding"] for n in names], np.float64)
  enrolled /= np.linalg.norm(enrolled, axis=1, keepdims=True)
  cos = np.clip(enrolled @ _unit(embedding), -1.0, 1.0)
  order = np.argsort(-cos, kind="stable")  # Ties: alphabetical, so output is reproducible.
  return [(names[i], float(cos[i])) for i in order]


def identify(store: dict, embedding, threshold: float | None = None, top: int = TOP_K) -> dict:
  """Best match (None below the threshold), its score and the top candidates."""
  threshold = store["threshold"] if threshold is None else float(threshold)
  ranked = scores(store, embedding)
  best, score = ranked[0]
  return {"speaker": best if score >= threshold else None, "best": best, "score": score,
          "threshold": threshold,
          "candidates": [{"speaker": n, "score": s} for n, s in ranked[:top]]}


def verify(a, b, threshold: float = DEFAULT_THRESHOLD) -> dict:
  score = float(np.clip(np.dot(_unit(a), _unit(b)), -1.0, 1.0))
  return {"score": score, "same": score >= threshold, "threshold": float(threshold)}


def _check_store(obj, path) -> dict:
  """Validates a parsed store (migrating version 1); every problem names the file."""
  def bad(problem):
    return VoiceIdError(f"{path}: corrupt speaker store ({problem})")
  if not isinstance(obj, dict) or obj.get("format") != FORMAT:
    raise VoiceIdError(f"{path}: not a hive-voiceid speaker store (format "
                       f"{obj.get('format') if isinstance(obj, dict) else type(obj).__name__!r})")
  if obj.get("version") not in (1, VERSION):
    raise VoiceIdError(f"{path}: unsupported store version {obj.get('version')!r} "
                       f"(this hive reads 1 and {VERSION})")
  dim = obj.get("embedding_dim")
  if not isinstance(dim, int) or dim <= 0:
    raise bad(f"embedding_dim {dim!r}")
  if not isinstance(obj.get("model"), dict):
    raise bad("no model record")
  if obj["version"] == 1:
    # Version 1 recorded a digest of the whole training config, which changes with
    # fields that do not touch the model; step, centring and size still identify it.
    obj["model"].pop("config_digest", None)
    obj["model"]["embedding_dim"] = dim
    obj["version"] = VERSION
  threshold = obj.get("threshold")
  if not isinstance(threshold, (int, float)) or not -1 <= threshold <= 1:
    raise bad(f"threshold {threshold!r} is not a number in [-1, 1]")
  if not isinstance(obj.get("speakers"), dict):
    raise bad("no speakers table")
  for name, entry in obj["speakers"].items():
    try:
      vectors = [np.asarray(entry[k], np.float64) for k in ("embedding", "mean")]
      clips, files = int(entry["clips"]), list(entry["files"])
    except (KeyError, TypeError, ValueError) as e:
      raise bad(f"speaker {name!r}: {type(e).__name__}: {e}") from None
    if any(v.shape != (dim,) or not np.all(np.isfinite(v)) for v in vectors):
      raise bad(f"speaker {name!r}: embedding is not {dim} finite numbers")
    if clips < 1 or len(files) != clips:
      raise bad(f"speaker {name!r}: {clips} clips but {len(files)} files")
  obj.setdefault("threshold_source", "default")
  return obj


def load_store(path) -> dict:
  """Reads and validates a speaker store; raises VoiceIdError naming the file."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise VoiceIdError(f"{path}: no such speaker store (enroll a speaker to create it)")
  return _check_store(workdir_lib.read_json(path, "speaker store", VoiceIdError), path)


def save_store(path, store: dict) -> None:
  workdir_lib.write_atomically(path, json.dumps(store, indent=1, allow_nan=False) + "\n")


def lock_file(path) -> pathlib.Path:
  path = pathlib.Path(path)
  return path.with_name(f".{path.name}.lock")


def update_store(path, change: Callable[[dict | None], dict]) -> dict:
  """Read-modify-write of the store at `path` under its lock: `change` gets the store as it
  is now (None when there is none yet) and returns the new one, saved atomically before the
  lock is released. Raises VoiceIdError when another writer holds it for LOCK_TIMEOUT."""
  lock = workdir_lib.FileLock(lock_file(path), f"{path}: speaker store")
  try:
    lock.acquire(LOCK_TIMEOUT)
  except workdir_lib.Busy as e:
    raise VoiceIdError(f"{e}; try again") from None
  with lock:
    store = change(load_store(path) if pathlib.Path(path).exists() else None)
    save_store(path, store)
  return store
