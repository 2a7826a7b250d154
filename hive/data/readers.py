"""Readers: list the utterances of a corpus on disk, with speaker and gender.

Three layouts are understood, detected from the root:
  * the LibriSpeech layout, `<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac|.wav`
    (the root may be the corpus folder or one subset folder), genders from
    `SPEAKERS.TXT` at the root or one level up;
  * the VoxCeleb layout, `<speaker>/<video>/<nnnnn>.wav|.m4a` (any folders above the
    speaker's), genders from `vox1_meta.csv` / `vox2_meta.csv` (tab- or comma-separated)
    at the root or one level up; utterance ids are `<speaker>-<video>-<nnnnn>`;
  * a Kaldi data dir: `wav.scp`, `utt2spk`, optional `spk2gender`.

Detection rule: a root holding `wav.scp` is a Kaldi dir. Otherwise each audio file
below it votes by its name: `<a>-<b>-<c>` for LibriSpeech, digits alone for
VoxCeleb (the two never match the same name). The layout with more votes is read;
every file that does not fit it (a minority of the other layout's names, a name
fitting neither) is a `Skip` with its reason, so a mixed tree is never silently
trimmed. A tie is a `CorpusError`; a tree whose names fit neither is read as
LibriSpeech, so each file is a skip naming the expected name.

Readers only list files; decoding happens later (`hive.data.audio`). Entries
that cannot be used become `Skip`s with a reason; entries that are usable but
incomplete (a speaker with no gender label) are kept and reported as `Notice`s,
so nothing valid is dropped. Each skip and notice has a stable `kind` for
grouping them in summaries ("bad_name", "no_decoder", "no_gender_entry", ...).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import os
import pathlib
import re

from hive.data import audio
from hive.data.audio import AUDIO_EXTENSIONS

UNKNOWN_GENDER = ""
_GENDERS = {"m": "m", "male": "m", "f": "f", "female": "f"}
_LIBRISPEECH_NAME = re.compile(r"^([^-/]+)-([^-/]+)-([^-/]+)$")
_VOXCELEB_NAME = re.compile(r"^[0-9]+$")
_VOXCELEB_META = re.compile(r"^vox[0-9]*_meta\.csv$", re.IGNORECASE)
_VOXCELEB_ID_COLUMN = re.compile(r"^voxceleb\s*[0-9]*\s*id$")
# A .wav/.flac and an .m4a of the same utterance: the lossless one is read.
_EXTENSION_PREFERENCE = {".flac": 0, ".wav": 1, ".m4a": 2}

# Kinds of notices: no gender table at all, a table without the speaker, an
# entry whose gender is neither m nor f.
NO_GENDER_TABLE = "no_gender_table"
NO_GENDER_ENTRY = "no_gender_entry"
GENDER_UNRECOGNISED = "gender_unrecognised"
GENDER_UNKNOWN = "gender_unknown"  # Why is not known (reports written before kinds).
GENDER_KINDS = (NO_GENDER_TABLE, NO_GENDER_ENTRY, GENDER_UNRECOGNISED, GENDER_UNKNOWN)


@dataclasses.dataclass(frozen=True)
class Utterance:
  id: str
  path: str
  speaker: str
  gender: str = UNKNOWN_GENDER  # "m", "f" or "" (unknown).


@dataclasses.dataclass(frozen=True)
class Skip:
  """An unusable entry. `kind` groups skips; left empty, it is derived from `reason`."""
  path: str
  reason: str
  kind: str = ""

  def __post_init__(self):
    if not self.kind:
      object.__setattr__(self, "kind", audio.reason_kind(self.reason))


@dataclasses.dataclass(frozen=True)
class Notice:
  """A usable entry with something missing, e.g. no gender label."""
  path: str
  message: str
  kind: str = ""

  def __post_init__(self):
    if not self.kind:
      object.__setattr__(self, "kind", notice_kind(self.message))


def notice_kind(message: str) -> str:
  """The kind of a notice known only by its message (reports written before kinds)."""
  if "gender unknown" not in message:
    return "other"
  if "(absent)" in message:
    return NO_GENDER_TABLE
  if "has no entry in" in message:
    return NO_GENDER_ENTRY
  return GENDER_UNKNOWN  # Older Kaldi notices did not say why.


@dataclasses.dataclass
class Corpus:
  root: str
  layout: str  # "librispeech", "voxceleb" or "kaldi".
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


def _audio_files(root: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in root.rglob("*")
                if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())


def _name_layout(path: pathlib.Path) -> str | None:
  """The layout whose file names `path`'s name fits: "librispeech", "voxceleb" or None."""
  if _LIBRISPEECH_NAME.match(path.stem):
    return "librispeech"
  if _VOXCELEB_NAME.match(path.stem):
    return "voxceleb"
  return None


