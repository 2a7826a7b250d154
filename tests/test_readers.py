"""Corpus readers: LibriSpeech and VoxCeleb layouts, SPEAKERS.TXT and vox*_meta.csv, Kaldi data
dirs, layout detection, kinds of skips and notices, .m4a decoding."""

import collections
import dataclasses
import pathlib

import numpy as np
import pytest
import soundfile as sf

from hive.data import audio, readers

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
  # An .m4a holds WAV data here: listing never decodes, and tests that decode
  # stand audioread's WAV reader in for an AAC decoder.
  sf.write(path, wave, sample_rate, format="WAV" if path.suffix == ".m4a" else None)
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


def test_shared_speechcommands_without_spk2gender(shared_data):
  corpus = readers.read_corpus(shared_data / "speechcommands")
  assert corpus.layout == "kaldi"
  assert (len(corpus.speakers), len(corpus.utterances)) == (1873, 5296)
  assert corpus.skips == []
  # One notice per speaker, all of one kind: there is no gender table at all.
  assert sorted(n.message.split()[1] for n in corpus.notices) == corpus.speakers
  assert {n.kind for n in corpus.notices} == {readers.NO_GENDER_TABLE}


# --- Kinds of skips and notices -----------------------------------------------


@pytest.mark.parametrize("reason, kind", [
    ("cannot decode audio (LibsndfileError: ...)", "undecodable"),
    (audio.NO_AAC_DECODER, "no_decoder"),
    ("empty file (0 bytes)", "empty_file"),
    ("all-silent audio (peak below -80 dBFS)", "silent"),
    ("no frames left after silence trimming", "no_frames"),
    ("something new", "other"),
])
def test_skip_built_from_path_and_reason_gets_its_kind(reason, kind):
  skip = readers.Skip("a.flac", reason)  # As the builder builds them.
  assert skip.kind == kind
  assert dataclasses.asdict(skip) == {"path": "a.flac", "reason": reason, "kind": kind}
  assert readers.Skip("a.flac", reason, "mine").kind == "mine"


def test_notice_kind_from_message_of_older_reports():
  assert readers.Notice("p", "speaker 1 has no entry in /x/SPEAKERS.TXT (absent): "
                        "gender unknown").kind == readers.NO_GENDER_TABLE
  assert readers.Notice("p", "speaker 1 has no entry in /x/SPEAKERS.TXT: "
                        "gender unknown").kind == readers.NO_GENDER_ENTRY
  assert readers.Notice("p", "speaker 1: gender unknown").kind == readers.GENDER_UNKNOWN


def test_kinds_of_reader_skips_and_notices(tmp_path):
  make_librispeech(tmp_path, {"11": {"100": 1}, "14": {"400": 1}, "99": {"900": 1}})
  (tmp_path / "SPEAKERS.TXT").write_text(SPEAKERS_TXT)  # 14 is "X", 99 is absent.
  chapter = tmp_path / "train-clean-100" / "11" / "100"
  write_tone(chapter / "recording.flac")
  write_tone(chapter / "12-100-0000.flac")
  corpus = readers.read_corpus(tmp_path)
  assert sorted(s.kind for s in corpus.skips) == ["bad_name", "misplaced"]
  kinds = {n.message.split()[1].rstrip(":"): n.kind for n in corpus.notices}
  assert kinds == {"14": readers.GENDER_UNRECOGNISED, "99": readers.NO_GENDER_ENTRY}


def test_kaldi_notice_kinds(tmp_path):
  for name in "abc":
    write_tone(tmp_path / f"{name}.flac")
  make_kaldi(tmp_path, ["u1 a.flac", "u2 b.flac", "u3 c.flac"],
             {"u1": "A", "u2": "B", "u3": "C"}, {"A": "f", "B": "x"})
  kinds = {n.message.split()[1].rstrip(":"): n.kind
           for n in readers.read_corpus(tmp_path).notices}
  assert kinds == {"B": readers.GENDER_UNRECOGNISED, "C": readers.NO_GENDER_ENTRY}


# --- VoxCeleb layout ----------------------------------------------------------

VOX1_META = ("VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"
             "id10001\tA.J._Buckley\tm\tIreland\tdev\n"
             "id10002\tAJ_Lamas\tF\tUSA\tdev\n"
             "id10004\tSomeone_Else\tm\tUSA\ttest\n")
