"""Readers: list the utterances of a corpus on disk, with speaker and gender.

Two layouts are understood, detected from the root:
  * the LibriSpeech layout, `<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac|.wav`
    (the root may be the corpus folder or one subset folder), genders from
    `SPEAKERS.TXT` at the root or one level up;
  * a Kaldi data dir: `wav.scp`, `utt2spk`, optional `spk2gender`.

Readers only list files; decoding happens later (`hive.data.audio`). Entries
that cannot be used become `Skip`s with a reason; entries that are usable but
incomplete (a speaker missing from SPEAKERS.TXT) are kept and reported as
`Notice`s, so nothing valid is dropped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re

from hive.data.audio import AUDIO_EXTENSIONS

UNKNOWN_GENDER = ""
_GENDERS = {"m": "m", "male": "m", "f": "f", "female": "f"}
_LIBRISPEECH_NAME = re.compile(r"^([^-/]+)-([^-/]+)-([^-/]+)$")


@dataclasses.dataclass(frozen=True)
class Utterance:
  id: str
  path: str
  speaker: str
  gender: str = UNKNOWN_GENDER  # "m", "f" or "" (unknown).


@dataclasses.dataclass(frozen=True)
class Skip:
  path: str
  reason: str


@dataclasses.dataclass(frozen=True)
class Notice:
  """A usable entry with something missing, e.g. no gender label."""
  path: str
  message: str


@dataclasses.dataclass
class Corpus:
  root: str
  layout: str  # "librispeech" or "kaldi".
  utterances: list[Utterance]
  skips: list[Skip]
  notices: list[Notice]

  @property
  def speakers(self) -> list[str]:
    return sorted({u.speaker for u in self.utterances})

  def fingerprint(self) -> str:
    """Digest of the listing (ids, paths, sizes, mtimes): changes when the data does.

    Paths enter relative to the resolved root, so the same data reached by a
    relative or an absolute path is the same dataset.
    """
    root = os.path.realpath(self.root)
    h = hashlib.sha256(f"{self.layout}|{root}".encode())
    for u in self.utterances:
      try:
        st = os.stat(u.path)
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
      except OSError:
        stamp = "missing"
      path = os.path.relpath(os.path.realpath(u.path), root)
      h.update(f"{u.id}|{path}|{u.speaker}|{u.gender}|{stamp}\n".encode())
    for s in self.skips:
      h.update(f"skip|{os.path.relpath(os.path.realpath(s.path), root)}|{s.reason}\n".encode())
    return h.hexdigest()[:16]


class CorpusError(ValueError):
  """The whole input is unusable (not a corpus, empty, ...)."""


def parse_gender(value: str) -> str:
  return _GENDERS.get(value.strip().lower(), UNKNOWN_GENDER)


def detect_layout(root: str | os.PathLike) -> str:
  root = pathlib.Path(root)
  if not root.exists():
    raise CorpusError(f"{root}: no such directory")
  if not root.is_dir():
    raise CorpusError(f"{root}: not a directory")
  if (root / "wav.scp").is_file():
    return "kaldi"
  if any(p.suffix.lower() in AUDIO_EXTENSIONS for p in root.rglob("*") if p.is_file()):
    return "librispeech"
  raise CorpusError(
      f"{root}: no audio found: expected a LibriSpeech-layout tree "
      "(<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac) or a "
      "Kaldi data dir with wav.scp")


def read_corpus(root: str | os.PathLike) -> Corpus:
  """Lists a corpus of either layout; raises CorpusError if nothing usable is found."""
  layout = detect_layout(root)
  corpus = read_kaldi(root) if layout == "kaldi" else read_librispeech(root)
  if not corpus.utterances:
    reasons = "; ".join(f"{s.path}: {s.reason}" for s in corpus.skips[:5])
    raise CorpusError(f"{root}: no usable utterances ({len(corpus.skips)} skipped"
                      + (f": {reasons}" if reasons else "") + ")")
  return corpus


# --- LibriSpeech layout -------------------------------------------------------


def read_speakers_txt(path: str | os.PathLike) -> dict[str, str]:
  """Parses LibriSpeech's SPEAKERS.TXT into {speaker id: "m"/"f"}."""
  genders = {}
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      if not line.strip() or line.lstrip().startswith(";"):
        continue
      fields = [x.strip() for x in line.split("|", 4)]  # Names may contain '|'.
      if len(fields) >= 2 and fields[0]:
        genders[fields[0]] = parse_gender(fields[1])
  return genders


