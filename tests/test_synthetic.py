"""Tests for the built-in synthetic voice corpus (hive/data/synthetic.py).

Layout and SPEAKERS.TXT, determinism, the on-disk cache, audio format, and
that the corpus is learnable: crude log-mel statistics already tell speakers
(and pitch tells genders) apart, so a real model has something to learn.
"""

import json
import pathlib
import re

import librosa
import numpy as np
import pytest
import soundfile as sf

from hive.data import synthetic

SUBSET = "train-synthetic"
NUM_SPEAKERS = 10
UTTERANCES = 8  # Two chapters of four per speaker.
SECONDS = (2.0, 4.0)
SMALL = dict(num_speakers=2, utterances_per_speaker=2, seconds=(1.0, 1.5))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> pathlib.Path:
  root = tmp_path_factory.mktemp("synthetic") / "corpus"
  return synthetic.generate_corpus(root, num_speakers=NUM_SPEAKERS,
                                   utterances_per_speaker=UTTERANCES, seconds=SECONDS, seed=0)


def _flacs(root: pathlib.Path) -> list[pathlib.Path]:
  return sorted(root.glob(f"{SUBSET}/*/*/*.flac"))


def _all_files(root: pathlib.Path) -> dict[str, pathlib.Path]:
  return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def _parse_speakers_txt(path: pathlib.Path) -> dict[str, tuple[str, str, float]]:
  """{id: (sex, subset, minutes)} from LibriSpeech's SPEAKERS.TXT format."""
  rows = {}
  for line in path.read_text().splitlines():
    if not line.strip() or line.startswith(";"):
      continue
    fields = [f.strip() for f in line.split("|")]
    assert len(fields) == 5, line
    rows[fields[0]] = (fields[1], fields[2], float(fields[3]))
  return rows


# --- Layout -------------------------------------------------------------------


