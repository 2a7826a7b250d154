"""Corpus readers: LibriSpeech layout, SPEAKERS.TXT, Kaldi data dirs, layout detection."""

import collections
import pathlib

import numpy as np
import pytest
import soundfile as sf

from hive.data import readers

SPEAKERS_TXT = """\
; Some pipe(|) separated metadata about all LibriVox readers
;ID  |SEX| SUBSET           |MINUTES| NAME

11   | F | train-clean-100  | 25.03 | Kristin LeMoine
12   | M | train-clean-100  | 20.18 | |CBW|Simon
  13 |  f  | dev-clean      | 8.00  | Lower Case
14   | X | train-other-500  | 1.00  | Nobody Knows
"""


def write_tone(path, sample_rate=16000, seconds=0.1, channels=1, freq=440.0):
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  t = np.arange(int(sample_rate * seconds)) / sample_rate
  wave = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
  if channels > 1:
    wave = np.stack([wave] * channels, axis=1)
  sf.write(path, wave, sample_rate)
  return path


def make_librispeech(root, layout, subset="train-clean-100", ext=".flac"):
  """layout: {speaker: {chapter: n_utterances}}; returns the written paths."""
  paths = []
  for speaker, chapters in layout.items():
    for chapter, n in chapters.items():
      for i in range(n):
        name = f"{speaker}-{chapter}-{i:04d}{ext}"
        paths.append(write_tone(pathlib.Path(root) / subset / speaker / chapter / name))
  return paths


# --- SPEAKERS.TXT and genders -------------------------------------------------


def test_read_speakers_txt_skips_comments_and_keeps_pipes_in_names(tmp_path):
  path = tmp_path / "SPEAKERS.TXT"
  path.write_text(SPEAKERS_TXT)
  genders = readers.read_speakers_txt(path)
  assert genders == {"11": "f", "12": "m", "13": "f", "14": readers.UNKNOWN_GENDER}


@pytest.mark.parametrize("value, expected", [
    ("m", "m"), ("M", "m"), (" male ", "m"), ("F", "f"), ("Female", "f"),
    ("x", ""), ("", ""),
])
def test_parse_gender(value, expected):
  assert readers.parse_gender(value) == expected


# --- LibriSpeech layout -------------------------------------------------------


def test_librispeech_root_is_corpus_dir(tmp_path):
  make_librispeech(tmp_path, {"11": {"100": 2, "101": 1}, "12": {"200": 3}})
  (tmp_path / "SPEAKERS.TXT").write_text(SPEAKERS_TXT)
  corpus = readers.read_corpus(tmp_path)
  assert corpus.layout == "librispeech"
  assert corpus.speakers == ["11", "12"]
  assert sorted(u.id for u in corpus.utterances) == [
      "11-100-0000", "11-100-0001", "11-101-0000",
      "12-200-0000", "12-200-0001", "12-200-0002"]
  assert {u.speaker: u.gender for u in corpus.utterances} == {"11": "f", "12": "m"}
  for u in corpus.utterances:
    assert pathlib.Path(u.path).is_file()
    assert pathlib.Path(u.path).stem == u.id
  assert corpus.skips == [] and corpus.notices == []


def test_librispeech_root_is_subset_dir_with_speakers_txt_one_level_up(tmp_path):
  make_librispeech(tmp_path, {"11": {"100": 1}, "12": {"200": 2}}, subset="dev-clean")
  (tmp_path / "SPEAKERS.TXT").write_text(SPEAKERS_TXT)
  corpus = readers.read_corpus(tmp_path / "dev-clean")
  assert corpus.layout == "librispeech"
  assert len(corpus.utterances) == 3
  assert {u.speaker: u.gender for u in corpus.utterances} == {"11": "f", "12": "m"}
  assert corpus.notices == []


def test_librispeech_wav_files_and_any_rate_are_listed(tmp_path):
  make_librispeech(tmp_path, {"11": {"100": 2}}, ext=".wav")
  corpus = readers.read_corpus(tmp_path)
  assert len(corpus.utterances) == 2
  assert all(u.path.endswith(".wav") for u in corpus.utterances)


def test_librispeech_without_speakers_txt_keeps_utterances_with_notice(tmp_path):
  make_librispeech(tmp_path, {"11": {"100": 2}, "12": {"200": 1}})
  corpus = readers.read_corpus(tmp_path)
  assert len(corpus.utterances) == 3
  assert all(u.gender == readers.UNKNOWN_GENDER for u in corpus.utterances)
  assert corpus.skips == []
  # One notice per speaker, naming the speaker and the missing file.
  assert len(corpus.notices) == 2
  for speaker, notice in zip(["11", "12"], sorted(corpus.notices, key=lambda n: n.path)):
    assert f"speaker {speaker}" in notice.message
    assert "SPEAKERS.TXT" in notice.message and "absent" in notice.message


