"""The printed summary of `hive.prepare`: skips and notices grouped by kind with a count and a
few examples, however many there are, naming the report file that lists every one."""

import dataclasses
import json
import pathlib

import numpy as np
import pytest
import soundfile as sf

from hive import prepare
from hive.data import builder, readers


def report_of(corpus, dataset_dir="/cache/ds/1.0.0", skips=()):
  """A PrepareReport for a listing, as preparing it would give with every file decodable."""
  speakers = {u.speaker: u.gender or "unknown" for u in corpus.utterances}
  return builder.PrepareReport(
      root=corpus.root, layout=corpus.layout, dataset_dir=dataset_dir,
      utterances=len(corpus.utterances), speakers=len(speakers), hours=0.5,
      gender_utterances={"unknown": len(corpus.utterances)},
      gender_speakers={"unknown": len(speakers)},
      skips=[dataclasses.asdict(s) for s in [*corpus.skips, *skips]],
      notices=[dataclasses.asdict(n) for n in corpus.notices])


def kaldi_without_genders(root, n_speakers):
  """A Kaldi dir of `n_speakers` one-utterance speakers and no spk2gender."""
  root.mkdir(parents=True)
  t = np.arange(4000) / 16000
  scp, utt2spk = [], []
  for i in range(n_speakers):
    sf.write(root / f"s{i:03d}.flac", 0.3 * np.sin(2 * np.pi * (150 + 10 * i) * t), 16000)
    scp.append(f"u{i:03d} s{i:03d}.flac\n")
    utt2spk.append(f"u{i:03d} spk{i:03d}\n")
  (root / "wav.scp").write_text("".join(scp))
  (root / "utt2spk").write_text("".join(utt2spk))
  return root


def indented(text, depth):
  return [line for line in text.splitlines() if line.startswith(" " * depth)
          and not line.startswith(" " * (depth + 1))]


def test_speakers_without_gender_give_one_notice_line_and_a_full_report_file(tmp_path):
  n = 12
  root = kaldi_without_genders(tmp_path / "corpus", n)
  _, report = builder.prepare(root, data_dir=str(tmp_path / "tfds"), num_workers=1)
  text = prepare.format_report(report)
  report_file = pathlib.Path(report.dataset_dir) / builder.REPORT_FILE
  assert f"report:      {report_file}" in text
  saved = json.loads(report_file.read_text())
  assert sorted(n["message"].split()[1] for n in saved["notices"]) == [
      f"spk{i:03d}" for i in range(n)]
  assert {n["kind"] for n in saved["notices"]} == {readers.NO_GENDER_TABLE}
  # One headline for all of them, three examples, and a pointer to the rest.
  headlines = indented(text, 4)
  assert headlines == [f"    no_gender_table: gender unknown for all {n} speakers: no spk2gender"]
  assert len(indented(text, 6)) == prepare.EXAMPLES + 1
  assert f"... and {n - prepare.EXAMPLES} more in {builder.REPORT_FILE}" in text


def test_shared_speechcommands_summary_is_short(shared_data):
  corpus = readers.read_corpus(shared_data / "speechcommands")
  text = prepare.format_report(report_of(corpus))
  assert len(text.splitlines()) <= 20
  assert "gender unknown for all 1,873 speakers: no spk2gender" in text
  assert "... and 1,870 more in prepare_report.json" in text


def test_thousands_of_skips_are_grouped_by_kind(tmp_path):
  corpus = readers.Corpus(str(tmp_path), "librispeech",
                          [readers.Utterance("11-1-0", "a.flac", "11", "f")], [], [])
  skips = [readers.Skip(f"bad{i:04d}.flac", f"cannot decode audio (Error {i})")
           for i in range(2000)]
  skips += [readers.Skip(f"quiet{i}.wav", "all-silent audio (peak below -80 dBFS)")
            for i in range(5)]
  skips.append(readers.Skip("x.m4a", "cannot decode .m4a: no AAC decoder installed "
                            "(install ffmpeg)"))
  text = prepare.format_report(report_of(corpus, skips=skips))
  assert "  skipped:     2006" in text
  assert indented(text, 4) == ["    undecodable: 2,000", "    silent: 5", "    no_decoder: 1"]
  assert "bad0000.flac: cannot decode audio (Error 0)" in text
  assert "bad0003.flac" not in text
  assert "... and 1,997 more in prepare_report.json" in text
  assert "... and 2 more in prepare_report.json" in text
  assert "x.m4a: cannot decode .m4a" in text
  assert len(text.splitlines()) == 8 + (1 + 3 + 1) + (1 + 3 + 1) + (1 + 1)


def test_reports_written_before_kinds_are_grouped_by_derived_kind(tmp_path):
  report = report_of(readers.Corpus(str(tmp_path), "kaldi", [], [], []))
  report.speakers = 3
  report.skips = [{"path": f"{i}.wav", "reason": "empty file (0 bytes)"} for i in range(4)]
  report.notices = [{"path": "spk2gender", "message": f"speaker {s}: gender unknown"}
                    for s in "ABC"]
  text = prepare.format_report(report)
  assert indented(text, 4) == ["    empty_file: 4",
                               "    gender_unknown: gender unknown for all 3 speakers"]


@pytest.mark.parametrize("count, speakers, phrase", [
    (3, 3, "for all 3 speakers"), (2, 1_500, "for 2 of 1,500 speakers"),
    (4, 3, "for 4 speakers")])
def test_gender_headline_counts(count, speakers, phrase):
  report = builder.PrepareReport(
      root="r", layout="voxceleb", dataset_dir="d", utterances=speakers, speakers=speakers,
      hours=0.0, gender_utterances={}, gender_speakers={}, skips=[],
      notices=[dataclasses.asdict(readers.Notice(
          f"r/id{i}", f"speaker id{i} has no entry in r/vox1_meta.csv: gender unknown",
          readers.NO_GENDER_ENTRY)) for i in range(count)])
  [headline] = indented(prepare.format_report(report), 4)
  assert headline == (f"    no_gender_entry: gender unknown {phrase}: "
                      "not in vox1_meta.csv / vox2_meta.csv")
