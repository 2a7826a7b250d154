"""One-shot speaker identification and verification with a trained hive model.

    python -m hive.voiceid enroll --workdir=runs/mtl --db=speakers.json --speaker=alice a.flac ...
    python -m hive.voiceid identify --db=speakers.json [--json] [--threshold=T] query.flac ...
    python -m hive.voiceid verify --workdir=runs/mtl a.flac b.flac [--threshold=T]
    python -m hive.voiceid calibrate --db=speakers.json --report=report.json
    python -m hive.voiceid calibrate --workdir=runs/mtl --report=report.json

enroll     embeds the clips and stores the speaker's normalised mean embedding
           and clip count; enrolling a known name again adds the new clips (the
           mean runs over all of that speaker's clips). Clips already enrolled
           for the name are skipped.
identify   prints, per file, the best-matching speaker and its cosine score, or
           "unknown" when the score is below the threshold, and the top-3
           candidates; --json prints one JSON object per line instead. The
           model defaults to the workdir and step recorded in the store. An
           unreadable file gets its error line and the others go on; the
           exit status is then 2.
verify     prints the cosine score of two files and "same speaker" or
           "different speakers".
calibrate  stores a threshold in the speaker store (--db), or with the model
           (--workdir without --db: WORKDIR/threshold.json, for its latest
           checkpoint): the `eer_threshold` of an evaluation report
           (`python -m hive.evaluate ... --out=report.json`) given by
           --report, or a number given by --threshold. (enroll with
           --threshold stores it in the store the same way.)

Threshold: a cosine score at or above it means "same speaker". Unless
--threshold is given, identify (and verify with --db) use the store's
threshold. A new store starts with the model's threshold (its threshold.json,
when calibrated for that checkpoint and training mean), else DEFAULT_THRESHOLD
(0.7); verify without --db uses the model's threshold the same way. 0.7 is
only a prior for a trained model: calibrate for yours, on held-out speakers, with
    python -m hive.evaluate --workdir=runs/mtl --data=DEV_CORPUS --split=dev --out=report.json
    python -m hive.voiceid calibrate --db=speakers.json --report=report.json
    python -m hive.voiceid calibrate --workdir=runs/mtl --report=report.json
or per command with `--threshold=auto --report=report.json` (the report's
equal-error-rate threshold).

The speaker store is plain JSON (never pickle), written atomically:
    {"format": "hive-voiceid", "version": 1, "embedding_dim": D,
     "model": {"workdir", "step", "config_digest", "centring"}, "threshold": T,
     "threshold_source": "default" | "model: ..." | report path | "manual",
     "speakers": {name: {"embedding": [D floats, unit norm], "mean": [D floats],
                         "clips": n, "files": [...]}}}
"mean" is the unnormalised mean of the clip embeddings, kept so re-enrolment
is an exact running mean. A store belongs to one model (config digest,
checkpoint step, embedding size, training mean embedding: "centring" is the
digest of hive/centring.py's mean, "none" without one, as in stores written
before centring existed); embeddings of another model are refused,
since scores across models mean nothing.

Bad input (missing, empty or non-audio file, missing or corrupt store, an
empty store, a missing --speaker) ends with a one-line `error: ...` on stderr
and exit status 2.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import os
import pathlib
import sys
import tempfile

import numpy as np
from absl import app, flags
from etils import epath

from hive import centring, logs
from hive.data import audio

FORMAT = "hive-voiceid"
VERSION = 1
DEFAULT_THRESHOLD = 0.7
TOP_K = 3
COMMANDS = ("enroll", "identify", "verify", "calibrate")


def define_flags() -> None:
  """Defined only when run as a program: imported beside hive.evaluate or hive.embed
  (tests, notebooks), module-level flags of the same names would clash."""
  flags.DEFINE_string("workdir", None, "Training workdir (identify: default the store's).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the store's, else latest).")
  flags.DEFINE_string("db", None, "Speaker store (JSON).")
  flags.DEFINE_string("speaker", None, "Name to enroll the clips under.")
  flags.DEFINE_string("threshold", None, "Cosine threshold: a number in [-1, 1], or 'auto' for "
                      "the eer_threshold of --report.")
  flags.DEFINE_string("report", None, "Evaluation report JSON from hive.evaluate --out.")
  flags.DEFINE_bool("json", False, "identify/verify: one JSON object per line.")


class VoiceIdError(ValueError):
  """A problem with the user's input, reported as one line and exit status 2."""