VOX2_META = ("VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set \n"
             "id00012 ,n000012 ,m ,dev \n"
             "id00015 ,n000015 ,f ,dev \n")


def make_voxceleb(root, layout, ext=".wav"):
  """layout: {speaker: {video: n_utterances}}; returns the written paths."""
  return [write_tone(pathlib.Path(root) / speaker / video / f"{i + 1:05d}{ext}")
          for speaker, videos in layout.items()
          for video, n in videos.items() for i in range(n)]


def test_voxceleb1_layout_with_tab_separated_meta(tmp_path):
  make_voxceleb(tmp_path, {"id10001": {"1zcIwhmdeo4": 2, "-5AkDNs_mEL": 1},
                           "id10002": {"1zcIwhmdeo4": 1}, "id10003": {"xyz": 1}})
  (tmp_path / "vox1_meta.csv").write_text(VOX1_META)
  corpus = readers.read_corpus(tmp_path)
  assert corpus.layout == "voxceleb"
  assert corpus.speakers == ["id10001", "id10002", "id10003"]
  # Same file numbers under other videos and speakers stay distinct utterances.
  assert sorted(u.id for u in corpus.utterances) == [
      "id10001--5AkDNs_mEL-00001", "id10001-1zcIwhmdeo4-00001", "id10001-1zcIwhmdeo4-00002",
      "id10002-1zcIwhmdeo4-00001", "id10003-xyz-00001"]
  for u in corpus.utterances:
    assert "/" not in u.id and u.path.endswith(u.id.rsplit("-", 1)[1] + ".wav")
  assert {u.speaker: u.gender for u in corpus.utterances} == {
      "id10001": "m", "id10002": "f", "id10003": ""}
  assert corpus.skips == []
  [notice] = corpus.notices
  assert notice.kind == readers.NO_GENDER_ENTRY and "speaker id10003" in notice.message
  assert notice.path == str(tmp_path / "id10003")


def test_voxceleb2_comma_separated_meta_one_level_up(tmp_path):
  root = tmp_path / "dev" / "aac"
  make_voxceleb(root, {"id00012": {"21Uxsk56VDQ": 2}, "id00015": {"0fijmz4vTVU": 1}})
  (tmp_path / "dev" / "vox2_meta.csv").write_text(VOX2_META)
  corpus = readers.read_corpus(root)
  assert corpus.layout == "voxceleb"
  assert {u.speaker: u.gender for u in corpus.utterances} == {"id00012": "m", "id00015": "f"}
  assert len(corpus.utterances) == 3 and corpus.notices == [] and corpus.skips == []


def test_voxceleb_both_meta_tables_are_read(tmp_path):
  make_voxceleb(tmp_path, {"id10002": {"v": 1}, "id00015": {"w": 1}})
  (tmp_path / "vox1_meta.csv").write_text(VOX1_META)
  (tmp_path / "vox2_meta.csv").write_text(VOX2_META)
  corpus = readers.read_corpus(tmp_path)
  assert {u.speaker: u.gender for u in corpus.utterances} == {"id10002": "f", "id00015": "f"}


def test_voxceleb_without_meta_keeps_speakers_with_one_notice_each(tmp_path):
  make_voxceleb(tmp_path, {"id1": {"a": 2, "b": 1}, "id2": {"a": 1}})
  corpus = readers.read_corpus(tmp_path)
  assert len(corpus.utterances) == 4
  assert all(u.gender == readers.UNKNOWN_GENDER for u in corpus.utterances)
  assert [n.kind for n in corpus.notices] == [readers.NO_GENDER_TABLE] * 2
  assert all("vox1_meta.csv" in n.message and "absent" in n.message for n in corpus.notices)


def test_read_voxceleb_meta_header_variants(tmp_path):
  path = tmp_path / "vox_meta.csv"
  # A byte-order mark, odd case and spacing, ids last, a blank line, a short row.
  path.write_text("\ufeff Gender , VGGFace2 ID, voxceleb2 id \n F ,n1, id1 \n\n"
                  "male,n2,id2\nm,n3\n", encoding="utf-8")
  assert readers.read_voxceleb_meta(path) == {"id1": "f", "id2": "m"}
  path.write_text("VoxCeleb1 ID\tVGGFace1 ID\tNationality\nid1\tn1\tUSA\n")
  with pytest.raises(readers.CorpusError, match=f"{path}: .*without a 'Gender' column"):
    readers.read_voxceleb_meta(path)
  path.write_text("Name,Gender\nid1,m\n")
  with pytest.raises(readers.CorpusError, match="without a 'VoxCeleb... ID' column"):
    readers.read_voxceleb_meta(path)


