"""Prepares a corpus once: `python -m hive.prepare --data=PATH [--data_dir=CACHE]`.

Reads a LibriSpeech-layout root, a VoxCeleb-layout root or a Kaldi data dir (hive/data/
readers.py), writes log-mel features as a TFDS dataset (a cache hit the second time) and
prints a summary of what it read, skipped and noticed (each kind once, with a count and a
few examples; every one is in the dataset's prepare_report.json). Also installed as the
console script `hive-prepare`.
"""

from __future__ import annotations

import os

from absl import app, flags

from hive import cli, features as features_lib
from hive.data import audio
from hive.data import builder as builder_lib
from hive.data import readers


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defined only when run as a program, so importing several hive commands in
  one process (tests, notebooks) does not clash on shared flag names."""
  flags.DEFINE_string("data", None, "Corpus root (LibriSpeech or VoxCeleb layout, or a Kaldi data dir).")
  flags.DEFINE_string("data_dir", None, "TFDS cache (default $HIVE_CACHE/tfds or ~/.cache/hive/tfds).")
  flags.DEFINE_integer("n_mels", 40, "Mel bands.")
  flags.DEFINE_bool("trim_silence", False, "Drop low-energy stretches before features.")
  flags.DEFINE_integer("num_workers", None, "Local feature-extraction processes (default: all "
                       "cores).")
  flags.DEFINE_string("beam_pipeline_options", None,
                      "Prepare on Apache Beam with these comma-separated pipeline options, e.g. "
                      "'direct_num_workers=4,direct_running_mode=multi_processing' (local) or "
                      "'runner=DataflowRunner,project=P,region=R,temp_location=gs://B/tmp' "
                      "(README: Scaling out). Empty string: Beam's defaults.")
  flags.DEFINE_bool("store_waveform", False, "Also store the 16 kHz waveform (int16) of every "
                    "utterance, for waveform augmentation.")
  flags.DEFINE_enum("feature_dtype", "float32", ["float32", "float16"],
                    "Precision of the stored log-mels.")


# Examples printed per kind of skip or notice; the report file lists every one.
EXAMPLES = 3
# Where each layout keeps its genders, for the summary's "gender unknown" lines.
_GENDER_TABLES = {"kaldi": "spk2gender", "librispeech": "SPEAKERS.TXT",
                  "voxceleb": "vox1_meta.csv / vox2_meta.csv"}


def group_by_kind(entries: list[dict], derive) -> list[tuple[str, list[dict]]]:
  """Report entries (skips or notices as dicts) grouped by `kind`, largest group first.

  Reports written before entries had a kind get it from `derive(entry)`.
  """
  groups: dict[str, list[dict]] = {}
  for entry in entries:
    groups.setdefault(entry.get("kind") or derive(entry), []).append(entry)
  return sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))


def _notice_headline(kind: str, count: int, report: builder_lib.PrepareReport) -> str:
  if kind not in readers.GENDER_KINDS:
    return f"{kind}: {count:,}"
  if count == report.speakers:
    speakers = f"all {count:,} speakers"
  elif count < report.speakers:
    speakers = f"{count:,} of {report.speakers:,} speakers"
  else:  # Some of them lost every file to skips.
    speakers = f"{count:,} speakers"
  table = _GENDER_TABLES.get(report.layout, "the speaker table")
  why = {readers.NO_GENDER_TABLE: f": no {table}",
         readers.NO_GENDER_ENTRY: f": not in {table}",
         readers.GENDER_UNRECOGNISED: f": {table} gives neither m nor f"}.get(kind, "")
  return f"{kind}: gender unknown for {speakers}{why}"


def _grouped_lines(groups, headline, line, report_name: str) -> list[str]:
  lines = []
  for kind, entries in groups:
    lines.append(f"    {headline(kind, len(entries))}")
    lines += [f"      {line(e)}" for e in entries[:EXAMPLES]]
    if len(entries) > EXAMPLES:
      lines.append(f"      ... and {len(entries) - EXAMPLES:,} more in {report_name}")
  return lines


def format_report(report: builder_lib.PrepareReport) -> str:
  """The summary a person reads: counts, and skips and notices grouped by kind with a few
  examples each (bounded however many there are); every one is in the report file."""
  report_file = os.path.join(report.dataset_dir, builder_lib.REPORT_FILE)
  lines = [
      f"{'Cache hit' if report.cache_hit else 'Prepared'}: {report.root} ({report.layout})",
      f"  dataset:     {report.dataset_dir}",
      f"  report:      {report_file} (every skip and notice)",
      f"  listed:      {report.entries_listed} entries",
      f"  read:        {report.utterances} utterances, {report.hours:.3f} hours",
      f"  speakers:    {report.speakers} "
      f"({', '.join(f'{k}: {v}' for k, v in sorted(report.gender_speakers.items()))})",
      f"  utterances by gender: "
      f"{', '.join(f'{k}: {v}' for k, v in sorted(report.gender_utterances.items()))}",
      f"  skipped:     {len(report.skips)}",
  ]
  report_name = builder_lib.REPORT_FILE
  lines += _grouped_lines(
      group_by_kind(report.skips, lambda s: audio.reason_kind(s["reason"])),
      lambda kind, n: f"{kind}: {n:,}", lambda s: f"{s['path']}: {s['reason']}", report_name)
  if report.notices:
    lines.append(f"  notices:     {len(report.notices)}")
    lines += _grouped_lines(
        group_by_kind(report.notices, lambda n: readers.notice_kind(n["message"])),
        lambda kind, n: _notice_headline(kind, n, report),
        lambda n: f"{n['path']}: {n['message']}", report_name)
  return "\n".join(lines)


def main(argv):
  cli.no_arguments(argv)
  if not FLAGS.data:
    raise app.UsageError("--data=PATH is required")
  cli.hide_gpus_from_tensorflow()
  config = features_lib.FeatureConfig(n_mels=FLAGS.n_mels, trim_silence=FLAGS.trim_silence)
  storage = builder_lib.Storage(FLAGS.store_waveform, FLAGS.feature_dtype)
  _, report = builder_lib.prepare(FLAGS.data, FLAGS.data_dir, config, FLAGS.num_workers,
                                  storage, FLAGS.beam_pipeline_options)
  print(format_report(report))


def run() -> None:
  cli.run(main, define_flags, errors=(readers.CorpusError,))


if __name__ == "__main__":
  run()
