"""Utterances in memory: the contract between prepared data and what evaluates or batches it.

`Examples` holds utterance ids, speakers, genders and log-mels [frames, n_mels]; small corpora
(dev sets, evaluation corpora) are read into it whole.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hive.data import readers

GENDER_CODES = {"m": 0, "f": 1, readers.UNKNOWN_GENDER: -1}
GENDER_NAMES = {0: "m", 1: "f", -1: "unknown"}


def consecutive_segments(a: np.ndarray, size: int) -> list[np.ndarray]:
  """`a` cut along axis 0 into consecutive pieces of `size`; a shorter tail joins the
  piece before it (nothing is dropped), and an `a` shorter than `size` stays whole."""
  if size < 1:
    raise ValueError(f"segment length must be at least one frame or sample, got {size}")
  return np.split(a, list(range(size, len(a) - size + 1, size)))


@dataclasses.dataclass
class Examples:
  """A prepared dataset in memory, sorted by utterance id."""
  utterance_ids: list[str]
  speakers: list[str]
  genders: np.ndarray  # int32 [U]
  num_frames: np.ndarray  # int32 [U]
  features: list[np.ndarray]  # [U] x float32 [frames, n_mels]

  @property
  def gender_of_speaker(self) -> dict[str, int]:
    return dict(zip(self.speakers, self.genders))

  @classmethod
  def concatenate(cls, parts: list["Examples"]) -> "Examples":
    return cls([u for p in parts for u in p.utterance_ids], [s for p in parts for s in p.speakers],
               np.concatenate([p.genders for p in parts]).astype(np.int32),
               np.concatenate([p.num_frames for p in parts]).astype(np.int32),
               [f for p in parts for f in p.features])

  def select(self, rows) -> "Examples":
    rows = list(rows)
    return Examples([self.utterance_ids[i] for i in rows], [self.speakers[i] for i in rows],
                    self.genders[rows], self.num_frames[rows], [self.features[i] for i in rows])

  def select_speakers(self, keep) -> "Examples":
    keep = set(keep)
    return self.select(i for i, s in enumerate(self.speakers) if s in keep)

  def first_per_speaker(self, count: int) -> "Examples":
    """At most `count` utterances of each speaker, the first by utterance id (0: all)."""
    if count <= 0:
      return self
    seen: dict[str, int] = {}
    rows = []
    for i in sorted(range(len(self.speakers)), key=lambda i: self.utterance_ids[i]):
      if seen.get(self.speakers[i], 0) < count:
        seen[self.speakers[i]] = seen.get(self.speakers[i], 0) + 1
        rows.append(i)
    return self.select(sorted(rows))

  def with_prefix(self, prefix: str) -> "Examples":
    """Speaker and utterance ids prefixed (e.g. "speechocean762/"), so ids of several
    corpora cannot collide."""
    return Examples([prefix + u for u in self.utterance_ids], [prefix + s for s in self.speakers],
                    self.genders, self.num_frames, self.features)

  def cut_segments(self, frames: int, single_utterance_only: bool = False) -> "Examples":
    """Each utterance as consecutive segments of `frames` frames, ids "<id>#<k>".

    For corpora with one long utterance per speaker, where whole utterances give
    no same-speaker trial. A tail shorter than `frames` joins the segment before
    it (so no audio is dropped); an utterance shorter than `frames` stays whole.
    `single_utterance_only`: only the utterances of speakers who have one are cut;
    the others stay whole.
    """
    counts: dict[str, int] = {}
    for s in self.speakers:
      counts[s] = counts.get(s, 0) + 1
    ids, speakers, genders, lengths, features = [], [], [], [], []
    for uid, speaker, gender, mel in zip(self.utterance_ids, self.speakers, self.genders,
                                         self.features):
      if single_utterance_only and counts[speaker] > 1:
        pieces = [mel]
      else:
        pieces = consecutive_segments(mel, frames)
      for k, piece in enumerate(pieces):
        ids.append(uid if len(pieces) == 1 and single_utterance_only else f"{uid}#{k}")
        speakers.append(speaker)
        genders.append(gender)
        lengths.append(len(piece))
        features.append(piece)
    return Examples(ids, speakers, np.asarray(genders, np.int32), np.asarray(lengths, np.int32),
                    features)