def test_voxceleb_nonconforming_files_are_skipped_with_reason(tmp_path):
  good = make_voxceleb(tmp_path, {"id1": {"v1": 2}, "id2": {"v2": 1}})
  bad_name = write_tone(tmp_path / "id1" / "v1" / "take-two.wav")
  too_shallow = write_tone(tmp_path / "id1" / "00009.wav")
  corpus = readers.read_corpus(tmp_path)
  assert sorted(u.path for u in corpus.utterances) == sorted(map(str, good))
  skips = {s.path: (s.kind, s.reason) for s in corpus.skips}
  assert skips[str(bad_name)][0] == "bad_name" and "digits" in skips[str(bad_name)][1]
  assert skips[str(too_shallow)][0] == "misplaced"
  assert "<speaker>/<video>/" in skips[str(too_shallow)][1]
  assert len(skips) == 2


def test_voxceleb_m4a_without_decoder_is_a_counted_skip(tmp_path, monkeypatch):
  monkeypatch.setattr(audio, "aac_backends", lambda: ())
  wavs = make_voxceleb(tmp_path, {"id1": {"v": 2}})
  m4as = make_voxceleb(tmp_path, {"id2": {"v": 2}}, ext=".m4a")
  corpus = readers.read_corpus(tmp_path)
  assert sorted(u.path for u in corpus.utterances) == sorted(map(str, wavs))
  assert sorted(s.path for s in corpus.skips) == sorted(map(str, m4as))
  for skip in corpus.skips:
    assert skip.kind == "no_decoder"
    assert skip.reason == "cannot decode .m4a: no AAC decoder installed (install ffmpeg)"


def test_voxceleb_m4a_with_decoder_and_wav_of_the_same_utterance(tmp_path, monkeypatch):
  import audioread.rawread
  wav = write_tone(tmp_path / "id1" / "v" / "00001.wav")
  m4a = write_tone(tmp_path / "id1" / "v" / "00001.m4a")
  only_m4a = write_tone(tmp_path / "id1" / "v" / "00002.m4a")
  monkeypatch.setattr(audio, "aac_backends", lambda: ())
  corpus = readers.read_corpus(tmp_path)  # The wav is read, not lost to the m4a.
  assert [u.path for u in corpus.utterances] == [str(wav)]
  monkeypatch.setattr(audio, "aac_backends", lambda: (audioread.rawread.RawAudioFile,))
  corpus = readers.read_corpus(tmp_path)  # The lossless copy wins; the other is a duplicate.
  assert [u.path for u in corpus.utterances] == [str(wav), str(only_m4a)]
  [skip] = corpus.skips
  assert (skip.path, skip.kind) == (str(m4a), "duplicate_id")
  assert str(wav) in skip.reason


def test_kaldi_m4a_without_decoder_is_a_skip_naming_the_line(tmp_path, monkeypatch):
  monkeypatch.setattr(audio, "aac_backends", lambda: ())
  write_tone(tmp_path / "a.flac")
  write_tone(tmp_path / "b.m4a")
  make_kaldi(tmp_path, ["u1 a.flac", "u2 b.m4a"], {"u1": "A", "u2": "A"}, {"A": "m"})
  corpus = readers.read_corpus(tmp_path)
  assert [u.id for u in corpus.utterances] == ["u1"]
  assert [(s.path, s.kind) for s in corpus.skips] == [
      (f"{tmp_path / 'wav.scp'}:2 (u2)", "no_decoder")]


# --- .m4a decoding (hive.data.audio) ------------------------------------------


def write_pcm16(path, seconds=0.25, sample_rate=16000):
  """A stereo 16-bit WAV (whatever `path` ends with): what audioread's readers return."""
  t = np.arange(int(sample_rate * seconds)) / sample_rate
  wave = np.stack([0.3 * np.sin(2 * np.pi * 300 * t), 0.2 * np.sin(2 * np.pi * 500 * t)], 1)
  path.parent.mkdir(parents=True, exist_ok=True)
  sf.write(path, wave, sample_rate, format="WAV", subtype="PCM_16")
  return path


