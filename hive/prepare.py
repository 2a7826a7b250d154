"""Prepares a corpus once: `python -m hive.prepare --data=PATH [--data_dir=CACHE]`.

Reads a LibriSpeech-layout root or a Kaldi data dir, writes log-mel features as a
TFDS dataset (a cache hit the second time) and prints what it read and skipped.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from hive import features as features_lib
from hive import logs
from hive.data import builder as builder_lib
from hive.data import readers


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defined only when run as a program, so importing several hive commands in
  one process (tests, notebooks) does not clash on shared flag names."""
  flags.DEFINE_string("data", None, "Corpus root (LibriSpeech layout or Kaldi data dir).")
  flags.DEFINE_string("data_dir", None, "TFDS cache (default $HIVE_CACHE/tfds or ~/.cache/hive/tfds).")
  flags.DEFINE_integer("n_mels", 40, "Mel bands.")
  flags.DEFINE_bool("trim_silence", False, "Drop low-energy stretches before features.")
  flags.DEFINE_integer("num_workers", None, "Feature-extraction processes (default: all cores).")


def format_report(report: builder_lib.PrepareReport) -> str:
  lines = [
      f"{'Cache hit' if report.cache_hit else 'Prepared'}: {report.root} ({report.layout})",
      f"  dataset:     {report.dataset_dir}",
      f"  listed:      {report.entries_listed} entries",
      f"  read:        {report.utterances} utterances, {report.hours:.3f} hours",
      f"  speakers:    {report.speakers} "
      f"({', '.join(f'{k}: {v}' for k, v in sorted(report.gender_speakers.items()))})",
      f"  utterances by gender: "
      f"{', '.join(f'{k}: {v}' for k, v in sorted(report.gender_utterances.items()))}",
      f"  skipped:     {len(report.skips)}",
  ]
  lines += [f"    {s['path']}: {s['reason']}" for s in report.skips]
  if report.notices:
    lines.append(f"  notices:     {len(report.notices)}")
    lines += [f"    {n['path']}: {n['message']}" for n in report.notices]
  return "\n".join(lines)


def main(argv):
  del argv
  logs.quiet_libraries()
  if not FLAGS.data:
    raise app.UsageError("--data=PATH is required")
  config = features_lib.FeatureConfig(n_mels=FLAGS.n_mels, trim_silence=FLAGS.trim_silence)
  try:
    _, report = builder_lib.prepare(FLAGS.data, FLAGS.data_dir, config, FLAGS.num_workers)
  except readers.CorpusError as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(format_report(report))


if __name__ == "__main__":
  define_flags()
  app.run(main)