def find_speakers_txt(root: pathlib.Path) -> pathlib.Path | None:
  for candidate in (root / "SPEAKERS.TXT", root.parent / "SPEAKERS.TXT"):
    if candidate.is_file():
      return candidate
  return None


def read_librispeech(root: str | os.PathLike) -> Corpus:
  root = pathlib.Path(root)
  speakers_txt = find_speakers_txt(root)
  genders = read_speakers_txt(speakers_txt) if speakers_txt else {}
  utterances, skips, notices = [], [], []
  seen_ids: dict[str, str] = {}
  unlabelled: set[str] = set()
  for path in sorted(p for p in root.rglob("*") if p.is_file()):
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
      continue  # Transcripts, licences, ... are not utterances.
    match = _LIBRISPEECH_NAME.match(path.stem)
    if not match:
      skips.append(Skip(str(path), "name is not <speaker>-<chapter>-<utterance>"))
      continue
    speaker, chapter, _ = match.groups()
    if path.parent.name != chapter or path.parent.parent.name != speaker:
      skips.append(Skip(str(path), f"not under {speaker}/{chapter}/ as the name says"))
      continue
    if path.stem in seen_ids:
      skips.append(Skip(str(path), f"duplicate utterance id (also {seen_ids[path.stem]})"))
      continue
    seen_ids[path.stem] = str(path)
    gender = genders.get(speaker, UNKNOWN_GENDER)
    if speaker not in genders and speaker not in unlabelled:
      unlabelled.add(speaker)
      where = speakers_txt or f"{root}/SPEAKERS.TXT (absent)"
      notices.append(Notice(str(path.parent.parent),
                            f"speaker {speaker} has no entry in {where}: gender unknown"))
    utterances.append(Utterance(path.stem, str(path), speaker, gender))
  return Corpus(str(root), "librispeech", utterances, skips, notices)


# --- Kaldi data dir -----------------------------------------------------------


def _read_table(path: pathlib.Path) -> list[tuple[int, str, str]]:
  """(line number, key, rest) for each non-empty line of a Kaldi table."""
  rows = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      parts = line.strip().split(maxsplit=1)
      if parts:
        rows.append((number, parts[0], parts[1].strip() if len(parts) > 1 else ""))
  return rows


def read_kaldi(root: str | os.PathLike) -> Corpus:
  root = pathlib.Path(root)
  for required in ("wav.scp", "utt2spk"):
    if not (root / required).is_file():
      raise CorpusError(f"{root}: Kaldi data dir without {required}")
  if (root / "segments").is_file():
    raise CorpusError(f"{root / 'segments'}: Kaldi segments files are not supported; "
                      "extract the segments to files first")
  utt2spk = {key: rest for _, key, rest in _read_table(root / "utt2spk")}
  spk2gender = {}
  if (root / "spk2gender").is_file():
    spk2gender = {k: parse_gender(v) for _, k, v in _read_table(root / "spk2gender")}
  utterances, skips, notices = [], [], []
  unlabelled: set[str] = set()
  seen: set[str] = set()
  scp = root / "wav.scp"
  for number, utt, target in _read_table(scp):
    where = f"{scp}:{number} ({utt})"
    if not target:
      skips.append(Skip(where, "no path after the utterance id"))
      continue
    if target.endswith("|"):
      skips.append(Skip(where, "piped commands in wav.scp are not supported"))
      continue
    if utt in seen:
      skips.append(Skip(where, "duplicate utterance id"))
      continue
    seen.add(utt)
    path = pathlib.Path(target)
    path = path if path.is_absolute() else root / path
    if not path.is_file():
      skips.append(Skip(where, f"points to {path}, which does not exist"))
      continue
    speaker = utt2spk.get(utt)
    if not speaker:
      skips.append(Skip(where, "no utt2spk entry"))
      continue
    gender = spk2gender.get(speaker, UNKNOWN_GENDER)
    if not gender and speaker not in unlabelled:
      unlabelled.add(speaker)
      notices.append(Notice(str(root / "spk2gender"), f"speaker {speaker}: gender unknown"))
    utterances.append(Utterance(utt, str(path), speaker, gender))
  return Corpus(str(root), "kaldi", utterances, skips, notices)