def test_m4a_decodes_through_audioread_like_soundfile(tmp_path, monkeypatch):
  # audioread's standard-library WAV reader stands in for FFmpeg: same interface, and
  # a WAV's samples are known, so the PCM -> float conversion is checked exactly.
  import audioread.rawread
  monkeypatch.setattr(audio, "aac_backends", lambda: (audioread.rawread.RawAudioFile,))
  wav, m4a = write_pcm16(tmp_path / "a.wav"), write_pcm16(tmp_path / "a.m4a")
  raw, rate = audio.read_audioread(str(m4a), audio.aac_backends())
  expected, expected_rate = sf.read(wav, dtype="float32", always_2d=True)
  assert rate == expected_rate == 16000 and raw.shape == expected.shape == (4000, 2)
  np.testing.assert_array_equal(raw, expected)
  np.testing.assert_array_equal(audio.load_wave(m4a), audio.load_wave(wav))


def test_m4a_refusals(tmp_path, monkeypatch):
  import audioread.rawread
  m4a = write_pcm16(tmp_path / "a.m4a")
  monkeypatch.setattr(audio, "aac_backends", lambda: ())
  with pytest.raises(audio.BadAudio, match="no AAC decoder installed") as info:
    audio.load_wave(m4a)
  assert info.value.kind == "no_decoder" and not audio.can_decode(m4a)
  assert audio.can_decode(tmp_path / "a.flac")
  monkeypatch.setattr(audio, "aac_backends", lambda: (audioread.rawread.RawAudioFile,))
  garbage = tmp_path / "b.m4a"
  garbage.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(200))
  with pytest.raises(audio.BadAudio, match="cannot decode audio") as info:
    audio.load_wave(garbage)
  assert info.value.kind == "undecodable"


def test_aac_backends_leave_out_readers_that_cannot_decode_aac(monkeypatch):
  import audioread
  import audioread.rawread
  ffmpeg = type("FFmpegAudioFile", (), {"__module__": "audioread.ffdec"})
  monkeypatch.setattr(audioread, "available_backends",
                      lambda: [audioread.rawread.RawAudioFile, ffmpeg])
  assert audio.aac_backends.__wrapped__() == (ffmpeg,)
  monkeypatch.setattr(audioread, "available_backends", lambda: [audioread.rawread.RawAudioFile])
  assert audio.aac_backends.__wrapped__() == ()


# --- Layout detection across the three layouts --------------------------------


def test_detect_each_layout(tmp_path):
  make_kaldi(tmp_path / "kaldi", ["u1 a.flac"], {"u1": "A"})
  write_tone(tmp_path / "kaldi" / "id1" / "v" / "00001.wav")  # wav.scp decides.
  make_librispeech(tmp_path / "libri", {"11": {"100": 1}})
  make_voxceleb(tmp_path / "vox", {"id1": {"v": 1}})
  assert readers.detect_layout(tmp_path / "kaldi") == "kaldi"
  assert readers.detect_layout(tmp_path / "libri") == "librispeech"
  assert readers.detect_layout(tmp_path / "vox") == "voxceleb"


@pytest.mark.parametrize("majority", ["librispeech", "voxceleb"])
def test_mixed_tree_reads_the_majority_and_skips_every_other_file(tmp_path, majority):
  libri = make_librispeech(tmp_path, {"11": {"100": 3 if majority == "librispeech" else 1}})
  vox = make_voxceleb(tmp_path, {"id1": {"v": 3 if majority == "voxceleb" else 1}})
  odd = write_tone(tmp_path / "id1" / "v" / "notes.wav")
  corpus = readers.read_corpus(tmp_path)
  kept, minority = (libri, vox) if majority == "librispeech" else (vox, libri)
  assert corpus.layout == majority
  assert sorted(u.path for u in corpus.utterances) == sorted(map(str, kept))
  kinds = {s.path: s.kind for s in corpus.skips}
  assert kinds == {**{str(p): "other_layout" for p in minority}, str(odd): "bad_name"}


def test_mixed_tree_without_majority_is_a_clear_error(tmp_path):
  make_librispeech(tmp_path, {"11": {"100": 2}})
  make_voxceleb(tmp_path, {"id1": {"v": 2}})
  with pytest.raises(readers.CorpusError, match="mixed layouts.*2 files named as LibriSpeech"):
    readers.read_corpus(tmp_path)
