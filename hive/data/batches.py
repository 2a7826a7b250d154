"""N speakers x M utterances batches of random log-mel crops, as a tf.data pipeline.

Batch `k` is a pure function of (seed, k): the speakers, utterances and crop
offsets come from stateless random ops seeded with the step. So the pipeline is
deterministic, resumes exactly from any step with no saved iterator state, and
hosts agree on the global batch without talking: each builds its own slice of
the same global draw of speakers.

Rules worth knowing:
  * Speakers with at least M utterances contribute M distinct utterances.
    Speakers with fewer reuse them in turn, each reuse taking a different,
    stratified window of the audio (M different windows, as sliding windows do).
  * Utterances shorter than the crop are repeated end-to-end (wrap-around) to
    fill it, never dropped: the speaker is still there, and no padding value has
    to be invented.
  * Rows are speaker-major: `features.reshape(N, M, T, F)` recovers the grid.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from hive.data.examples import Examples


@dataclasses.dataclass
class FramePool:
  """All frames of a set of utterances in one array, indexed per utterance."""
  frames: np.ndarray  # float32 [total_frames, n_mels]
  starts: np.ndarray  # int64 [U]: first frame of each utterance.
  lengths: np.ndarray  # int32 [U]
  utterance_speaker: np.ndarray  # int32 [U]: index into `speakers`.
  speakers: list[str]  # Sorted; the label space of the speaker-ID head.
  speaker_gender: np.ndarray  # int32 [S]: 0 m, 1 f, -1 unknown.
  utterance_ids: list[str]

  @classmethod
  def from_examples(cls, examples: Examples) -> "FramePool":
    if not examples.utterance_ids:
      raise ValueError("no utterances to build batches from")
    speakers = sorted(set(examples.speakers))
    index = {s: i for i, s in enumerate(speakers)}
    gender = np.full(len(speakers), -1, np.int32)
    for s, g in zip(examples.speakers, examples.genders):
      gender[index[s]] = g
    lengths = np.asarray(examples.num_frames, np.int32)
    starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)[:-1]])
    return cls(np.concatenate(examples.features).astype(np.float32), starts, lengths,
               np.array([index[s] for s in examples.speakers], np.int32), speakers, gender,
               list(examples.utterance_ids))

  @property
  def num_speakers(self) -> int:
    return len(self.speakers)

  def speaker_utterances(self) -> np.ndarray:
    """int32 [S, max utterances per speaker], padded with -1."""
    per_speaker = [np.flatnonzero(self.utterance_speaker == s) for s in range(self.num_speakers)]
    table = np.full((self.num_speakers, max(map(len, per_speaker))), -1, np.int32)
    for s, utts in enumerate(per_speaker):
      table[s, :len(utts)] = utts
    return table


def _crop_indices(starts, lengths, offsets, crop_frames):
  """[B, crop] frame indices; windows past an utterance's end wrap around to its start."""
  steps = tf.range(crop_frames, dtype=tf.int64)[None, :]
  within = (offsets[:, None] + steps) % lengths[:, None]
  return starts[:, None] + within


def make_batch_fn(pool: FramePool, n_speakers: int, n_utterances: int, crop_frames: int,
                  seed: int, process_index: int = 0, process_count: int = 1):
  """Returns `batch(step)` building this host's slice of global batch `step`."""
  if n_speakers > pool.num_speakers:
    raise ValueError(f"batches need {n_speakers} speakers, the training split has "
                     f"{pool.num_speakers}")
  if n_speakers % process_count:
    raise ValueError(f"n_speakers={n_speakers} is not divisible by {process_count} processes")
  local = n_speakers // process_count
  first = process_index * local
  frames = tf.constant(pool.frames)
  starts = tf.constant(pool.starts, tf.int64)
  lengths = tf.constant(pool.lengths.astype(np.int64))
  table = tf.constant(pool.speaker_utterances())
  counts = tf.reduce_sum(tf.cast(table >= 0, tf.int32), axis=1)
  genders = tf.constant(pool.speaker_gender)
  m = n_utterances

  def batch(step):
    step = tf.cast(step, tf.int64)
    key = tf.stack([tf.constant(seed, tf.int64), step])
    keys = tf.random.experimental.stateless_split(key, 3)
    # Global draw of speakers, identical on every host; each host keeps its slice.
    order = tf.argsort(tf.random.stateless_uniform([pool.num_speakers], keys[0]))
    speaker = order[first:first + local]
    # Utterances: a random permutation per speaker, padding sorted last; slot j
    # takes the (j mod count)-th, so short speakers reuse theirs in turn.
    count = tf.gather(counts, speaker)
    rows = tf.gather(table, speaker)
    # Draws are shaped for the global batch and sliced, so each host's rows are
    # the ones the single-host batch would have.
    shuffle = tf.random.stateless_uniform([n_speakers, table.shape[1]], keys[1])
    shuffle = shuffle[first:first + local]
    shuffle = tf.where(rows >= 0, shuffle, 2.0)
    ranked = tf.gather(rows, tf.argsort(shuffle, axis=1), batch_dims=1)
    slot = tf.range(m)[None, :]
    utt = tf.gather(ranked, slot % count[:, None], batch_dims=1)  # [local, M]
    reuse = tf.cast(slot // count[:, None], tf.float32)  # Which reuse of that utterance.
    reuses = tf.cast((m + count[:, None] - 1) // count[:, None], tf.float32)
    utt = tf.reshape(utt, [-1])
    length = tf.gather(lengths, utt)
    # Stratified offsets: reuse r of an utterance starts in the r-th of `reuses`
    # equal stretches of its valid range, so reused windows differ.
    jitter = tf.random.stateless_uniform([n_speakers, m], keys[2])[first:first + local]
    fraction = tf.reshape((reuse + jitter) / reuses, [-1])
    span = tf.maximum(length - crop_frames + 1, 1)
    offset = tf.minimum(tf.cast(fraction * tf.cast(span, tf.float32), tf.int64), span - 1)
    index = _crop_indices(tf.gather(starts, utt), length, offset, crop_frames)
    speaker_rows = tf.repeat(speaker, m)
    return {
        "features": tf.gather(frames, index),
        "speaker": speaker_rows,
        "gender": tf.gather(genders, speaker_rows),
    }

  return batch


def make_dataset(pool: FramePool, n_speakers: int, n_utterances: int, crop_frames: int,
                 seed: int, start_step: int = 0, process_index: int = 0,
                 process_count: int = 1) -> tf.data.Dataset:
  """Endless dataset of this host's batches for steps start_step, start_step + 1, ..."""
  fn = make_batch_fn(pool, n_speakers, n_utterances, crop_frames, seed, process_index,
                     process_count)
  ds = tf.data.Dataset.counter(start_step)
  ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.prefetch(tf.data.AUTOTUNE)
