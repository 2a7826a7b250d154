"""Quality: hive's model and Resemblyzer's pretrained encoder under one protocol.

    python benchmarks/quality.py ROOT [--workdir pretrained/hive-mtl] [--split dev|all]
                                      [--segment_seconds auto|0|S]

Both embed every utterance of ROOT (or the workdir's dev speakers in it) from
audio; the numbers are hive.evaluate's: EER and minDCF over all pairs (cosine),
one-shot identification accuracy (enrol each speaker's first utterance by
sorted id), and gender accuracy (hive's gender head; Resemblyzer has none, so
null). Where most speakers have a single utterance (the shared LibriSpeech
sample), there would be no same-speaker trial, so by default (`auto`) both
score consecutive 3-second segments of each file (the tail joins the last
segment), cut from the same 16 kHz audio; same-speaker trials then come from
one recording, an easier task, and the table says so. Updates the "Quality"
section of RESULTS.md for ROOT; the last line is one JSON object.

hive's embeddings are centred on its training speakers' mean embedding when the
model has one (hive/centring.py: the shipped model does). So that the comparison
is like for like, two more rows: hive without centring, and Resemblyzer centred
the same way (its mean over the same training utterances: every utterance of the
workdir's training speakers in the roots of its config; `--no_reference_centring`
skips that, which saves embedding them).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

import numpy as np

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import results  # noqa: E402

KEYS = ("eer", "min_dcf", "identification_accuracy", "gender_accuracy")


def utterances_of(root, workdir, split):
  """The reader's utterances of ROOT, restricted to the workdir's split speakers."""
  from hive import workdir as workdir_lib
  from hive.data import readers
  corpus = readers.read_corpus(root)
  utts = sorted(corpus.utterances, key=lambda u: u.id)
  if split != "all":
    wanted = set(workdir_lib.load_speakers(workdir)[split])
    prefix = pathlib.Path(root).resolve().name + "/"
    utts = [u for u in utts if u.speaker in wanted or prefix + u.speaker in wanted]
    if not utts:
      raise SystemExit(f"error: none of {workdir}'s {split} speakers are in {root}")
  return utts


def segment_flag(value: str):
  """--segment_seconds: "auto", or a length in seconds (0: whole utterances)."""
  if value == "auto":
    return value
  try:
    seconds = float(value)
  except ValueError:
    seconds = -1.0
  if not seconds >= 0:
    raise argparse.ArgumentTypeError(f"expected auto or seconds >= 0, got {value!r}")
  return seconds


def segment_seconds_for(utts, requested) -> float:
  """`auto`: 3-s segments when fewer than half of the speakers have two utterances."""
  from hive import evaluate
  if requested != "auto":
    return requested
  return evaluate.auto_segment_seconds([u.speaker for u in utts])


def segments(utts, seconds: float, sample_rate: int = 16000):
  """(waves, speakers, ids, genders) of consecutive segments; short tails join the last."""
  from hive.data import audio, examples
  size = int(round(seconds * sample_rate))
  out = ([], [], [], [])
  for u in utts:
    wave = audio.load_wave(u.path, sample_rate)
    for k, piece in enumerate(examples.consecutive_segments(wave, size)):
      for column, value in zip(out, (piece, u.speaker, f"{u.id}#{k}", u.gender)):
        column.append(value)
  return out


def scores(embeddings, speakers, ids) -> dict:
  from hive import metrics
  out = metrics.verification(embeddings, speakers)
  out.update(metrics.one_shot_identification(embeddings, speakers, ids))
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("root")
  ap.add_argument("--workdir", default=str(REPO / "pretrained" / "hive-mtl"))
  ap.add_argument("--split", default="dev", choices=["dev", "all"])
  ap.add_argument("--segment_seconds", default="auto", type=segment_flag,
                  help="auto, 0 (whole utterances) or a segment length in seconds.")
  ap.add_argument("--no_reference_centring", action="store_true",
                  help="Skip the row of Resemblyzer centred on the training speakers.")
  ap.add_argument("--no_write", action="store_true")
  args = ap.parse_args(argv)
  from hive import scoring, workdir as workdir_lib
  from hive.data import examples as examples_lib, input_pipeline
  from hive.encoder import Encoder
  import reference_torch

  utts = utterances_of(args.root, args.workdir, args.split)
  encoder = Encoder.from_workdir(args.workdir, centring=False)  # Raw: centred below.
  mean = workdir_lib.load_mean(args.workdir, encoder.config.model.embed_dim, encoder.step)
  segment_seconds = segment_seconds_for(utts, args.segment_seconds)
  if segment_seconds > 0:
    waves, speakers, ids, gender_names = segments(utts, segment_seconds)
    hive_embeddings, p_female = encoder.embed_features([encoder.features_of(w) for w in waves],
                                                       with_gender=True)
    resemblyzer_embeddings = reference_torch.resemblyzer_embed_waves(waves)
  else:
    paths = [u.path for u in utts]
    speakers, ids, gender_names = [u.speaker for u in utts], [u.id for u in utts], [
        u.gender for u in utts]
    hive_embeddings, p_female = encoder.embed_many(paths, with_gender=True)
    resemblyzer_embeddings = reference_torch.resemblyzer_embed_files(paths)
  rows = {}
  if mean is not None:
    rows["hive"] = scores(scoring.centre(hive_embeddings, mean), speakers, ids)
    rows["hive, not centred"] = scores(hive_embeddings, speakers, ids)
  else:
    rows["hive"] = scores(hive_embeddings, speakers, ids)
  genders = np.array([examples_lib.GENDER_CODES[g] for g in gender_names])
  labelled = genders >= 0
  gender_accuracy = (float(np.mean((p_female[labelled] > 0.5) == (genders[labelled] == 1)))
                     if labelled.any() else None)
  for name in rows:  # The gender head reads the raw embedding either way.
    rows[name]["gender_accuracy"] = gender_accuracy
  rows["Resemblyzer"] = scores(resemblyzer_embeddings, speakers, ids)
  if mean is not None and not args.no_reference_centring:
    train_paths = [u.path for root in input_pipeline.corpus_roots(encoder.config.data)
                   for u in utterances_of(root, args.workdir, "train")]
    reference_mean = scoring.fit_mean(reference_torch.resemblyzer_embed_files(train_paths))
    rows["Resemblyzer, centred like hive"] = scores(
        scoring.centre(resemblyzer_embeddings, reference_mean), speakers, ids)
  for name in rows:
    rows[name].setdefault("gender_accuracy", None)

  name = pathlib.Path(args.root).resolve().name
  fmt = lambda v: "n/a" if v is None else f"{v:.2%}"
  title = f"Quality: {name}"
  lines = [f"## {title}", "",
           f"{args.split} speakers: {len(utts)} utterances of {len(set(speakers))} speakers"
           + (f", scored as {len(ids)} consecutive {segment_seconds:g}-s segments (same-speaker "
              "trials mostly within one recording: easier than across sessions)"
              if segment_seconds > 0 else "") +
           f"; hive model `{pathlib.Path(args.workdir).name}` step {encoder.step}; "
           f"{results.machine()['date']}."
           + (" Centred: the training speakers' mean embedding subtracted (hive/centring.py; "
              "Resemblyzer's own mean over the same training utterances)."
              if mean is not None else ""),
           "", "| model | EER | minDCF (0.01) | one-shot ID accuracy | gender accuracy |",
           "|---|---:|---:|---:|---:|"]
  for model, r in rows.items():
    lines.append(f"| {model} | {r['eer']:.2%} | {r['min_dcf']:.3f} | "
                 f"{fmt(r['identification_accuracy'])} | {fmt(r['gender_accuracy'])} |")
  section = "\n".join(lines) + "\n"
  print(section)
  if not args.no_write:
    results.update_section(title, section)
  print(json.dumps({"root": name, "split": args.split, "utterances": len(utts),
                    "segment_seconds": segment_seconds or None, "trial_items": len(ids),
                    **{m: {k: r.get(k) for k in KEYS} for m, r in rows.items()}}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