def _check_root(root: pathlib.Path) -> None:
  if not root.exists():
    raise CorpusError(f"{root}: no such directory")
  if not root.is_dir():
    raise CorpusError(f"{root}: not a directory")


def _layout_of_files(root: pathlib.Path, files: list[pathlib.Path]) -> str:
  """The layout most of `files` are named for (module docstring); CorpusError on a tie."""
  if not files:
    raise CorpusError(
        f"{root}: no audio found: expected a LibriSpeech-layout tree "
        "(<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac), a VoxCeleb-layout "
        "tree (<speaker>/<video>/<nnnnn>.wav) or a Kaldi data dir with wav.scp")
  votes = collections.Counter(_name_layout(p) for p in files)
  libri, vox = votes["librispeech"], votes["voxceleb"]
  if libri and libri == vox:
    examples = {layout: next(str(p) for p in files if _name_layout(p) == layout)
                for layout in ("librispeech", "voxceleb")}
    raise CorpusError(
        f"{root}: mixed layouts, cannot tell which to read: {libri} files named as "
        f"LibriSpeech names them (e.g. {examples['librispeech']}) and {vox} as VoxCeleb "
        f"does (e.g. {examples['voxceleb']}); point at one corpus")
  return "voxceleb" if vox > libri else "librispeech"


def detect_layout(root: str | os.PathLike) -> str:
  """The root's layout, "kaldi", "librispeech" or "voxceleb" (rule: module docstring)."""
  root = pathlib.Path(root)
  _check_root(root)
  if (root / "wav.scp").is_file():
    return "kaldi"
  return _layout_of_files(root, _audio_files(root))


def read_corpus(root: str | os.PathLike) -> Corpus:
  """Lists a corpus of any layout; raises CorpusError if nothing usable is found."""
  path = pathlib.Path(root)
  _check_root(path)
  if (path / "wav.scp").is_file():
    corpus = read_kaldi(path)
  else:
    files = _audio_files(path)  # Listed once: a VoxCeleb2 tree has a million files.
    layout = _layout_of_files(path, files)
    reader = read_voxceleb if layout == "voxceleb" else read_librispeech
    corpus = reader(path, files=files)
  if not corpus.utterances:
    reasons = "; ".join(f"{s.path}: {s.reason}" for s in corpus.skips[:5])
    raise CorpusError(f"{root}: no usable utterances ({len(corpus.skips)} skipped"
                      + (f": {reasons}" if reasons else "") + ")")
  return corpus


def _no_decoder_skip(path: str | os.PathLike) -> Skip | None:
  """A skip for a file this machine cannot decode (.m4a without an AAC decoder), listed
  now so the listing (and the dataset's fingerprint) changes once a decoder is installed."""
  return None if audio.can_decode(path) else Skip(str(path), audio.NO_AAC_DECODER, "no_decoder")


class _GenderNotices:
  """Genders from a speaker table, with one notice per speaker the table leaves unknown."""

  def __init__(self, genders: dict[str, str], table: str | None, absent: str):
    self.genders, self.table, self.absent = genders, table, absent
    self.noticed: set[str] = set()
    self.notices: list[Notice] = []

  def gender(self, speaker: str, path: str) -> str:
    gender = self.genders.get(speaker, UNKNOWN_GENDER)
    if not gender and speaker not in self.noticed:
      self.noticed.add(speaker)
      if self.table is None:
        self.notices.append(Notice(path, f"speaker {speaker} has no entry in {self.absent} "
                                   "(absent): gender unknown", NO_GENDER_TABLE))
      elif speaker not in self.genders:
        self.notices.append(Notice(path, f"speaker {speaker} has no entry in {self.table}: "
                                   "gender unknown", NO_GENDER_ENTRY))
      else:
        self.notices.append(Notice(path, f"speaker {speaker}: gender in {self.table} is "
                                   "neither m nor f: gender unknown", GENDER_UNRECOGNISED))
    return gender