def test_librispeech_layout_and_speakers_txt(corpus):
  speakers = _parse_speakers_txt(corpus / "SPEAKERS.TXT")
  expected_ids = [str(1001 + i) for i in range(NUM_SPEAKERS)]
  assert sorted(speakers) == expected_ids
  assert [speakers[s][0] for s in expected_ids] == ["M", "F"] * (NUM_SPEAKERS // 2)
  assert all(subset == SUBSET and minutes > 0 for _, subset, minutes in speakers.values())

  flacs = _flacs(corpus)
  assert len(flacs) == NUM_SPEAKERS * UTTERANCES
  chapters_seen = set()
  for path in flacs:
    speaker, chapter, utt = path.stem.split("-")
    assert path.parent.name == chapter and path.parent.parent.name == speaker
    assert path.parent.parent.parent.name == SUBSET
    assert speaker in speakers and re.fullmatch(r"\d{4}", utt)
    chapters_seen.add((speaker, chapter))
  assert len(chapters_seen) == NUM_SPEAKERS * 2  # Chapters are unique across speakers.
  assert len({c for _, c in chapters_seen}) == NUM_SPEAKERS * 2

  # Every chapter has a transcript naming exactly its utterances.
  for speaker, chapter in chapters_seen:
    chapter_dir = corpus / SUBSET / speaker / chapter
    lines = (chapter_dir / f"{speaker}-{chapter}.trans.txt").read_text().splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(
        p.stem for p in chapter_dir.glob("*.flac"))
    assert all(len(line.split()) >= 2 for line in lines)

  marker = json.loads((corpus / synthetic.MARKER_NAME).read_text())
  assert marker["num_speakers"] == NUM_SPEAKERS and marker["seed"] == 0
  assert marker["seconds"] == list(SECONDS)


def test_project_reader_lists_speakers_and_genders(corpus):
  readers = pytest.importorskip("hive.data.readers")
  listing = readers.read_corpus(corpus)
  assert listing.layout == "librispeech" and not listing.skips and not listing.notices
  assert len(listing.utterances) == NUM_SPEAKERS * UTTERANCES
  genders = {u.speaker: u.gender for u in listing.utterances}
  assert genders == {str(1001 + i): "mf"[i % 2] for i in range(NUM_SPEAKERS)}


def test_audio_is_16k_mono_pcm16_flac_in_range(corpus):
  for path in _flacs(corpus):
    info = sf.info(path)
    assert (info.samplerate, info.channels) == (16000, 1)
    assert (info.format, info.subtype) == ("FLAC", "PCM_16")
    audio, _ = sf.read(path, dtype="float32")
    assert audio.ndim == 1 and np.isfinite(audio).all()
    assert SECONDS[0] - 1e-3 <= audio.size / 16000 <= SECONDS[1] + 1e-3
    peak = np.abs(audio).max()
    assert 0.2 < peak <= 1.0, (path, peak)


def test_synthesize_utterance_shape_range_and_determinism():
  voice = synthetic.sample_voices(2, seed=5)[1]
  a = synthetic.synthesize_utterance(voice, 1.7, np.random.default_rng(3))
  b = synthetic.synthesize_utterance(voice, 1.7, np.random.default_rng(3))
  c = synthetic.synthesize_utterance(voice, 1.7, np.random.default_rng(4))
  assert a.dtype == np.float32 and a.shape == (round(1.7 * 16000),)
  assert np.isfinite(a).all() and 0.2 < np.abs(a).max() <= 1.0
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  # Very short requests still produce a (short) syllable, not silence.
  assert np.abs(synthetic.synthesize_utterance(voice, 0.3, np.random.default_rng(0))).max() > 0.1


# --- Voices -------------------------------------------------------------------


def test_voices_deterministic_balanced_and_plausible():
  voices = synthetic.sample_voices(40, seed=0)
  assert voices == synthetic.sample_voices(40, seed=0)
  assert voices[:7] == synthetic.sample_voices(7, seed=0)  # Speaker i does not depend on the count.
  assert voices != synthetic.sample_voices(40, seed=1)
  assert [v.speaker_id for v in voices] == [str(1001 + i) for i in range(40)]
  genders = [v.gender for v in voices]
  assert genders.count("m") == genders.count("f") == 20
  assert [v.gender for v in synthetic.sample_voices(7, seed=0)].count("m") == 4
  for v in voices:
    if v.gender == "m":
      assert 85 <= v.f0_hz <= 155 and 0.85 <= v.vocal_tract_scale <= 1.0
    else:
      assert 165 <= v.f0_hz <= 255 and 1.05 <= v.vocal_tract_scale <= 1.2
  assert len({round(v.f0_hz, 3) for v in voices}) == 40


# --- Determinism and the cache ------------------------------------------------------


def test_generation_is_byte_identical_for_a_seed(tmp_path):
  a = _all_files(synthetic.generate_corpus(tmp_path / "a", seed=7, **SMALL))
  b = _all_files(synthetic.generate_corpus(tmp_path / "b", seed=7, **SMALL))
  other = _all_files(synthetic.generate_corpus(tmp_path / "c", seed=8, **SMALL))
  assert sorted(a) == sorted(b) == sorted(other)
  assert all(a[name].read_bytes() == b[name].read_bytes() for name in a)
  flacs = [name for name in a if name.endswith(".flac")]
  assert len(flacs) == 4
  for name in flacs:
    np.testing.assert_array_equal(sf.read(a[name])[0], sf.read(b[name])[0])
    assert not np.array_equal(sf.read(a[name])[0][:16000], sf.read(other[name])[0][:16000])


def test_second_call_is_a_cache_hit_and_new_parameters_regenerate(tmp_path):
  root = tmp_path / "corpus"
  assert synthetic.generate_corpus(root, seed=0, **SMALL) == root
  before = {name: p.stat().st_mtime_ns for name, p in _all_files(root).items()}
  assert synthetic.generate_corpus(str(root), seed=0, **SMALL) == root
  assert {name: p.stat().st_mtime_ns for name, p in _all_files(root).items()} == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]  # No work dirs left behind.

  first_audio = sf.read(_flacs(root)[0])[0]
  synthetic.generate_corpus(root, seed=1, **SMALL)
  assert json.loads((root / synthetic.MARKER_NAME).read_text())["seed"] == 1
  assert not np.array_equal(sf.read(_flacs(root)[0])[0][:16000], first_audio[:16000])
  assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]