# --- the store ----------------------------------------------------------------


def config_digest(config) -> str:
  """A short digest of the model's training config; equal configs give equal digests."""
  as_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  text = json.dumps(as_dict, sort_keys=True, default=str)  # Tuples and lists agree.
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_info(encoder) -> dict:
  """What identifies the model that made a store's embeddings."""
  from hive import checkpoint
  return {"workdir": str(checkpoint.workdir_path(encoder.source)) if encoder.source else None,
          "step": None if encoder.step is None else int(encoder.step),
          "config_digest": config_digest(encoder.config),
          "centring": centring.digest(encoder.embedding_mean)}


def new_store(model: dict, embedding_dim: int, threshold: float = DEFAULT_THRESHOLD,
              source: str = "default") -> dict:
  return {"format": FORMAT, "version": VERSION, "embedding_dim": int(embedding_dim),
          "model": dict(model), "threshold": float(threshold), "threshold_source": source,
          "speakers": {}}


def check_model(store: dict, model: dict, embedding_dim: int, where: str = "speaker store"):
  """Refuses a model other than the one that made the store's embeddings."""
  if int(embedding_dim) != store["embedding_dim"]:
    raise VoiceIdError(f"{where}: holds {store['embedding_dim']}-d embeddings, the model makes "
                       f"{embedding_dim}-d ones; use the store's model or a new store")
  ours = store["model"]
  for key in ("config_digest", "step"):
    if ours.get(key) is not None and model.get(key) is not None and ours[key] != model[key]:
      raise VoiceIdError(
          f"{where}: made by another model ({key} {ours[key]} in the store, {model[key]} now; "
          f"store workdir {ours.get('workdir')}); use that model (--workdir/--step) or a new store")
  if "centring" in model and ours.get("centring", "none") != model["centring"]:
    raise VoiceIdError(
        f"{where}: its embeddings were made with centring {ours.get('centring', 'none')}, the "
        f"model now centres with {model['centring']} (see hive/centring.py); scores across "
        f"the two mean nothing: re-enroll into a new store")


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
  """Validates a parsed store; every problem names the file."""
  def bad(problem):
    return VoiceIdError(f"{path}: corrupt speaker store ({problem})")
  if not isinstance(obj, dict) or obj.get("format") != FORMAT:
    raise VoiceIdError(f"{path}: not a hive-voiceid speaker store (format "
                       f"{obj.get('format') if isinstance(obj, dict) else type(obj).__name__!r})")
  if obj.get("version") != VERSION:
    raise VoiceIdError(f"{path}: unsupported store version {obj.get('version')!r} "
                       f"(this hive reads {VERSION})")
  dim = obj.get("embedding_dim")
  if not isinstance(dim, int) or dim <= 0:
    raise bad(f"embedding_dim {dim!r}")
  if not isinstance(obj.get("model"), dict):
    raise bad("no model record")
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
  try:
    obj = json.loads(path.read_text(encoding="utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise VoiceIdError(f"{path}: not a JSON speaker store ({e})") from None
  return _check_store(obj, path)


def save_store(path, store: dict) -> None:
  _write_atomically(path, json.dumps(store, indent=1, allow_nan=False) + "\n")


def _write_atomically(path, text: str) -> None:
  """A reader (or a crash) never sees a half-written file."""
  if "://" in str(path):  # A bucket: each object is written whole anyway.
    epath.Path(path).write_text(text)
    return
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


# --- thresholds ---------------------------------------------------------------


def _check_threshold(value: float, where: str) -> float:
  if not math.isfinite(value) or not -1 <= value <= 1:
    raise VoiceIdError(f"{where}: threshold {value} is not a cosine score in [-1, 1]")
  return float(value)


def threshold_from_report(path, model: dict | None = None) -> float:
  """The eer_threshold of a hive.evaluate report, checked against `model` (a store's
  "model" entry, or `model_info` of a loaded model): same step and training mean."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise VoiceIdError(f"{path}: no such evaluation report")
  try:
    report = json.loads(path.read_text(encoding="utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise VoiceIdError(f"{path}: not a JSON evaluation report ({e})") from None
  value = report.get("eer_threshold") if isinstance(report, dict) else None
  if not isinstance(value, (int, float)):
    raise VoiceIdError(f"{path}: no numeric eer_threshold (is it a hive.evaluate --out report?)")
  if model is not None:
    for key, what in (("step", "checkpoint_step"), ("centring", "centring")):
      ours, theirs = model.get(key), report.get(what)
      if ours is not None and theirs is not None and ours != theirs:
        raise VoiceIdError(f"{path}: evaluates a model with {what} {theirs}, the model it "
                           f"would calibrate has {ours}")
  return _check_threshold(float(value), str(path))


def model_threshold(encoder) -> tuple[float, str]:
  """(threshold, source): the model's calibrated threshold (WORKDIR/threshold.json) when
  it was calibrated for this checkpoint and training mean, else DEFAULT_THRESHOLD."""
  from hive import checkpoint
  if not encoder.source:
    return DEFAULT_THRESHOLD, "default"
  path = epath.Path(encoder.source) / checkpoint.THRESHOLD_FILE
  if not path.is_file():
    return DEFAULT_THRESHOLD, "default"
  try:
    saved = json.loads(path.read_text(encoding="utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise VoiceIdError(f"{path}: not a JSON threshold file ({e})") from None
  if not isinstance(saved, dict) or not isinstance(saved.get("threshold"), (int, float)):
    raise VoiceIdError(f"{path}: no numeric threshold")
  made_for = (saved.get("checkpoint_step"), saved.get("centring"))
  model = (encoder.step, centring.digest(encoder.embedding_mean))
  if made_for != model:
    print(f"note: {path} was calibrated for step {made_for[0]}, centring {made_for[1]}; the "
          f"model is step {model[0]}, centring {model[1]}: using the default threshold "
          f"{DEFAULT_THRESHOLD}", file=sys.stderr)
    return DEFAULT_THRESHOLD, "default"
  return _check_threshold(float(saved["threshold"]), str(path)), f"model: {saved.get('source')}"


def save_model_threshold(encoder, threshold: float, source: str) -> epath.Path:
  """Writes WORKDIR/threshold.json for the encoder's checkpoint and training mean."""
  from hive import checkpoint
  path = epath.Path(encoder.source) / checkpoint.THRESHOLD_FILE
  _write_atomically(path, json.dumps(
      {"threshold": _check_threshold(float(threshold), source), "source": source,
       "checkpoint_step": int(encoder.step), "centring": centring.digest(encoder.embedding_mean)},
      indent=1) + "\n")
  return path


def parse_threshold(value: str | None, report: str | None, store: dict | None = None):
  """--threshold as a float; None (not given) means the store's or the default."""
  if value is None or value == "":
    return None
  if value == "auto":
    if not report:
      raise VoiceIdError("--threshold=auto needs --report=REPORT.json (from hive.evaluate --out)")
    return threshold_from_report(report, store["model"] if store else None)
  try:
    number = float(value)
  except ValueError:
    raise VoiceIdError(f"--threshold={value}: expected a number in [-1, 1] or 'auto'") from None
  return _check_threshold(number, "--threshold")


def calibrate(store: dict, threshold: float, source: str) -> dict:
  store = copy.deepcopy(store)
  store["threshold"] = _check_threshold(float(threshold), source)
  store["threshold_source"] = source
  return store


# --- commands -----------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def load_encoder(workdir: str, step: int | None = None):
  """The model, loaded once per process (JAX is imported only when a model is needed)."""
  if not workdir:
    raise VoiceIdError("no model: pass --workdir=DIR (a hive training workdir)")
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")  # Only JAX computes here.
  from hive.encoder import Encoder, use_compilation_cache
  use_compilation_cache()  # Commands: the next run skips this one's compilations.
  return Encoder.from_workdir(workdir, step)


def embed_files(encoder, files) -> np.ndarray:
  """[K, D] for the files, or VoiceIdError listing every unusable one (one per line)."""
  if not files:
    raise VoiceIdError("no audio files given")
  mels, problems = [], []
  for f in files:
    try:
      mels.append(encoder.features_of(f))
    except audio.BadAudio as e:
      problems.append(str(e))
  if problems:
    raise VoiceIdError("\n".join(problems))
  return encoder.embed_features(mels)


def check_files(files) -> None:
  """Fails on missing or empty files before the model is loaded (seconds saved on a typo)."""
  if not files:
    raise VoiceIdError("no audio files given")
  problems = [str(audio.BadAudio(f, "file does not exist")) if not os.path.exists(f) else
              str(audio.BadAudio(f, "empty file (0 bytes)")) for f in files
              if not os.path.exists(f) or os.path.getsize(f) == 0]
  if problems:
    raise VoiceIdError("\n".join(problems))


def _need(value, flag: str, command: str):
  if not value:
    raise VoiceIdError(f"{command} needs --{flag}")
  return value


def run_enroll(db, workdir, speaker, files, step=None, threshold=None, report=None, out=None):
  _need(db, "db", "enroll")
  _need(workdir, "workdir", "enroll")
  speaker = (speaker or "").strip()
  if not speaker:
    raise VoiceIdError("enroll needs --speaker=NAME")
  store = load_store(db) if pathlib.Path(db).exists() else None
  value = parse_threshold(threshold, report, store)  # Bad input fails before the model loads.
  check_files(files)
  encoder = load_encoder(workdir, step)
  info, dim = model_info(encoder), int(encoder.config.model.embed_dim)
  if store is None:
    store = new_store(info, dim, *model_threshold(encoder))
    if threshold == "auto":
      threshold_from_report(report, info)  # The report must be of this model, too.
  check_model(store, info, dim, db)
  files = [str(pathlib.Path(f).resolve()) for f in files]
  known = set(store["speakers"].get(speaker, {}).get("files", []))
  fresh = list(dict.fromkeys(f for f in files if f not in known))  # Also drops repeats.
  for f in sorted(set(files) - set(fresh)):
    print(f"note: {f} is already enrolled for {speaker}; not counted again", file=sys.stderr)
  if not fresh:
    raise VoiceIdError(f"nothing new to enroll for {speaker}")
  store = enroll(store, speaker, embed_files(encoder, fresh), fresh)
  if value is not None:
    store = calibrate(store, value, report if threshold == "auto" else "manual")
  save_store(db, store)
  entry = store["speakers"][speaker]
  print(f"enrolled {speaker}: {entry['clips']} clips ({len(fresh)} new) in {db}", file=out)


def format_match(file, result) -> str:
  top = ", ".join(f"{c['speaker']} {c['score']:.3f}" for c in result["candidates"])
  if result["speaker"] is None:
    head = f"unknown (best {result['best']} {result['score']:.3f} < {result['threshold']:.3f})"
  else:
    head = f"{result['speaker']} {result['score']:.3f}"
  return f"{file}\t{head}\ttop-{len(result['candidates'])}: {top}"


def run_identify(db, files, workdir=None, step=None, threshold=None, report=None, as_json=False,
                 out=None) -> int:
  """Prints one line per usable file; returns how many files could not be read."""
  store = load_store(_need(db, "db", "identify"))
  if not store["speakers"]:
    raise VoiceIdError(f"{db}: no speakers enrolled (enroll some first)")
  if not files:
    raise VoiceIdError("identify needs audio files to identify")
  value = parse_threshold(threshold, report, store)
  model = store["model"]
  encoder = load_encoder(workdir or model.get("workdir"),
                         step if step is not None else (None if workdir else model.get("step")))
  check_model(store, model_info(encoder), int(encoder.config.model.embed_dim), db)
  failed = 0
  for f in files:  # One file at a time, so a bad file costs only its own line.
    try:
      embedding = embed_files(encoder, [f])[0]
    except VoiceIdError as e:
      print(f"error: {e}", file=sys.stderr)  # One file: one line.
      failed += 1
      continue
    result = identify(store, embedding, value)
    print(json.dumps({"file": str(f), **result}) if as_json else format_match(f, result), file=out)
  return failed


def run_verify(workdir, files, step=None, threshold=None, report=None, db=None, as_json=False,
               out=None):
  if len(files) != 2:
    raise VoiceIdError(f"verify needs exactly two audio files, got {len(files)}")
  store = load_store(db) if db else None
  value = parse_threshold(threshold, report, store)
  if value is None and store:
    value = store["threshold"]
  check_files(files)
  encoder = load_encoder(_need(workdir, "workdir", "verify"), step)
  if value is None:
    value = model_threshold(encoder)[0]
  a, b = embed_files(encoder, files)
  result = verify(a, b, value)
  if as_json:
    print(json.dumps({"files": [str(f) for f in files], **result}), file=out)
  else:
    decision = "same speaker" if result["same"] else "different speakers"
    print(f"score {result['score']:.3f}: {decision} (threshold {value:.3f})", file=out)


def run_calibrate(db, threshold=None, report=None, workdir=None, step=None, out=None):
  """Calibrates the store (--db) or the model (--workdir: its threshold.json)."""
  if bool(db) == bool(workdir):
    raise VoiceIdError("calibrate takes one of --db=STORE (the store's threshold) and "
                       "--workdir=DIR (the model's)")
  from_report = bool(report) and threshold in (None, "", "auto")
  if not from_report and threshold in (None, "", "auto"):
    raise VoiceIdError("calibrate needs --report=REPORT.json (from hive.evaluate) or "
                       "--threshold=T")
  source = str(report) if from_report else "manual"
  value = None if from_report else parse_threshold(threshold, None)  # Before the model loads.
  if db:
    store = load_store(db)
    if from_report:
      value = threshold_from_report(report, store["model"])
    save_store(db, calibrate(store, value, source))
    where = db
  else:
    encoder = load_encoder(workdir, step)
    if from_report:
      value = threshold_from_report(report, model_info(encoder))
    where = save_model_threshold(encoder, value, source)
  print(f"threshold {value:.4f} ({source}) stored in {where}", file=out)


def main(argv):
  logs.quiet_libraries()
  f = flags.FLAGS
  command, files = (argv[1], argv[2:]) if len(argv) > 1 else (None, [])
  try:
    if command not in COMMANDS:
      raise VoiceIdError(f"first argument must be a command ({', '.join(COMMANDS)}), "
                         f"got {command!r}")
    if command == "enroll":
      run_enroll(f.db, f.workdir, f.speaker, files, f.step, f.threshold, f.report)
    elif command == "identify":
      if run_identify(f.db, files, f.workdir, f.step, f.threshold, f.report, f.json):
        sys.exit(2)
    elif command == "verify":
      run_verify(f.workdir, files, f.step, f.threshold, f.report, f.db, f.json)
    else:
      if files:
        raise VoiceIdError(f"calibrate takes no files, got {files}")
      run_calibrate(f.db, f.threshold, f.report, f.workdir, f.step)
  except (VoiceIdError, audio.BadAudio, FileNotFoundError, centring.BadMeanFile) as e:
    for line in str(e).splitlines():  # Several bad files: one line each.
      print(f"error: {line}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  define_flags()
  app.run(main)
