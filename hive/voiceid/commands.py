"""The voice ID commands: `python -m hive.voiceid enroll | identify | verify | calibrate`.

    python -m hive.voiceid enroll --workdir=runs/mtl --db=speakers.json --speaker=alice a.flac ...
    python -m hive.voiceid identify --db=speakers.json [--json] [--threshold=T] query.flac ...
    python -m hive.voiceid verify [--workdir=runs/mtl] a.flac b.flac [--threshold=T]
    python -m hive.voiceid calibrate --db=speakers.json --report=report.json
    python -m hive.voiceid calibrate --workdir=runs/mtl --report=report.json [--far=0.01]
    python -m hive.voiceid verify a.flac b.flac --far=0.01     # or --prior=0.01

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
           threshold.json, for its latest checkpoint): the `eer_threshold` of --report,
           the report's cosine threshold at --far=F or its calibrated Bayes threshold at
           --prior=P, or --threshold. (enroll with --threshold stores it in the store the
           same way.) With --workdir and a report that has a calibration (hive.evaluate),
           it also stores that in WORKDIR/calibration.json: the map from scores to
           log-likelihood ratios, of AS-Norm scores when the report measured them better
           (--scores=auto; or cosine, asnorm).

Calibrated models (a calibration.json for the checkpoint): verify and identify also print
the log-likelihood ratio (LLR: above 0 favours "same speaker"), and --far=F (a target
false-accept rate, from the calibration's measured thresholds) or --prior=P (the Bayes
decision for a prior P of a genuine claim) decide on the calibrated scores instead of a
cosine threshold (hive/voiceid/thresholds.py).

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

from hive import cli, workdir as workdir_lib
from hive.data import audio
from hive.voiceid.store import (VoiceIdError, check_model, enroll, identify, load_store,
                                new_store, update_store, verify)
from hive.voiceid.thresholds import (calibrate, calibrated_scores, calibration_from_file,
                                     check_threshold, chosen_threshold, identify_calibrated, llr,
                                     model_calibration, model_cohort, model_threshold,
                                     parse_threshold, save_model_calibration,
                                     save_model_threshold, score_name, threshold_at_far,
                                     threshold_for_prior, threshold_from_report)

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
  flags.DEFINE_float("far", None, "identify/verify: decide at this false-accept rate (a "
                     "calibrated model); calibrate: store the report's threshold at it.")
  flags.DEFINE_float("prior", None, "identify/verify: the Bayes decision for this prior of a "
                     "genuine claim (a calibrated model); calibrate: store its threshold.")
  flags.DEFINE_enum("scores", "auto", ["auto", "cosine", "asnorm"], "calibrate: which "
                    "calibration of --report the model keeps (auto: AS-Norm's where its "
                    "cllr is lower).")


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


def _llr_text(result) -> str:
  return f" LLR {result['llr']:+.2f}" if result.get("llr") is not None else ""


def format_match(file, result) -> str:
  top = ", ".join(f"{c['speaker']} {c['score']:.3f}{_llr_text(c)}"
                  for c in result["candidates"])
  calibrated = result.get("calibrated_score")
  compared = (f"AS-Norm {calibrated:.2f}" if result.get("scores") == "asnorm"
              else f"{result['score']:.3f}")
  if result["speaker"] is None:
    head = (f"unknown (best {result['best']} {result['score']:.3f}{_llr_text(result)}; "
            f"{compared} < {result['threshold']:.3f})")
  else:
    head = f"{result['speaker']} {result['score']:.3f}{_llr_text(result)}"
  return f"{file}\t{head}\ttop-{len(result['candidates'])}: {top}"


def _calibration_of(encoder, far=None, prior=None, threshold=None, where="the model"):
  """(calibration or None, its AS-Norm cohort or None, (threshold, how) for --far/--prior
  or None) of a loaded model."""
  if (far is not None or prior is not None) and threshold not in (None, ""):
    raise VoiceIdError("give one of --threshold, --far and --prior")
  calibration = model_calibration(encoder)
  chosen = chosen_threshold(calibration, far, prior, where)
  cohort = (model_cohort(encoder) if calibration and calibration.get("scores") == "asnorm"
            else None)
  return calibration, cohort, chosen


def run_identify(db, files, workdir=None, step=None, threshold=None, report=None, as_json=False,
                 out=None, far=None, prior=None) -> int:
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
  calibration, cohort, chosen = _calibration_of(encoder, far, prior, threshold,
                                                str(encoder.source))
  failed = 0
  for f in files:  # One file at a time, so a bad file costs only its own line.
    try:
      embedding = embed_files(encoder, [f])[0]
    except VoiceIdError as e:
      print(f"error: {e}", file=sys.stderr)  # One file: one line.
      failed += 1
      continue
    if chosen is not None:  # The decision on calibrated scores.
      result = identify_calibrated(store, embedding, calibration, cohort, chosen[0])
      result["threshold_chosen"] = chosen[1]
    else:
      result = identify(store, embedding, value)
      if calibration is not None:  # LLRs beside the cosine decision.
        names = sorted(store["speakers"])
        values = calibrated_scores(calibration, [store["speakers"][n]["embedding"]
                                                 for n in names], embedding, cohort)
        llrs = {n: llr(calibration, v) for n, v in zip(names, values)}
        result["llr"] = llrs[result["best"]]
        for c in result["candidates"]:
          c["llr"] = llrs[c["speaker"]]
    print(json.dumps({"file": str(f), **result}) if as_json else format_match(f, result), file=out)
  return failed


def run_verify(workdir, files, step=None, threshold=None, report=None, db=None, as_json=False,
               out=None, far=None, prior=None):
  if len(files) != 2:
    raise VoiceIdError(f"verify needs exactly two audio files, got {len(files)}")
  store = load_store(db) if db else None
  value = parse_threshold(threshold, report, store)
  if value is None and store and far is None and prior is None:
    value = store["threshold"]
  check_files(files)
  shipped = not workdir and not db  # A store's threshold belongs to its own model.
  if shipped:  # As Resemblyzer's VoiceEncoder(): the model that comes with hive.
    from hive.encoder import PRETRAINED_DIR
    workdir = str(PRETRAINED_DIR)
  encoder = load_encoder(_need(workdir, "workdir", "verify"), step)
  calibration, cohort, chosen = _calibration_of(encoder, far, prior, threshold, str(workdir))
  if value is None and chosen is None:
    value = model_threshold(encoder)[0]
  a, b = embed_files(encoder, files)
  result = verify(a, b, value if chosen is None else 0.0)
  if calibration is not None:
    calibrated = float(calibrated_scores(calibration, a, b, cohort)[0])
    result["llr"] = llr(calibration, calibrated)
    if calibration.get("scores") == "asnorm":
      result["asnorm_score"] = calibrated
    if chosen is not None:  # The decision on the calibrated scores.
      value = chosen[0]
      result.update(same=calibrated >= value, threshold=value, threshold_chosen=chosen[1],
                    threshold_on=calibration.get("scores", "cosine"))
  if as_json:
    print(json.dumps({"files": [str(f) for f in files], **result, "workdir": str(workdir)}),
          file=out)
    return
  decision = "same speaker" if result["same"] else "different speakers"
  model = ", the shipped model pretrained/hive-mtl" if shipped else ""
  extra = (f", AS-Norm {result['asnorm_score']:.2f}" if "asnorm_score" in result else "") + (
      f", LLR {result['llr']:+.2f}" if "llr" in result else "")
  if chosen is None:
    how = f"threshold {value:.3f}"
  else:
    how = f"{score_name(calibration)} threshold {value:.3f} {chosen[1]}"
  print(f"score {result['score']:.3f}{extra}: {decision} ({how}{model})", file=out)


def run_verify_command() -> None:
  """`hive-verify A B [flags]`: `hive-voiceid verify A B`, the shipped model by default."""
  sys.argv[1:1] = ["verify"]
  run()


def _report_threshold(report, model, far=None, prior=None) -> tuple[float, str]:
  """(cosine threshold, source) from a hive.evaluate report: at --far (its cosine
  thresholds by false-accept rate), at --prior (its cosine calibration's Bayes threshold)
  or its eer_threshold."""
  if far is None and prior is None:
    return threshold_from_report(report, model), str(report)
  if far is not None and prior is not None:
    raise VoiceIdError("give one of --far and --prior, not both")
  cosine = calibration_from_file(report, model, "cosine")
  if far is not None:
    value = threshold_at_far(cosine, far)
    return check_threshold(value, f"--far={far:g}"), f"{report} at false-accept rate {far:g}"
  return (threshold_for_prior(cosine, prior),
          f"{report}, Bayes decision at prior {prior:g}")


def run_calibrate(db, threshold=None, report=None, workdir=None, step=None, out=None,
                  far=None, prior=None, scores="auto"):
  """Calibrates the store (--db) or the model (--workdir: its threshold.json, and its
  calibration.json when the report has a calibration)."""
  if bool(db) == bool(workdir):
    raise VoiceIdError("calibrate takes one of --db=STORE (the store's threshold) and "
                       "--workdir=DIR (the model's)")
  from_report = bool(report) and threshold in (None, "", "auto")
  if not from_report and threshold in (None, "", "auto"):
    raise VoiceIdError("calibrate needs --report=REPORT.json (from hive.evaluate) or "
                       "--threshold=T")
  if (far is not None or prior is not None) and not from_report:
    raise VoiceIdError("--far and --prior choose a threshold from --report; give one, "
                       "or --threshold alone")
  source = str(report) if from_report else "manual"
  value = None if from_report else parse_threshold(threshold, None)  # Before the model loads.
  if db:
    store = load_store(db)
    if from_report:
      value, source = _report_threshold(report, store["model"], far, prior)
    update_store(db, lambda current: calibrate(current or store, value, source))
    where = db
  else:
    encoder = load_encoder(workdir, step)
    if from_report:
      value, source = _report_threshold(report, encoder.model_record(), far, prior)
    where = save_model_threshold(encoder, value, source)
    if from_report and isinstance(
        workdir_lib.read_json(report, "evaluation report", VoiceIdError).get("calibration"),
        dict):
      record = calibration_from_file(report, encoder.model_record(), scores)
      file = save_model_calibration(encoder, record)
      measured = (f"cllr {record['cllr']:.3f}" if record.get("asnorm_cllr") is None else
                  f"cllr {record['cosine_cllr']:.3f} for cosines, "
                  f"{record['asnorm_cllr']:.3f} for AS-Norm scores")
      print(f"calibration of {score_name(record)}s ({measured}) stored in {file}", file=out)
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
    if run_identify(f.db, files, f.workdir, f.step, f.threshold, f.report, f.json, far=f.far,
                    prior=f.prior):
      sys.exit(2)
  elif command == "verify":
    run_verify(f.workdir, files, f.step, f.threshold, f.report, f.db, f.json, far=f.far,
               prior=f.prior)
  else:
    if files:
      raise VoiceIdError(f"calibrate takes no files, got {files}")
    run_calibrate(f.db, f.threshold, f.report, f.workdir, f.step, far=f.far, prior=f.prior,
                  scores=f.scores)


def run() -> None:
  cli.run(main, define_flags, errors=(audio.BadAudio,))