def test_librispeech_speaker_missing_from_speakers_txt_is_kept_with_notice(tmp_path):
  make_librispeech(tmp_path, {"11": {"100": 1}, "99": {"300": 2}})
  (tmp_path / "SPEAKERS.TXT").write_text(SPEAKERS_TXT)
  corpus = readers.read_corpus(tmp_path)
  genders = {u.id: u.gender for u in corpus.utterances}
  assert genders == {"11-100-0000": "f", "99-300-0000": "", "99-300-0001": ""}
  assert len(corpus.notices) == 1
  notice = corpus.notices[0]
  assert "speaker 99" in notice.message and "gender unknown" in notice.message
  assert notice.path.endswith("99")
  assert corpus.skips == []


def test_librispeech_badly_named_or_misplaced_files_are_skipped_with_reason(tmp_path):
  good = make_librispeech(tmp_path, {"11": {"100": 2}})
  chapter = tmp_path / "train-clean-100" / "11" / "100"
  bad_name = write_tone(chapter / "recording.flac")
  other_speaker = write_tone(chapter / "12-100-0000.flac")  # Name says speaker 12.
  other_chapter = write_tone(chapter / "11-555-0000.flac")  # Name says chapter 555.
  corpus = readers.read_corpus(tmp_path)
  assert sorted(u.path for u in corpus.utterances) == sorted(map(str, good))
  reasons = {s.path: s.reason for s in corpus.skips}
  assert set(reasons) == {str(bad_name), str(other_speaker), str(other_chapter)}
  assert "<speaker>-<chapter>-<utterance>" in reasons[str(bad_name)]
  assert "not under 12/100/" in reasons[str(other_speaker)]
  assert "not under 11/555/" in reasons[str(other_chapter)]


def test_librispeech_transcripts_are_optional_and_ignored(tmp_path):
  make_librispeech(tmp_path, {"11": {"100": 2, "101": 1}})
  (tmp_path / "train-clean-100" / "11" / "100" / "11-100.trans.txt").write_text(
      "11-100-0000 HELLO\n11-100-0001 WORLD\n")  # Chapter 101 has none.
  (tmp_path / "LICENSE.TXT").write_text("licence")
  corpus = readers.read_corpus(tmp_path)
  assert len(corpus.utterances) == 3
  assert corpus.skips == []


def test_fingerprint_is_stable_and_changes_with_the_data(tmp_path):
  make_librispeech(tmp_path, {"11": {"100": 2}})
  first = readers.read_corpus(tmp_path).fingerprint()
  assert readers.read_corpus(tmp_path).fingerprint() == first
  write_tone(tmp_path / "train-clean-100" / "11" / "100" / "11-100-0009.flac")
  assert readers.read_corpus(tmp_path).fingerprint() != first


# --- Kaldi data dir -----------------------------------------------------------


def make_kaldi(root, wav_scp, utt2spk, spk2gender=None):
  root = pathlib.Path(root)
  root.mkdir(parents=True, exist_ok=True)
  (root / "wav.scp").write_text("".join(f"{line}\n" for line in wav_scp))
  (root / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in utt2spk.items()))
  if spk2gender is not None:
    (root / "spk2gender").write_text("".join(f"{s}\t{g}\n" for s, g in spk2gender.items()))
  return root


def test_kaldi_relative_and_absolute_paths(tmp_path):
  data = tmp_path / "data"
  write_tone(data / "wav" / "a1.flac")
  absolute = write_tone(tmp_path / "elsewhere" / "b1.wav", sample_rate=8000)
  make_kaldi(data, ["uttA1 wav/a1.flac", f"uttB1\t{absolute}"],
             {"uttA1": "A", "uttB1": "B"}, {"A": "f", "B": "M"})
  corpus = readers.read_corpus(data)
  assert corpus.layout == "kaldi"
  by_id = {u.id: u for u in corpus.utterances}
  assert set(by_id) == {"uttA1", "uttB1"}
  assert pathlib.Path(by_id["uttA1"].path) == data / "wav" / "a1.flac"
  assert pathlib.Path(by_id["uttB1"].path) == absolute
  assert (by_id["uttA1"].speaker, by_id["uttA1"].gender) == ("A", "f")
  assert (by_id["uttB1"].speaker, by_id["uttB1"].gender) == ("B", "m")
  assert corpus.skips == [] and corpus.notices == []


def test_kaldi_spk2gender_is_optional(tmp_path):
  write_tone(tmp_path / "a.flac")
  write_tone(tmp_path / "b.flac")
  make_kaldi(tmp_path, ["u1 a.flac", "u2 b.flac"], {"u1": "A", "u2": "A"})
  corpus = readers.read_corpus(tmp_path)
  assert [u.gender for u in corpus.utterances] == ["", ""]
  assert len(corpus.notices) == 1  # Once per speaker, not per utterance.
  assert "speaker A" in corpus.notices[0].message


