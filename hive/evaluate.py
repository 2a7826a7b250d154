"""Evaluates a trained model on a corpus: `python -m hive.evaluate --workdir=DIR --data=PATH`.

Every utterance of every speaker under PATH (LibriSpeech layout or Kaldi dir)
is embedded (centred when the model has a training mean embedding, see
hive/centring.py, as every hive command does) and scored by the evaluator that
training uses too (hive/evaluator.py, which lists the numbers); the report (JSON)
adds the model (workdir, checkpoint_step, centring: the training mean's digest) and
the data. A threshold is null when its best operating point accepts no trial (+inf,
which JSON cannot hold).
`--split=dev` keeps only the workdir's held-out dev speakers. `--plots=DIR`
adds a DET curve and a 2-D map of the embeddings (PNG). The JSON report is one line on
stdout, for scripts, and a summary for people goes to stderr (`--format=table`: the
summary alone, on stdout). `--segment_seconds=S`
scores consecutive S-second segments instead of whole utterances: for corpora
with one utterance per speaker (most of the shared LibriSpeech sample), where
same-speaker trials then come from one recording, an easier task.

Calibration and thresholds (hive/evaluator.py lists the numbers): the report fits a
logistic calibration of the cosine to a log-likelihood ratio on these trials (its cllr,
min_cllr and act_dcf at `--p_target`; `--calibration=model` applies the model's stored
calibration instead, or `--calibration=FILE` a report's or calibration file's), the
threshold at the false-accept rate `--far` with its false-reject rate, thresholds along a
grid of false-accept rates, and open-set identification at that threshold.
`hive.voiceid calibrate --workdir=DIR --report=REPORT` stores the calibration with the
model. `--bootstrap=N` adds 95 % confidence intervals from N resamples of the speakers.
`--asnorm` also scores with AS-Norm against the model's cohort (WORKDIR/cohort.npz, made
by `--split=train --write_cohort`, which writes the mean embedding of each scored speaker,
merged with a cohort of the same model already there).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys

import numpy as np
from absl import app, flags

from hive import cli, embed as embed_lib, metrics, scoring, workdir as workdir_lib
from hive.data import builder as builder_lib, input_pipeline, readers
from hive.data.examples import Examples
from hive.encoder import Encoder
from hive.evaluator import VerificationEvaluator, utterances_per_speaker
from hive.voiceid import thresholds


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defined only when run as a program, so importing several hive commands in
  one process (tests, notebooks) does not clash on shared flag names."""
  flags.DEFINE_string("workdir", None, "Training workdir (or pretrained/hive-mtl).")
  flags.DEFINE_string("data", None, "Corpus root: LibriSpeech layout or Kaldi data dir.")
  flags.DEFINE_string("out", None, "Where to write the JSON report (default: stdout only).")
  flags.DEFINE_enum("split", "all", ["all", "dev", "train"],
                             "Speakers to keep: all, or the workdir's dev / train speakers.")
  flags.DEFINE_string("plots", None, "Directory for det.png and embeddings.png.")
  flags.DEFINE_string("data_dir", None, "TFDS cache for the prepared features.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
  flags.DEFINE_float("segment_seconds", 0.0,
                     "Score S-second segments of each utterance instead of whole ones (0: off).")
  flags.DEFINE_enum("segment_speakers", "all", ["all", "single"],
                    "With --segment_seconds: cut every utterance, or only those of speakers "
                    "with a single one (the others are scored across their utterances).")
  flags.DEFINE_string("degrade", "", "Score the corpus corrupted: telephone (8 kHz band, "
                      "mu-law), noise:SNR (e.g. noise:5; seeded pink noise at that SNR), reverb "
                      "(a simulated room), or several joined by '+'. Each utterance is "
                      "corrupted the same way in every run.")
  flags.DEFINE_float("far", 0.01, "Target false-accept rate: the report's far_threshold and "
                     "the open-set rates at it.")
  flags.DEFINE_float("p_target", 0.01, "Prior of a target trial for min_dcf and act_dcf.")
  flags.DEFINE_string("calibration", None, "Score with this calibration instead of fitting one "
                      "on these trials: 'model' (the workdir's calibration.json), or a "
                      "hive.evaluate report or calibration.json.")
  flags.DEFINE_integer("bootstrap", 0, "Resamples of the speakers for 95 % confidence "
                       "intervals (eer_ci, min_dcf_ci, identification_accuracy_ci); 0: none.")
  flags.DEFINE_integer("seed", 0, "Seed of the bootstrap.")
  flags.DEFINE_float("calibration_prior", 0.5, "Prior the calibration is fitted at (0.5 "
                     "minimises cllr; a low-prior application may prefer its p_target).")
  flags.DEFINE_bool("asnorm", False, "Also score with AS-Norm against the model's cohort "
                    "(asnorm_* numbers).")
  flags.DEFINE_integer("top_k", 100, "AS-Norm: the highest cohort scores kept per side.")
  flags.DEFINE_bool("write_cohort", False, "Write the scored speakers' mean embeddings to "
                    "WORKDIR/cohort.npz as AS-Norm's cohort (use with --split=train).")
  flags.DEFINE_enum("format", "json", ["json", "table"],
                    "json: the report as one JSON line on stdout and a readable summary on "
                    "stderr; table: the summary alone, on stdout (--out still gets the JSON).")


def select_split(examples: Examples, root, workdir, split: str):
  """Keeps the workdir's dev or train speakers (names may carry a corpus prefix)."""
  if split == "all":
    return examples
  wanted = set(workdir_lib.load_speakers(workdir)[split])
  prefix = input_pipeline.corpus_prefix(root)
  keep = [s for s in set(examples.speakers) if s in wanted or prefix + s in wanted]
  if not keep:
    raise ValueError(f"none of the workdir's {split} speakers are in {root}")
  return examples.select_speakers(keep)


def auto_segment_seconds(speakers, seconds: float = 3.0) -> float:
  """`seconds` when fewer than half of the speakers have two or more utterances, else 0
  (whole utterances). The benchmarks' rule for choosing segment scoring."""
  counts = utterances_per_speaker(speakers)
  return seconds if (counts >= 2).sum() < len(counts) / 2 else 0.0


def evaluate(encoder: Encoder, examples: Examples, cohort=None, calibration=None,
             **options) -> dict:
  """The report's numbers for prepared examples (embeddings returned under '_embeddings');
  `options` for the evaluator (far, p_target, bootstrap, seed, top_k), `cohort` and
  `calibration` for its `run`."""
  return VerificationEvaluator(encoder.embedder, examples, **options).run(
      encoder.params, encoder.embedding_mean, cohort=cohort, calibration=calibration)


def write_cohort(encoder: Encoder, embeddings, speakers, prefix: str = ""):
  """Writes the speakers' mean embeddings (names prefixed with the corpus) as the
  workdir's cohort, keeping the other speakers of a cohort of the same model."""
  names, means = scoring.speaker_means(embeddings, speakers)
  names = [prefix + str(n) for n in names]
  digest = workdir_lib.mean_digest(encoder.embedding_mean)
  old = workdir_lib.read_cohort(encoder.source)
  if old is not None and (old["step"], old["centring"]) == (encoder.step, digest):
    keep = [i for i, n in enumerate(old["speakers"]) if n not in set(names)]
    names = [old["speakers"][i] for i in keep] + names
    means = np.concatenate([old["embeddings"][keep], means])
  return workdir_lib.save_cohort(encoder.source, means, names, encoder.step, digest), len(names)


def read_calibration_option(value: str, encoder: Encoder) -> dict:
  """--calibration: 'model' (the workdir's, for this checkpoint and centring), or a file:
  a hive.evaluate report (its "calibration") or a calibration.json."""
  if value == "model":
    found = thresholds.model_calibration(encoder)
    if found is None:
      raise ValueError(f"{encoder.source}: no calibration for step {encoder.step} and its "
                       "centring (python -m hive.voiceid calibrate --workdir=... --report=...)")
    return found
  return thresholds.calibration_from_file(value, encoder.model_record())


def degraded(builder, examples: Examples, spec: str, feature_config) -> Examples:
  """`examples` (whole prepared utterances) with their waveforms corrupted by `spec`."""
  index = builder_lib.corpus_index(builder)
  position = {u: i for i, u in enumerate(index.utterance_ids)}
  records = [position[u] for u in examples.utterance_ids]  # Ascending: both in id order.
  return input_pipeline.degraded(examples, builder_lib.read_waveforms(builder, records), spec,
                                 feature_config)


def plot_det(scores, labels, path):
  from matplotlib.figure import Figure  # No pyplot: no GUI backend, no global state.
  from scipy.stats import norm
  fpr, fnr, _ = metrics.roc(scores, labels)
  clip = lambda x: np.clip(x, 1e-4, 1 - 1e-4)
  fig = Figure(figsize=(5, 5))
  ax = fig.subplots()
  ax.plot(norm.ppf(clip(fpr)), norm.ppf(clip(fnr)))
  ticks = [0.001, 0.01, 0.05, 0.2, 0.5]
  ax.set_xticks(norm.ppf(ticks), [f"{t:.1%}" for t in ticks])
  ax.set_yticks(norm.ppf(ticks), [f"{t:.1%}" for t in ticks])
  ax.plot([-4, 4], [-4, 4], ":", color="grey")
  ax.set(xlim=norm.ppf([1e-3, 0.6]), ylim=norm.ppf([1e-3, 0.6]),
         xlabel="false acceptance rate", ylabel="false rejection rate", title="DET curve")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def plot_embeddings(embeddings, speakers, genders, path):
  """2-D t-SNE map (PCA first, hive.embed.map_2d), colour = speaker, marker = gender."""
  title = f"{len(speakers)} utterances of {len(set(speakers))} speakers (colour), gender (marker)"
  embed_lib.plot_map(embed_lib.map_2d(embeddings), speakers, path, genders=genders, title=title)


def strict_json(report: dict) -> dict:
  """Non-finite numbers (min_dcf_threshold is +inf when accepting nothing is cheapest) as
  null: json.dumps would write `Infinity`, which strict JSON parsers reject."""
  return {k: None if isinstance(v, float) and not math.isfinite(v) else v
          for k, v in report.items()}


def _percent(value) -> str:
  return "n/a" if value is None else f"{100 * value:.2f} %"


def _threshold(value) -> str:
  return "no finite threshold" if value is None else f"threshold {value:.3f}"


def _interval(values, percent: bool) -> str:
  if not values:
    return "n/a"
  return (f"[{100 * values[0]:.2f}, {100 * values[1]:.2f}]" if percent else
          f"[{values[0]:.3f}, {values[1]:.3f}]")


def calibration_lines(r: dict) -> list[str]:
  """The summary's lines for calibration, the threshold at --far, open-set identification,
  the bootstrap's intervals and AS-Norm (each only when the report has it)."""
  lines, indent = [], " " * 15
  if r.get("cllr") is not None:
    at, source = r.get("act_dcf_threshold"), r["calibration"].get("source")
    lines.append(f"  calibrated   cllr {r['cllr']:.3f} (best monotonic map {r['min_cllr']:.3f}), "
                 f"actual DCF {r['act_dcf']:.3f}"
                 + (f" at cosine {at:.3f}" if at is not None else "")
                 + ("" if source == "fitted on these trials" else f"; calibration {source}"))
  if r.get("far") is not None:
    label = f"FAR {100 * r['far']:g} %"
    lines.append(f"  {label:<12} {_threshold(r['far_threshold'])}, false rejects "
                 f"{_percent(r['far_false_reject'])}")
  if r.get("open_set_enrolled_speakers"):
    lines += [f"  open set     {r['open_set_enrolled_speakers']} of {r['num_speakers']} speakers "
              f"enrolled, same threshold: {_percent(r['open_set_false_alarm_rate'])} of "
              f"{r['open_set_unknown_probes']:,} others accepted;",
              f"{indent}of {r['open_set_known_probes']:,} utterances of enrolled speakers: "
              f"{_percent(r['open_set_miss_rate'])} rejected, "
              f"{_percent(r['open_set_confusion_rate'])} taken for another"]
  if r.get("bootstrap_resamples"):
    lines.append(f"  95 % CI      EER {_interval(r.get('eer_ci'), True)} %, minDCF "
                 f"{_interval(r.get('min_dcf_ci'), False)}, one-shot ID "
                 f"{_interval(r.get('identification_accuracy_ci'), True)} % "
                 f"({r['bootstrap_resamples']:,} resamples)")
  if r.get("asnorm_eer") is not None:
    lines.append(f"  AS-Norm      EER {_percent(r['asnorm_eer'])}, minDCF "
                 f"{r['asnorm_min_dcf']:.3f}, cllr {r['asnorm_cllr']:.3f}, one-shot ID "
                 f"{_percent(r.get('asnorm_identification_accuracy'))} (top "
                 f"{r['asnorm_top_k']} of {r['asnorm_cohort_size']:,})")
    if r.get("asnorm_eer_change_ci"):
      lines.append(f"{indent}change from cosine (95 % CI, paired): EER "
                   f"{_interval(r['asnorm_eer_change_ci'], True)} points, minDCF "
                   f"{_interval(r['asnorm_min_dcf_change_ci'], False)}")
  return lines


def format_summary(report: dict, out=None) -> str:
  """The report for a person: what was scored, the numbers, where the files went."""
  r = report
  corpus = os.path.basename(os.path.normpath(str(r.get("data", "?"))))
  split = {"all": "all speakers", "dev": "the model's dev speakers",
           "train": "the model's training speakers"}.get(r.get("split"), r.get("split"))
  unit = (f"{r['segment_seconds']:g}-s segments" if r.get("segment_seconds") else
          "whole utterances")
  lines = [f"hive.evaluate: {corpus}, {split}, {unit}",
           f"  model        {r.get('workdir')} (step {r.get('checkpoint_step')}), "
           f"{'centred' if r.get('centring') else 'not centred'}",
           f"  speakers     {r['num_speakers']:,}; utterances {r['num_utterances']:,} "
           f"({r['seconds_of_audio']:,.1f} s of audio, embedded in {r['embed_seconds']:.1f} s)"
           + (f"; {r['skipped_files']:,} files skipped" if r.get("skipped_files") else ""),
           f"  trials       {r['num_trials']:,} pairs, {r['num_target_trials']:,} same-speaker",
           f"  EER          {_percent(r['eer'])} ({_threshold(r['eer_threshold'])})",
           f"  minDCF       {r['min_dcf']:.3f} (p_target 0.01, "
           f"{_threshold(r['min_dcf_threshold'])})"]
  if r.get("identification_accuracy") is None:
    lines.append("  one-shot ID  n/a (no speaker has a second utterance)")
  else:
    lines.append(f"  one-shot ID  {_percent(r['identification_accuracy'])} of "
                 f"{r['num_identification_trials']:,} utterances (each speaker enrolled "
                 f"with its first)")
  lines += calibration_lines(r)
  if r.get("gender_accuracy") is None:
    lines.append("  gender       n/a (no gender labels)")
  else:
    lines.append(f"  gender       {_percent(r['gender_accuracy'])} of "
                 f"{r['num_gender_labelled']:,} labelled utterances")
  if r.get("plots"):
    lines.append(f"  plots        {', '.join(r['plots'])}")
  if out:
    lines.append(f"  report       {out}")
  return "\n".join(lines)


def print_report(report: dict, fmt: str = "json", out=None) -> None:
  """json: the report on stdout as one line (what scripts read) and the summary on stderr;
  table: the summary alone, on stdout."""
  summary = format_summary(report, out)
  if fmt == "table":
    print(summary)
    return
  print(summary, file=sys.stderr)
  print(json.dumps(report, allow_nan=False))


def main(argv):
  del argv
  if not FLAGS.workdir or not FLAGS.data:
    raise app.UsageError("--workdir and --data are required")
  if FLAGS.segment_seconds < 0:
    raise app.UsageError(f"--segment_seconds must be >= 0, got {FLAGS.segment_seconds}")
  for name in ("far", "p_target", "calibration_prior"):
    if not 0 < getattr(FLAGS, name) < 1:
      raise app.UsageError(f"--{name} must be in (0, 1), got {getattr(FLAGS, name)}")
  if FLAGS.bootstrap < 0:
    raise app.UsageError(f"--bootstrap must be >= 0, got {FLAGS.bootstrap}")
  cli.hide_gpus_from_tensorflow()
  cli.use_compilation_cache()
  encoder = Encoder.from_workdir(FLAGS.workdir, FLAGS.step)
  if FLAGS.degrade:
    from hive.data import waveform_augment
    waveform_augment.parse_degrade(FLAGS.degrade)  # A bad spec fails before any work.
  storage = builder_lib.Storage(store_waveform=bool(FLAGS.degrade))
  builder, prepared = builder_lib.prepare(FLAGS.data, FLAGS.data_dir, encoder.feature_config,
                                          storage=storage)
  examples = select_split(builder_lib.read_examples(builder), FLAGS.data, FLAGS.workdir,
                          FLAGS.split)
  if FLAGS.degrade:
    examples = degraded(builder, examples, FLAGS.degrade, encoder.feature_config)
  if FLAGS.segment_seconds > 0:
    examples = examples.cut_segments(
        round(FLAGS.segment_seconds * 1000 / encoder.feature_config.hop_ms),
        single_utterance_only=FLAGS.segment_speakers == "single")
  calibration = (read_calibration_option(FLAGS.calibration, encoder) if FLAGS.calibration
                 else None)
  asnorm = FLAGS.asnorm or (calibration or {}).get("scores") == "asnorm"
  cohort = thresholds.model_cohort(encoder) if asnorm else None
  report = evaluate(encoder, examples, cohort=cohort, calibration=calibration, far=FLAGS.far,
                    p_target=FLAGS.p_target, bootstrap=FLAGS.bootstrap, seed=FLAGS.seed,
                    top_k=FLAGS.top_k, calibration_prior=FLAGS.calibration_prior)
  embeddings = report.pop("_embeddings")
  if FLAGS.write_cohort:
    if FLAGS.split != "train":
      print("note: --write_cohort with speakers other than the training speakers "
            f"(--split={FLAGS.split})", file=sys.stderr)
    file, size = write_cohort(encoder, embeddings, examples.speakers,
                              input_pipeline.corpus_prefix(FLAGS.data))
    print(f"cohort of {size} speakers written to {file}", file=sys.stderr)
  report.update({"workdir": str(FLAGS.workdir), "checkpoint_step": encoder.step,
                 "centring": workdir_lib.mean_digest(encoder.embedding_mean),
                 "data": str(FLAGS.data), "split": FLAGS.split,
                 "segment_seconds": FLAGS.segment_seconds or None,
                 "segment_speakers": FLAGS.segment_speakers if FLAGS.segment_seconds else None,
                 "degrade": FLAGS.degrade or None,
                 "skipped_files": len(prepared.skips)})
  if FLAGS.plots:
    plots = pathlib.Path(FLAGS.plots)
    plots.mkdir(parents=True, exist_ok=True)
    plot_det(*metrics.all_pairs_trials(embeddings, examples.speakers), plots / "det.png")
    plot_embeddings(embeddings, examples.speakers, examples.genders, plots / "embeddings.png")
    report["plots"] = [str(plots / "det.png"), str(plots / "embeddings.png")]
  report = strict_json(report)
  if FLAGS.out:
    workdir_lib.write_atomically(FLAGS.out, json.dumps(report, indent=1, allow_nan=False) + "\n")
  print_report(report, FLAGS.format, FLAGS.out)


def run() -> None:
  # Any ValueError here is about the input (a corpus, a split, a workdir): one line.
  cli.run(main, define_flags, errors=(ValueError, readers.CorpusError))


if __name__ == "__main__":
  run()
