"""Bad input through the whole preparation path: every unusable file is a counted,
reported skip naming the file and the reason; every usable file is kept."""

import dataclasses
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from hive import features
from hive.data import audio, builder, readers

SECONDS = 0.5
RNG = np.random.default_rng(1234)


def tone(sample_rate, channels=1, freq=220.0):
  t = np.arange(int(sample_rate * SECONDS)) / sample_rate
  wave = (0.3 * np.sin(2 * np.pi * freq * t)
          + 0.01 * RNG.standard_normal(len(t))).astype(np.float32)
  return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def write(path, wave=None, sample_rate=16000, **kwargs):
  path.parent.mkdir(parents=True, exist_ok=True)
  sf.write(path, tone(sample_rate) if wave is None else wave, sample_rate, **kwargs)
  return path


def write_bytes(path, data):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data)
  return path


def corrupt_flac(path):
  """A valid FLAC header (fLaC + STREAMINFO, 42 bytes) followed by garbage."""
  write(path)
  header = path.read_bytes()[:42]
  return write_bytes(path, header + np.random.default_rng(0).bytes(4000))


def truncated_flac(path):
  write(path)
  data = path.read_bytes()
  return write_bytes(path, data[:len(data) // 2])


def bad_files(make):
  """Writes every kind of unusable file via `make(name)` -> path; {path: reason part}."""
  nan = tone(16000)
  nan[100:110] = np.nan
  return {
      corrupt_flac(make("corrupt.flac")): "cannot decode audio",
      truncated_flac(make("truncated.flac")): "cannot decode audio",
      write_bytes(make("empty.wav"), b""): "empty file (0 bytes)",
      write_bytes(make("text.wav"), b"this is not audio\n" * 10): "cannot decode audio",
      write(make("zero.wav"), np.zeros(0, np.float32)): "zero-length audio",
      write(make("silent.flac"), np.zeros(8000, np.float32)): "all-silent audio",
      write(make("nan.wav"), nan, subtype="FLOAT"): "NaN",
  }


def audio_files(root):
  return sorted(str(p) for p in pathlib.Path(root).rglob("*")
                if p.suffix.lower() in audio.AUDIO_EXTENSIONS)


@pytest.fixture(scope="module")
def librispeech(tmp_path_factory):
  """A LibriSpeech-layout corpus with 6 good files over 3 speakers and 8 bad ones."""
  root = tmp_path_factory.mktemp("libri")
  (root / "SPEAKERS.TXT").write_text(
      "; ID | SEX | SUBSET | MINUTES | NAME\n"
      "11 | F | train | 1.0 | Eleven\n"
      "12 | M | train | 1.0 | Twelve\n")  # Speaker 13 has no entry.
  sub = root / "train"
  good = [
      write(sub / "11/100/11-100-0000.flac"),
      write(sub / "11/100/11-100-0001.wav", tone(8000), 8000),
      write(sub / "12/200/12-200-0000.flac", tone(44100, channels=2), 44100),
      write(sub / "12/200/12-200-0001.wav", tone(16000, channels=2), 16000),
      write(sub / "13/300/13-300-0000.flac", tone(22050), 22050),
      write(sub / "13/300/13-300-0001.wav", tone(16000), 16000, subtype="FLOAT"),
  ]
  # Bad files are spread over the speakers' folders and named as LibriSpeech
  # names them, so the readers list them and decoding has to refuse them.
  speakers = [("11", "100"), ("12", "200"), ("13", "300")]
  counter = iter(range(100))

  def make(name):
    i = next(counter)
    speaker, chapter = speakers[i % 3]
    ext = pathlib.Path(name).suffix
    return sub / speaker / chapter / f"{speaker}-{chapter}-{10 + i:04d}{ext}"

  bad = bad_files(make)
  bad[write(sub / "13/300/notes.flac")] = "<speaker>-<chapter>-<utterance>"
  data_dir = tmp_path_factory.mktemp("tfds")
  _, first = builder.prepare(sub, data_dir=str(data_dir), num_workers=1)
  prepared, second = builder.prepare(sub, data_dir=str(data_dir), num_workers=1)
  return dict(root=sub, good=good, bad=bad, report=first, again=second, builder=prepared)


def test_every_bad_file_is_a_skip_naming_file_and_reason(librispeech):
  report = librispeech["report"]
  skips = {s["path"]: s["reason"] for s in report.skips}
  assert len(skips) == len(report.skips), "a file was skipped twice"
  assert set(skips) == {str(p) for p in librispeech["bad"]}
  for path, reason in librispeech["bad"].items():
    assert reason in skips[str(path)], (path, skips[str(path)])


def test_every_good_file_is_kept(librispeech):
  report = librispeech["report"]
  assert report.utterances == len(librispeech["good"])
  assert report.speakers == 3
  examples = builder.read_examples(librispeech["builder"])
  assert examples.utterance_ids == sorted(p.stem for p in librispeech["good"])
  for path, mel, n in zip(sorted(librispeech["good"]), examples.features, examples.num_frames):
    assert mel.shape == (n, 40) and mel.dtype == np.float32
    assert n == features.num_frames(int(16000 * SECONDS))  # Resampled to 16 kHz.
    assert np.all(np.isfinite(mel))
  assert report.hours == pytest.approx(len(librispeech["good"]) * SECONDS / 3600, abs=1e-4)


def test_counts_reconcile_with_files_on_disk(librispeech):
  report = librispeech["report"]
  on_disk = audio_files(librispeech["root"])
  assert report.entries_listed == report.utterances + len(report.skips) == len(on_disk)
  listed = sorted([str(p) for p in librispeech["good"]] + [s["path"] for s in report.skips])
  assert listed == on_disk


def test_missing_speakers_txt_entry_is_kept_with_notice(librispeech):
  report = librispeech["report"]
  assert len(report.notices) == 1
  assert "speaker 13" in report.notices[0]["message"]
  assert report.gender_speakers == {"f": 1, "m": 1, "unknown": 1}
  assert report.gender_utterances == {"f": 2, "m": 2, "unknown": 2}
  examples = builder.read_examples(librispeech["builder"])
  assert examples.gender_of_speaker == {"11": 1, "12": 0, "13": -1}


def test_second_prepare_is_a_cache_hit_with_the_same_report(librispeech):
  first, again = librispeech["report"], librispeech["again"]
  assert not first.cache_hit and again.cache_hit
  assert dataclasses.replace(again, cache_hit=False) == first
  saved = json.loads((pathlib.Path(first.dataset_dir) / builder.REPORT_FILE).read_text())
  assert saved["utterances"] == first.utterances and len(saved["skips"]) == len(first.skips)


def test_printed_report_lists_every_skip(librispeech):
  from hive import prepare  # Defines absl flags; imported only here.
  report = librispeech["report"]
  text = prepare.format_report(report)
  assert f"listed:      {report.entries_listed} entries" in text
  assert f"skipped:     {len(report.skips)}" in text
  for skip in report.skips:
    assert f"{skip['path']}: {skip['reason']}" in text
  assert "speaker 13" in text
  assert prepare.format_report(librispeech["again"]).startswith("Cache hit")


def test_kaldi_bad_entries_through_prepare(tmp_path):
  root = tmp_path / "kaldi"
  write(root / "wav/a1.flac")
  write(root / "wav/b1.wav", tone(22050, channels=2), 22050)
  bad = bad_files(lambda name: root / "wav" / name)
  lines = ["a1 wav/a1.flac", "b1 wav/b1.wav", "gone wav/gone.flac"]
  lines += [f"bad{i} {p}" for i, p in enumerate(bad)]  # Absolute paths.
  (root / "wav.scp").write_text("\n".join(lines) + "\n")
  (root / "utt2spk").write_text("".join(f"{l.split()[0]} {'A' if i % 2 else 'B'}\n"
                                        for i, l in enumerate(lines)))
  (root / "spk2gender").write_text("A f\nB m\n")
  _, report = builder.prepare(root, data_dir=str(tmp_path / "tfds"), num_workers=1)
  assert report.layout == "kaldi"
  assert report.utterances == 2
  assert report.entries_listed == len(lines)
  skips = {s["path"]: s["reason"] for s in report.skips}
  gone = f"{root / 'wav.scp'}:3 (gone)"
  assert "does not exist" in skips.pop(gone)
  assert set(skips) == {str(p) for p in bad}
  for path, reason in bad.items():
    assert reason in skips[str(path)]


def test_prepare_cli_on_empty_dir_fails_clearly(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  result = subprocess.run(
      [sys.executable, "-m", "hive.prepare", f"--data={empty}",
       f"--data_dir={tmp_path / 'tfds'}"],
      capture_output=True, text=True, timeout=300,
      cwd=pathlib.Path(__file__).resolve().parents[1])
  assert result.returncode != 0
  assert f"error: {empty}: no audio found" in result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "tfds").exists()  # Nothing was written.


def test_read_corpus_error_for_all_bad_names(tmp_path):
  write(tmp_path / "x/y/recording.flac")
  with pytest.raises(readers.CorpusError, match="no usable utterances"):
    builder.prepare(tmp_path, data_dir=str(tmp_path / "tfds"))
