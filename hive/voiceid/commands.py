"""The voice ID commands: `python -m hive.voiceid enroll | identify | verify | calibrate`.

    python -m hive.voiceid enroll --workdir=runs/mtl --db=speakers.json --speaker=alice a.flac ...
    python -m hive.voiceid identify --db=speakers.json [--json] [--threshold=T] query.flac ...
    python -m hive.voiceid verify [--workdir=runs/mtl] a.flac b.flac [--threshold=T]
    python -m hive.voiceid calibrate --db=speakers.json --report=report.json
    python -m hive.voiceid calibrate --workdir=runs/mtl --report=report.json

enroll     adds the clips' mean embedding to a speaker (a known name: a running mean over
           all its clips; clips already enrolled for the name are skipped).
identify   prints, per file, the best match and its cosine score, or "unknown" below the
           threshold, and the top-3 candidates (--json: one JSON object per line). The
           model defaults to the workdir and step recorded in the store. An unreadable
           file gets its error line and the others go on; the exit status is then 2.
verify     prints the cosine score of two files and "same speaker" or "different speakers";
           without --workdir (and --db) it uses the shipped model, pretrained/hive-mtl,
           and says so (also the console script `hive-verify a.flac b.flac`).
calibrate  stores a threshold in the store (--db) or with the model (--workdir: its
           threshold.json, for its latest checkpoint): the `eer_threshold` of --report, or
           --threshold. (enroll with --threshold stores it in the store the same way.)

The store (hive/voiceid/store.py) and the thresholds (hive/voiceid/thresholds.py) have their
own modules. Bad input (missing, empty or non-audio file, missing or corrupt store, an empty
store, a missing --speaker) ends with a one-line `error: ...` on stderr and exit status 2.
Also installed as the console script `hive-voiceid`.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import sys

from absl import flags

from hive import cli
from hive.data import audio
from hive.voiceid.store import (VoiceIdError, check_model, enroll, identify, load_store,
                                new_store, update_store, verify)
from hive.voiceid.thresholds import (calibrate, model_threshold, parse_threshold,
                                     save_model_threshold, threshold_from_report)

COMMANDS = ("enroll", "identify", "verify", "calibrate")


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Training workdir (identify: default the store's).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the store's, else latest).")
  flags.DEFINE_string("db", None, "Speaker store (JSON).")
  flags.DEFINE_string("speaker", None, "Name to enroll the clips under.")
  flags.DEFINE_string("threshold", None, "Cosine threshold: a number in [-1, 1], or 'auto' for "
                      "the eer_threshold of --report.")
  flags.DEFINE_string("report", None, "Evaluation report JSON from hive.evaluate --out.")
  flags.DEFINE_bool("json", False, "identify/verify: one JSON object per line.")


@functools.lru_cache(maxsize=4)
def load_encoder(workdir: str, step: int | None = None):
  """The model, loaded once per process (JAX is imported only when a model is needed)."""
  if not workdir:
    raise VoiceIdError("no model: pass --workdir=DIR (a hive training workdir)")
  from hive.encoder import Encoder
  cli.use_compilation_cache()  # Commands: the next run skips this one's compilations.
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
  info, dim = encoder.model_record(), int(encoder.config.model.embed_dim)
  if store is None:
    store = new_store(info, dim, *model_threshold(encoder))
    if threshold == "auto":
      threshold_from_report(report, info)  # The report must be of this model, too.
  check_model(store, info, db)
  files = [str(pathlib.Path(f).resolve()) for f in files]
  known = set(store["speakers"].get(speaker, {}).get("files", []))
  fresh = list(dict.fromkeys(f for f in files if f not in known))  # Also drops repeats.
  for f in sorted(set(files) - set(fresh)):
    print(f"note: {f} is already enrolled for {speaker}; not counted again", file=sys.stderr)
  if not fresh:
    raise VoiceIdError(f"nothing new to enroll for {speaker}")
  embeddings = embed_files(encoder, fresh)  # The slow part, before the store is locked.
  added = []

  def add(current):
    """Under the store's lock: the store as other enrolments may have left it meanwhile."""
    current = store if current is None else current
    check_model(current, info, db)
    known = set(current["speakers"].get(speaker, {}).get("files", []))
    keep = [i for i, f in enumerate(fresh) if f not in known]
    if not keep:
      raise VoiceIdError(f"nothing new to enroll for {speaker}")
    added[:] = [fresh[i] for i in keep]
    current = enroll(current, speaker, embeddings[keep], added)
    if value is not None:
      current = calibrate(current, value, report if threshold == "auto" else "manual")
    return current

  entry = update_store(db, add)["speakers"][speaker]
  print(f"enrolled {speaker}: {entry['clips']} clips ({len(added)} new) in {db}", file=out)


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
  check_model(store, encoder.model_record(), db)
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
  shipped = not workdir and not db  # A store's threshold belongs to its own model.
  if shipped:  # As Resemblyzer's VoiceEncoder(): the model that comes with hive.
    from hive.encoder import PRETRAINED_DIR
    workdir = str(PRETRAINED_DIR)
  encoder = load_encoder(_need(workdir, "workdir", "verify"), step)
  if value is None:
    value = model_threshold(encoder)[0]
  a, b = embed_files(encoder, files)
  result = verify(a, b, value)
  if as_json:
    print(json.dumps({"files": [str(f) for f in files], **result, "workdir": str(workdir)}),
          file=out)
  else:
    decision = "same speaker" if result["same"] else "different speakers"
    model = ", the shipped model pretrained/hive-mtl" if shipped else ""
    print(f"score {result['score']:.3f}: {decision} (threshold {value:.3f}{model})", file=out)


def run_verify_command() -> None:
  """`hive-verify A B [flags]`: `hive-voiceid verify A B`, the shipped model by default."""
  sys.argv[1:1] = ["verify"]
  run()


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
    update_store(db, lambda current: calibrate(current or store, value, source))
    where = db
  else:
    encoder = load_encoder(workdir, step)
    if from_report:
      value = threshold_from_report(report, encoder.model_record())
    where = save_model_threshold(encoder, value, source)
  print(f"threshold {value:.4f} ({source}) stored in {where}", file=out)


def main(argv):
  f = flags.FLAGS
  command, files = (argv[1], argv[2:]) if len(argv) > 1 else (None, [])
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


def run() -> None:
  cli.run(main, define_flags, errors=(audio.BadAudio,))