def test_kaldi_unusable_lines_are_skipped_naming_the_line(tmp_path):
  write_tone(tmp_path / "a.flac")
  write_tone(tmp_path / "c.flac")
  make_kaldi(tmp_path, [
      "u1 a.flac",
      "u2 missing/nowhere.flac",
      "u3 c.flac",  # No utt2spk entry.
      "u4 sox in.wav -t wav - |",
      "u5",
  ], {"u1": "A", "u2": "A", "u4": "A", "u5": "A"}, {"A": "m"})
  corpus = readers.read_corpus(tmp_path)
  assert [u.id for u in corpus.utterances] == ["u1"]
  skips = {s.path: s.reason for s in corpus.skips}
  scp = tmp_path / "wav.scp"
  assert set(skips) == {f"{scp}:2 (u2)", f"{scp}:3 (u3)", f"{scp}:4 (u4)", f"{scp}:5 (u5)"}
  assert "does not exist" in skips[f"{scp}:2 (u2)"]
  assert str(tmp_path / "missing" / "nowhere.flac") in skips[f"{scp}:2 (u2)"]
  assert "no utt2spk entry" in skips[f"{scp}:3 (u3)"]
  assert "piped" in skips[f"{scp}:4 (u4)"]
  assert "no path" in skips[f"{scp}:5 (u5)"]


def test_kaldi_segments_are_refused(tmp_path):
  write_tone(tmp_path / "a.flac")
  make_kaldi(tmp_path, ["rec1 a.flac"], {"u1": "A"})
  (tmp_path / "segments").write_text("u1 rec1 0.0 0.05\n")
  with pytest.raises(readers.CorpusError, match="segments"):
    readers.read_corpus(tmp_path)


def test_kaldi_without_utt2spk_is_an_error(tmp_path):
  write_tone(tmp_path / "a.flac")
  (tmp_path / "wav.scp").write_text("u1 a.flac\n")
  with pytest.raises(readers.CorpusError, match="utt2spk"):
    readers.read_corpus(tmp_path)


# --- Layout detection and unusable roots --------------------------------------


def test_detect_layout(tmp_path):
  kaldi = tmp_path / "kaldi"
  write_tone(kaldi / "a.flac")
  make_kaldi(kaldi, ["u1 a.flac"], {"u1": "A"})
  libri = tmp_path / "libri"
  make_librispeech(libri, {"11": {"100": 1}})
  assert readers.detect_layout(kaldi) == "kaldi"
  assert readers.detect_layout(libri) == "librispeech"


def test_empty_root_is_a_clear_error(tmp_path):
  with pytest.raises(readers.CorpusError, match="no audio found"):
    readers.read_corpus(tmp_path)


def test_nonexistent_root_is_a_clear_error(tmp_path):
  with pytest.raises(readers.CorpusError, match="no such directory"):
    readers.read_corpus(tmp_path / "does-not-exist")


def test_file_as_root_is_a_clear_error(tmp_path):
  path = write_tone(tmp_path / "a.flac")
  with pytest.raises(readers.CorpusError, match="not a directory"):
    readers.read_corpus(path)


def test_root_without_audio_is_a_clear_error(tmp_path):
  (tmp_path / "11" / "100").mkdir(parents=True)
  (tmp_path / "11" / "100" / "11-100.trans.txt").write_text("11-100-0000 HELLO\n")
  (tmp_path / "SPEAKERS.TXT").write_text(SPEAKERS_TXT)
  with pytest.raises(readers.CorpusError, match="no audio found"):
    readers.read_corpus(tmp_path)


def test_root_where_every_file_is_skipped_is_a_clear_error(tmp_path):
  write_tone(tmp_path / "x" / "recording.flac")
  with pytest.raises(readers.CorpusError, match="no usable utterances.*1 skipped"):
    readers.read_corpus(tmp_path)


# --- The shared corpora -------------------------------------------------------


def _speaker_genders(corpus):
  genders = {}
  for u in corpus.utterances:
    assert genders.setdefault(u.speaker, u.gender) == u.gender
  return collections.Counter(genders.values())


@pytest.mark.parametrize("subdir", ["librispeech", "librispeech/train-clean-100"])
def test_shared_librispeech(shared_data, subdir):
  corpus = readers.read_corpus(shared_data / subdir)
  assert corpus.layout == "librispeech"
  assert len(corpus.speakers) == 251
  # 221 readers with one utterance, 27 with three, and speakers 19, 26, 27 with 20-23.
  assert len(corpus.utterances) == 366
  counts = collections.Counter(u.speaker for u in corpus.utterances)
  assert sum(1 for n in counts.values() if n == 1) == 221
  assert sum(1 for n in counts.values() if n == 3) == 27
  assert all(20 <= counts[s] <= 23 for s in ("19", "26", "27"))
  assert corpus.skips == [] and corpus.notices == []
  assert _speaker_genders(corpus) == {"f": 125, "m": 126}


def test_shared_speechocean(shared_data):
  corpus = readers.read_corpus(shared_data / "speechocean762")
  assert corpus.layout == "kaldi"
  assert len(corpus.speakers) == 125
  assert len(corpus.utterances) == 1500
  assert corpus.skips == [] and corpus.notices == []
  assert _speaker_genders(corpus) == {"f": 67, "m": 58}