# --- LibriSpeech layout -------------------------------------------------------


def read_speakers_txt(path: str | os.PathLike) -> dict[str, str]:
  """Parses LibriSpeech's SPEAKERS.TXT into {speaker id: "m"/"f"/"" (unrecognised)}."""
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


def read_librispeech(root: str | os.PathLike, files: list[pathlib.Path] | None = None) -> Corpus:
  """`files`: the audio files below `root`, sorted, where the caller has listed them."""
  root = pathlib.Path(root)
  speakers_txt = find_speakers_txt(root)
  labels = _GenderNotices(read_speakers_txt(speakers_txt) if speakers_txt else {},
                          str(speakers_txt) if speakers_txt else None,
                          f"{root}/SPEAKERS.TXT")
  utterances, skips = [], []
  seen_ids: dict[str, str] = {}
  for path in _audio_files(root) if files is None else files:
    match = _LIBRISPEECH_NAME.match(path.stem)
    if not match:
      if _VOXCELEB_NAME.match(path.stem):
        skips.append(Skip(str(path), "named as VoxCeleb names files (<nnnnn>) in a tree read "
                          "as the LibriSpeech layout, which most of its files fit; "
                          "prepare that corpus on its own", "other_layout"))
      else:
        skips.append(Skip(str(path), "name is not <speaker>-<chapter>-<utterance>", "bad_name"))
      continue
    speaker, chapter, _ = match.groups()
    if path.parent.name != chapter or path.parent.parent.name != speaker:
      skips.append(Skip(str(path), f"not under {speaker}/{chapter}/ as the name says",
                        "misplaced"))
      continue
    if path.stem in seen_ids:
      skips.append(Skip(str(path), f"duplicate utterance id (also {seen_ids[path.stem]})",
                        "duplicate_id"))
      continue
    if skip := _no_decoder_skip(path):
      skips.append(skip)
      continue
    seen_ids[path.stem] = str(path)
    gender = labels.gender(speaker, str(path.parent.parent))
    utterances.append(Utterance(path.stem, str(path), speaker, gender))
  return Corpus(str(root), "librispeech", utterances, skips, labels.notices)


# --- VoxCeleb layout ----------------------------------------------------------


def read_voxceleb_meta(path: str | os.PathLike) -> dict[str, str]:
  """Parses a `vox1_meta.csv` / `vox2_meta.csv`-style table into {speaker id: "m"/"f"/""}.

  VoxCeleb1's is tab-separated (`VoxCeleb1 ID<TAB>VGGFace1 ID<TAB>Gender<TAB>...`),
  VoxCeleb2's comma-separated with stray spaces (`VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set `):
  the separator is the header's, cells are stripped, columns matched by name
  (case-insensitive), and ids are read from every "VoxCeleb... ID" column.
  """
  with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
    lines = [line for line in f if line.strip()]
  if not lines:
    raise CorpusError(f"{path}: empty speaker table")
  rows = csv.reader(lines, delimiter="\t" if "\t" in lines[0] else ",")
  header = [cell.strip().lower() for cell in next(rows)]
  id_columns = [i for i, name in enumerate(header) if _VOXCELEB_ID_COLUMN.match(name)]
  gender_columns = [i for i, name in enumerate(header) if name in ("gender", "sex")]
  if not id_columns or not gender_columns:
    missing = "a 'VoxCeleb... ID' column" if not id_columns else "a 'Gender' column"
    raise CorpusError(f"{path}: speaker table without {missing} (header: {lines[0].strip()!r})")
  genders = {}
  for row in rows:
    row = [cell.strip() for cell in row]
    gender = parse_gender(row[gender_columns[0]]) if len(row) > gender_columns[0] else ""
    for column in id_columns:
      if len(row) > column and row[column]:
        genders.setdefault(row[column], gender)
  return genders


def find_voxceleb_meta(root: pathlib.Path) -> list[pathlib.Path]:
  """The `vox*_meta.csv` tables at the root or, where it has none, one level up."""
  for folder in (root, root.parent):
    found = sorted(p for p in folder.iterdir() if _VOXCELEB_META.match(p.name) and p.is_file())
    if found:
      return found
  return []