def test_interrupted_generation_leaves_no_corpus(tmp_path, monkeypatch):
  written = []

  def failing_write(path, audio, sample_rate):
    if len(written) == 2:
      raise KeyboardInterrupt  # As if the user pressed ^C mid-way.
    written.append(path)

  monkeypatch.setattr(synthetic, "_write_flac", failing_write)
  with pytest.raises(KeyboardInterrupt):
    synthetic.generate_corpus(tmp_path / "corpus", **SMALL)
  assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_a_foreign_directory(tmp_path):
  root = tmp_path / "mine"
  root.mkdir()
  (root / "notes.txt").write_text("keep me")
  with pytest.raises(FileExistsError):
    synthetic.generate_corpus(root, **SMALL)
  assert (root / "notes.txt").read_text() == "keep me"
  # An empty directory, on the other hand, is simply filled.
  (tmp_path / "empty").mkdir()
  assert len(_flacs(synthetic.generate_corpus(tmp_path / "empty", **SMALL))) == 4


def test_default_corpus_location(tmp_path, monkeypatch):
  monkeypatch.setenv("HIVE_CACHE", str(tmp_path / "cache"))
  assert synthetic.default_corpus_dir() == tmp_path / "cache" / "synthetic-v1"
  root = synthetic.ensure_default_corpus(**SMALL)
  assert root == tmp_path / "cache" / "synthetic-v1" and (root / "SPEAKERS.TXT").is_file()
  monkeypatch.delenv("HIVE_CACHE")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert synthetic.default_corpus_dir() == tmp_path / "home" / ".cache" / "hive" / "synthetic-v1"


# --- Learnability -----------------------------------------------------------------


@pytest.fixture(scope="module")
def crude_embeddings(corpus):
  """Per utterance: [mean, std] over time of a 40-band log-mel, speaker, chapter, median f0."""
  rows = []
  for path in _flacs(corpus):
    audio, sr = sf.read(path, dtype="float32")
    mel = librosa.feature.melspectrogram(y=audio, sr=sr, n_fft=400, hop_length=160, n_mels=40)
    log_mel = np.log(mel + 1e-6)
    f0 = librosa.yin(audio, fmin=60, fmax=400, sr=sr, frame_length=1024, hop_length=256)
    rms = librosa.feature.rms(y=audio, frame_length=1024, hop_length=256)[0]
    zcr = librosa.feature.zero_crossing_rate(audio, frame_length=1024, hop_length=256)[0]
    voiced = (rms > 0.1 * rms.max()) & (zcr < 0.1)  # Loud and not a fricative.
    speaker, chapter, _ = path.stem.split("-")
    rows.append((np.concatenate([log_mel.mean(1), log_mel.std(1)]), speaker, chapter,
                 float(np.median(f0[voiced]))))
  embeddings, speakers, chapters, f0s = zip(*rows)
  return np.stack(embeddings), np.array(speakers), np.array(chapters), np.array(f0s)


def test_speakers_separable_by_nearest_centroid(crude_embeddings):
  x, speakers, chapters, _ = crude_embeddings
  ids = sorted(set(speakers))
  # Centroids from each speaker's first chapter, tested on the other chapter.
  first = np.array([c == min(chapters[speakers == s]) for s, c in zip(speakers, chapters)])
  centroids = np.stack([x[first & (speakers == s)].mean(0) for s in ids])
  distances = ((x[~first, None] - centroids[None]) ** 2).sum(-1)
  accuracy = np.mean(np.array(ids)[distances.argmin(1)] == speakers[~first])
  assert accuracy > 0.6, f"nearest-centroid accuracy {accuracy:.3f} (chance {1 / len(ids):.2f})"


def test_same_speaker_pairs_are_more_similar(crude_embeddings):
  x, speakers, _, _ = crude_embeddings
  centred = x - x.mean(0)
  unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
  cosine = unit @ unit.T
  same = speakers[:, None] == speakers[None, :]
  off_diagonal = ~np.eye(len(speakers), dtype=bool)
  same_mean, other_mean = cosine[same & off_diagonal].mean(), cosine[~same].mean()
  assert same_mean > other_mean + 0.3, (same_mean, other_mean)
  # Not only on average: every speaker is closer to itself than to the others.
  for s in set(speakers):
    own = speakers == s
    within = cosine[np.ix_(own, own)][off_diagonal[np.ix_(own, own)]].mean()
    assert within > cosine[own][:, ~own].mean(), s


def test_gender_separable_by_pitch(crude_embeddings):
  _, speakers, _, f0s = crude_embeddings
  is_female = np.array([int(s) % 2 == 0 for s in speakers])  # 1001 m, 1002 f, ...
  accuracy = np.mean((f0s > 160.0) == is_female)
  assert accuracy > 0.9, f"pitch-threshold gender accuracy {accuracy:.3f}"
