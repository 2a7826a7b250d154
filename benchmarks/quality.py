"""Quality on the dev speakers: hive's models and Resemblyzer under one protocol, with intervals.

    python benchmarks/quality.py [--models "release 5=pretrained/hive-mtl,release 4=DIR"]
        [--corpora speechocean762,librispeech,speechcommands] [--degrade none,telephone]
        [--dev_speakers configs/release_dev_speakers.txt] [--resamples 1000] [--no_resemblyzer]

For every corpus (under --data_root) its dev speakers (those of the --dev_speakers list, which
carry the corpus folder as prefix), every model and every condition (clean, or corrupted as
`hive.evaluate --degrade` does, each utterance with its own seed):
  * every utterance is embedded from the same 16 kHz audio: hive's models through
    `hive.Encoder` (whole utterances, centred on their training mean), Resemblyzer's
    pretrained encoder through its own preprocessing;
  * speakers with a single utterance (most LibriSpeech readers) are scored on consecutive
    3-s segments of it, the others across their utterances (`--segment_speakers=single`);
  * EER, minDCF (p_target 0.01) over all pairs, one-shot identification accuracy (each speaker
    enrolled with its first utterance), each with a 95 % interval from a bootstrap over
    speakers (hive.metrics.speaker_bootstrap), and hive's gender head's accuracy (adults and
    children apart where the corpus gives ages).
The "pooled" rows score every corpus' dev utterances together (all pairs across corpora).
Writes the "Quality: dev speakers" section of RESULTS.md; the last line is one JSON object.
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

SEGMENT_SECONDS = 3.0


def read_ages(root: pathlib.Path) -> dict[str, int]:
  path = root / "spk2age"
  if not path.is_file():
    return {}
  ages = {}
  for number, line in enumerate(path.read_text().splitlines(), 1):
    parts = line.split()
    if parts:
      if len(parts) != 2 or not parts[1].isdigit():
        raise SystemExit(f"error: {path}:{number}: expected '<speaker> <years>'")
      ages[parts[0]] = int(parts[1])
  return ages


def dev_set(root: pathlib.Path, dev: set[str], data_dir):
  """(examples, waves) of the dev speakers of `root`: whole utterances, in id order."""
  from hive.data import builder
  prepared, _ = builder.prepare(root, data_dir, storage=builder.Storage(store_waveform=True))
  index = builder.corpus_index(prepared)
  prefix = root.resolve().name + "/"
  speakers = [s for s in index.speakers if prefix + s in dev]
  if not speakers:
    raise SystemExit(f"error: none of the dev speakers are in {root}")
  records = index.records_of(speakers)
  examples = builder.read_examples(prepared, records)
  waves = [w.astype(np.float32) / 32768 for w in builder.read_waveforms(prepared, records)]
  return examples, waves


def conditions(examples, waves, spec: str):
  """(examples, waves) corrupted by `spec` ("none": as they are), segmented like hive.evaluate
  --segment_seconds=3 --segment_speakers=single."""
  import zlib
  from hive import features
  from hive.data import examples as examples_lib, waveform_augment
  if spec != "none":
    waves = [waveform_augment.degrade(w, spec, seed=zlib.crc32(u.encode()))
             for w, u in zip(waves, examples.utterance_ids)]
    mels = [features.log_mel(w) for w in waves]
    examples = examples_lib.Examples(examples.utterance_ids, examples.speakers, examples.genders,
                                     np.array([len(m) for m in mels], np.int32), mels)
  frames = int(SEGMENT_SECONDS * 100)
  counts = {s: examples.speakers.count(s) for s in set(examples.speakers)}
  cut_waves = []
  for wave, speaker in zip(waves, examples.speakers):
    pieces = (examples_lib.consecutive_segments(wave, frames * 160) if counts[speaker] == 1
              else [wave])
    cut_waves += pieces
  cut = examples.cut_segments(frames, single_utterance_only=True)
  assert len(cut_waves) == len(cut.utterance_ids)
  return cut, cut_waves


def scores(embeddings, speakers, ids, resamples: int) -> dict:
  from hive import metrics
  out = metrics.verification(embeddings, speakers)
  out.update(metrics.one_shot_identification(embeddings, speakers, ids))
  out.update(metrics.speaker_bootstrap(embeddings, speakers, ids, resamples=resamples))
  return out


def gender(p_female, examples, ages: dict, prefix: str) -> dict:
  labelled = examples.genders >= 0
  if not labelled.any():
    return {}
  right = (p_female > 0.5) == (examples.genders == 1)
  out = {"gender_accuracy": float(right[labelled].mean())}
  if ages:
    age = np.array([ages.get(s[len(prefix):] if s.startswith(prefix) else s, -1)
                    for s in examples.speakers])
    for group, rows in (("adults", age > 15), ("children", (age >= 0) & (age <= 15))):
      rows = rows & labelled
      if rows.any():
        out[f"gender_accuracy_{group}"] = float(right[rows].mean())
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--models", default="release 5=pretrained/hive-mtl",
                  help="Comma-separated name=workdir pairs.")
  ap.add_argument("--corpora", default="speechocean762,librispeech,speechcommands")
  ap.add_argument("--data_root", default="../shared/data")
  ap.add_argument("--degrade", default="none,telephone")
  ap.add_argument("--dev_speakers", default="configs/release_dev_speakers.txt")
  ap.add_argument("--data_dir", default=None)
  ap.add_argument("--resamples", type=int, default=1000)
  ap.add_argument("--no_resemblyzer", action="store_true")
  ap.add_argument("--section", default="Quality: dev speakers")
  ap.add_argument("--no_write", action="store_true")
  args = ap.parse_args(argv)
  from hive import cli
  from hive.data import examples as examples_lib
  from hive.encoder import Encoder
  cli.hide_gpus_from_tensorflow()

  models = dict(item.split("=", 1) for item in args.models.split(",") if item)
  encoders = {name: Encoder.from_workdir(REPO / path if not os.path.isabs(path) else path)
              for name, path in models.items()}
  dev_file = REPO / args.dev_speakers
  dev = {l.strip() for l in dev_file.read_text().splitlines()
         if l.strip() and not l.startswith("#")}
  data_root = pathlib.Path(args.data_root)
  data_root = data_root if data_root.is_absolute() else (REPO / data_root).resolve()
  specs = [s.strip() for s in args.degrade.split(",") if s.strip()]
  reference = None
  if not args.no_resemblyzer:
    import reference_torch
    reference = reference_torch.resemblyzer_embed_waves

  rows, pooled = [], {}
  for corpus in [c.strip() for c in args.corpora.split(",") if c.strip()]:
    root = data_root / corpus
    prefix = corpus + "/"
    examples, waves = dev_set(root, dev, args.data_dir)
    ages = read_ages(root)
    for spec in specs:
      cut, cut_waves = conditions(examples, waves, spec)
      ids = [prefix + u for u in cut.utterance_ids]
      speakers = [prefix + s for s in cut.speakers]
      embedded = {}
      for name, encoder in encoders.items():
        embedded[name], p_female = encoder.embed_features(cut.features, with_gender=True)
        rows.append({"corpus": corpus, "condition": spec, "model": name,
                     **scores(embedded[name], speakers, ids, args.resamples),
                     **gender(p_female, cut, ages, prefix)})
        print(json.dumps({k: rows[-1].get(k) for k in ("corpus", "condition", "model", "eer",
                                                        "identification_accuracy")}),
              file=sys.stderr, flush=True)
      if reference is not None:
        embedded["Resemblyzer"] = reference(cut_waves)
        rows.append({"corpus": corpus, "condition": spec, "model": "Resemblyzer",
                     **scores(embedded["Resemblyzer"], speakers, ids, args.resamples)})
      for name, e in embedded.items():
        part = pooled.setdefault((spec, name), {"e": [], "s": [], "i": []})
        part["e"].append(e)
        part["s"] += speakers
        part["i"] += ids
      for r in rows:
        if r["corpus"] == corpus and r["condition"] == spec:
          r.update(speakers=len(set(speakers)), trials_items=len(ids))
  for (spec, name), part in pooled.items():
    rows.append({"corpus": "pooled", "condition": spec, "model": name,
                 **scores(np.concatenate(part["e"]), part["s"], part["i"], args.resamples),
                 "speakers": len(set(part["s"])), "trials_items": len(part["i"])})

  def cell(r, key, percent=True):
    v, ci = r.get(key), r.get(f"{key}_ci")
    if v is None:
      return "n/a"
    text = f"{v:.2%}" if percent else f"{v:.3f}"
    if ci:
      text += (f" ({ci[0]:.1%}-{ci[1]:.1%})" if percent else f" ({ci[0]:.3f}-{ci[1]:.3f})")
    return text

  env = results.machine()
  lines = [f"## {args.section}", "",
           f"Run {env['date']}; `python benchmarks/quality.py --models \"{args.models}\" "
           f"--degrade {args.degrade}`. Dev speakers of `{args.dev_speakers}`; whole utterances, "
           "single-utterance speakers as consecutive 3-s segments; 95 % intervals from "
           f"{args.resamples} bootstrap resamples of the speakers; hive centred on its training "
           "mean, Resemblyzer as it comes. Gender: hive's head (adults > 15 years, children <= 15 "
           "where the corpus gives ages).", "",
           "| corpus | condition | model | speakers | EER | minDCF | one-shot ID | gender (adults / "
           "children) |", "|---|---|---|---:|---:|---:|---:|---|"]
  for r in rows:
    g = "n/a" if "gender_accuracy" not in r else (
        f"{r['gender_accuracy']:.1%}" + (
            f" ({r['gender_accuracy_adults']:.1%} / {r['gender_accuracy_children']:.1%})"
            if "gender_accuracy_children" in r else ""))
    lines.append(f"| {r['corpus']} | {r['condition']} | {r['model']} | {r['speakers']} | "
                 f"{cell(r, 'eer')} | {cell(r, 'min_dcf', False)} | "
                 f"{cell(r, 'identification_accuracy')} | {g} |")
  section = "\n".join(lines) + "\n"
  print(section)
  if not args.no_write:
    results.update_section(args.section, section)
  keys = ("eer", "eer_ci", "min_dcf", "min_dcf_ci", "identification_accuracy",
          "identification_accuracy_ci", "gender_accuracy", "gender_accuracy_adults",
          "gender_accuracy_children", "speakers")
  print(json.dumps([{k: r.get(k) for k in ("corpus", "condition", "model") + keys}
                    for r in rows]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