def voxceleb_utterance_id(speaker: str, video: str, number: str) -> str:
  """`<speaker>-<video>-<nnnnn>`: unique across speakers and videos, no '/' (file names)."""
  return f"{speaker}-{video}-{number}"


def read_voxceleb(root: str | os.PathLike, files: list[pathlib.Path] | None = None) -> Corpus:
  """`files`: the audio files below `root`, sorted, where the caller has listed them."""
  root = pathlib.Path(root)
  metas = find_voxceleb_meta(root)
  genders: dict[str, str] = {}
  for meta in metas:  # VoxCeleb1 and 2 ids are disjoint; the first table wins a clash.
    for speaker, gender in read_voxceleb_meta(meta).items():
      genders.setdefault(speaker, gender)
  labels = _GenderNotices(genders, ", ".join(map(str, metas)) if metas else None,
                          f"{root}/vox1_meta.csv or vox2_meta.csv")
  utterances, skips = [], []
  seen_ids: dict[str, str] = {}
  files = _audio_files(root) if files is None else files
  for path in sorted(files, key=lambda p: (p.parent, p.stem,
                                           _EXTENSION_PREFERENCE.get(p.suffix.lower(), 9))):
    if not _VOXCELEB_NAME.match(path.stem):
      if _LIBRISPEECH_NAME.match(path.stem):
        skips.append(Skip(str(path), "named as LibriSpeech names files (<speaker>-<chapter>-"
                          "<utterance>) in a tree read as the VoxCeleb layout, which most of "
                          "its files fit; prepare that corpus on its own", "other_layout"))
      else:
        skips.append(Skip(str(path), "name is not <nnnnn> (digits) as VoxCeleb names files",
                          "bad_name"))
      continue
    if len(path.relative_to(root).parts) < 3:
      skips.append(Skip(str(path), "not under <speaker>/<video>/ below the root", "misplaced"))
      continue
    if skip := _no_decoder_skip(path):
      skips.append(skip)
      continue
    speaker, video = path.parent.parent.name, path.parent.name
    uid = voxceleb_utterance_id(speaker, video, path.stem)
    if uid in seen_ids:
      skips.append(Skip(str(path), f"duplicate utterance id {uid} (also {seen_ids[uid]})",
                        "duplicate_id"))
      continue
    seen_ids[uid] = str(path)
    gender = labels.gender(speaker, str(path.parent.parent))
    utterances.append(Utterance(uid, str(path), speaker, gender))
  return Corpus(str(root), "voxceleb", utterances, skips, labels.notices)


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
  spk2gender = root / "spk2gender"
  # Notices' path is spk2gender itself, so their messages name it only by name.
  labels = _GenderNotices(
      {k: parse_gender(v) for _, k, v in _read_table(spk2gender)}
      if spk2gender.is_file() else {},
      spk2gender.name if spk2gender.is_file() else None, spk2gender.name)
  utterances, skips = [], []
  seen: set[str] = set()
  scp = root / "wav.scp"
  for number, utt, target in _read_table(scp):
    where = f"{scp}:{number} ({utt})"
    if not target:
      skips.append(Skip(where, "no path after the utterance id", "no_path"))
      continue
    if target.endswith("|"):
      skips.append(Skip(where, "piped commands in wav.scp are not supported", "piped_command"))
      continue
    if utt in seen:
      skips.append(Skip(where, "duplicate utterance id", "duplicate_id"))
      continue
    seen.add(utt)
    path = pathlib.Path(target)
    path = path if path.is_absolute() else root / path
    if not path.is_file():
      skips.append(Skip(where, f"points to {path}, which does not exist", "missing_file"))
      continue
    speaker = utt2spk.get(utt)
    if not speaker:
      skips.append(Skip(where, "no utt2spk entry", "no_utt2spk"))
      continue
    if skip := _no_decoder_skip(path):
      skips.append(dataclasses.replace(skip, path=where))
      continue
    gender = labels.gender(speaker, str(spk2gender))
    utterances.append(Utterance(utt, str(path), speaker, gender))
  return Corpus(str(root), "kaldi", utterances, skips, labels.notices)
