"""N speakers x M utterances batches of random crops, read by random access from the records.

Batch `k` is a pure function of (seed, k). `plan_batch` draws, with numpy generators seeded
by (seed, k), the speakers, utterances and crop offsets of the whole global batch; each
process then reads only its own slice of it (`read_batch`), so hosts agree on the global
batch without talking, resuming needs no saved iterator state, and the batch does not depend
on how many processes share it. `make_batches` runs this on grain: a `MapDataset` over step
numbers, mapped on worker threads or processes with prefetching, read from the prepared
ArrayRecord datasets (hive/data/builder.py), so memory does not grow with the corpus.

Rules worth knowing:
  * Speakers with at least M utterances contribute M distinct utterances.
    Speakers with fewer reuse them in turn, each reuse taking a different,
    stratified window of the audio (M different windows, as sliding windows do).
  * Utterances shorter than the crop are repeated end-to-end (wrap-around) to
    fill it, never dropped: the speaker is still there, and no padding value has
    to be invented.
  * Rows are speaker-major: `features.reshape(N, M, T, F)` recovers the grid.
  * Speed-perturbed speakers (`data.speed_factors`) are training speakers played faster
    or slower, made on the fly from the original records by warping the log-mel in time and
    frequency (hive/features.py; it approximates resampling the audio, and costs a 40 x 40
    matmul where resampling every crop would cost more than the rest of the batch).
  * With waveform augmentation (`augment.wave`), rows are cropped from the stored 16 kHz
    waveforms, augmented (hive/data/waveform_augment.py; each row with its own generator,
    seeded by (seed, step, global row), so a row is the same however the batch is split),
    then turned into log-mels in one batched FFT. Babble without folders sums crops of other
    training speakers from a bank of BABBLE_BANK crops, drawn anew from the training
    utterances every BABBLE_REFRESH steps as a function of (seed, step).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hive import features as features_lib

_PLAN_TAG = 0x706C616E  # "plan": keeps these draws apart from other users of (seed, step).
_BABBLE_TAG = 0x62616262  # "babb"
BABBLE_BANK = 64  # Crops of training speakers that babble is summed from.
BABBLE_REFRESH = 10  # Steps a bank serves: its reads cost a fraction of one batch's.


@dataclasses.dataclass
class TrainingTable:
  """Every training utterance as a record of a prepared corpus, with its speaker label."""
  source: np.ndarray  # int32 [U]: which prepared corpus.
  record: np.ndarray  # int64 [U]: record index in it.
  num_frames: np.ndarray  # int32 [U]: frames of the (speed-perturbed) utterance.
  label: np.ndarray  # int32 [U]: index into `speakers`.
  factor: np.ndarray  # float32 [U]: speed factor (1: the recording as it is).
  speakers: list[str]  # Sorted label names; the speaker-ID head's classes.
  speaker_gender: np.ndarray  # int32 [S]: 0 m, 1 f, -1 unknown.
  speaker_voice: np.ndarray  # int32 [S]: the real speaker behind each label (speed copies share).
  # float64 [S]: the probability a batch draws each speaker first (None: all equally likely).
  speaker_weight: np.ndarray | None = None

  @property
  def num_speakers(self) -> int:
    return len(self.speakers)

  @classmethod
  def build(cls, utterances, speed_factors=(), source_weights=()) -> "TrainingTable":
    """From (source, record, speaker, gender, num_frames) tuples; each speed factor adds
    every utterance again as a new speaker "<speaker>~sp<factor>". `source_weights`: the share
    of each batch's speakers each source (corpus) gives, in expectation (empty: every speaker
    equally likely, so a corpus' share is its share of the speakers)."""
    factors = [1.0] + [f for f in _check_factors(speed_factors) if f != 1.0]
    rows = []
    for factor in factors:
      tag = "" if factor == 1.0 else f"~sp{factor:g}"
      for source, record, speaker, gender, frames in utterances:
        rows.append((source, record, speaker + tag, gender,
                     features_lib.speed_perturbed_length(frames, factor), factor))
    if not rows:
      raise ValueError("no utterances to build batches from")
    speakers = sorted({r[2] for r in rows})
    index = {s: i for i, s in enumerate(speakers)}
    gender = np.full(len(speakers), -1, np.int32)
    for r in rows:
      gender[index[r[2]]] = r[3]
    voices = sorted({u[2] for u in utterances})
    voice = np.array([voices.index(s.rsplit("~sp", 1)[0]) if s not in voices else voices.index(s)
                      for s in speakers], np.int32)
    source = np.array([r[0] for r in rows], np.int32)
    label = np.array([index[r[2]] for r in rows], np.int32)
    weight = None
    if len(source_weights):
      weights = np.asarray(source_weights, np.float64)
      if weights.ndim != 1 or np.any(weights < 0) or not weights.sum() > 0:
        raise ValueError(f"data.corpus_weights must be non-negative with a positive sum, got "
                         f"{tuple(source_weights)}")
      speaker_source = np.zeros(len(speakers), np.int64)
      speaker_source[label] = source
      if speaker_source.max() >= len(weights):
        raise ValueError(f"data.corpus_weights has {len(weights)} weights for "
                         f"{speaker_source.max() + 1} corpora")
      per_source = np.bincount(speaker_source, minlength=len(weights))
      weight = weights[speaker_source] / np.maximum(per_source[speaker_source], 1)
      weight /= weight.sum()
    return cls(source, np.array([r[1] for r in rows], np.int64),
               np.array([r[4] for r in rows], np.int32), label,
               np.array([r[5] for r in rows], np.float32), speakers, gender, voice, weight)

  def speaker_utterances(self) -> np.ndarray:
    """int32 [S, max utterances per speaker], padded with -1."""
    order = np.argsort(self.label, kind="stable")
    counts = np.bincount(self.label, minlength=self.num_speakers)
    table = np.full((self.num_speakers, counts.max()), -1, np.int32)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for s in range(self.num_speakers):
      table[s, :counts[s]] = order[starts[s]:starts[s] + counts[s]]
    return table


def _check_factors(factors) -> list[float]:
  try:
    factors = list(dict.fromkeys(float(f) for f in factors))  # A repeated factor counts once.
  except (TypeError, ValueError):
    raise ValueError(f"data.speed_factors must be numbers, got {factors!r}") from None
  if any(f <= 0 for f in factors):
    raise ValueError(f"data.speed_factors must be positive, got {factors}")
  return factors


@dataclasses.dataclass(frozen=True)
class BatchShape:
  n_speakers: int
  n_utterances: int
  crop_frames: int
  process_index: int = 0
  process_count: int = 1

  @property
  def local_speakers(self) -> int:
    return self.n_speakers // self.process_count


def check_shape(table: TrainingTable, shape: BatchShape) -> None:
  if shape.n_speakers > table.num_speakers:
    raise ValueError(f"batches need {shape.n_speakers} speakers, the training split has "
                     f"{table.num_speakers}")
  if shape.n_speakers % shape.process_count:
    raise ValueError(f"n_speakers={shape.n_speakers} is not divisible by "
                     f"{shape.process_count} processes")


def plan_batch(table: TrainingTable, utterance_table: np.ndarray, shape: BatchShape, seed: int,
               step: int) -> dict:
  """Which utterances, and where in them, this process's rows of global batch `step` crop.

  Every draw is shaped for the global batch and then sliced, so each host's rows are the
  ones the single-host batch would have. Returns numpy {"utterance": [R], "offset": [R],
  "label": [R]} for this process's R = local speakers x M rows.
  """
  n, m, crop = shape.n_speakers, shape.n_utterances, shape.crop_frames
  first = shape.process_index * shape.local_speakers
  local = slice(first, first + shape.local_speakers)
  rng = np.random.default_rng([_PLAN_TAG, seed, step])
  if table.speaker_weight is None:  # Global draws, identical on every host.
    speakers = rng.permutation(table.num_speakers)[:n]
  else:
    speakers = rng.choice(table.num_speakers, n, replace=False, p=table.speaker_weight)
  rows = utterance_table[speakers]  # [N, max]
  count = (rows >= 0).sum(axis=1)
  # Utterances: a random permutation per speaker, padding sorted last; slot j takes the
  # (j mod count)-th, so short speakers reuse theirs in turn.
  shuffle = np.where(rows >= 0, rng.random(rows.shape), 2.0)
  ranked = np.take_along_axis(rows, np.argsort(shuffle, axis=1, kind="stable"), axis=1)
  slot = np.arange(m)[None, :]
  utterance = np.take_along_axis(ranked, slot % count[:, None], axis=1)  # [N, M]
  reuse = slot // count[:, None]  # Which reuse of that utterance.
  reuses = (m + count[:, None] - 1) // count[:, None]
  # Stratified offsets: reuse r of an utterance starts in the r-th of `reuses` equal
  # stretches of its valid range, so reused windows differ.
  jitter = rng.random((n, m))
  length = table.num_frames[utterance]
  span = np.maximum(length - crop + 1, 1)
  offset = np.minimum(((reuse + jitter) / reuses * span).astype(np.int64), span - 1)
  rows = np.arange(first * m, (first + shape.local_speakers) * m)  # In the global batch.
  return {"utterance": utterance[local].reshape(-1), "offset": offset[local].reshape(-1),
          "label": np.repeat(speakers[local], m).astype(np.int32), "row": rows}


def crop(mel: np.ndarray, offset: int, crop_frames: int, factor: float = 1.0,
         feature_config: features_lib.FeatureConfig = features_lib.FeatureConfig()
         ) -> np.ndarray:
  """Frames [offset, offset + crop_frames) of the utterance `mel` played `factor` times
  faster, wrapping around past its end (utterances shorter than the crop repeat)."""
  length = features_lib.speed_perturbed_length(len(mel), factor)
  frames = (offset + np.arange(crop_frames)) % length
  if factor == 1.0:
    return np.asarray(mel[frames], np.float32)
  return features_lib.speed_perturbed_frames(mel, frames, factor, feature_config)


def crop_wave(wave: np.ndarray, start: int, samples: int) -> np.ndarray:
  """float32 [samples] of the utterance `wave` (int16 or float) from sample `start`,
  wrapping around past its end."""
  wave = np.asarray(wave)
  scale = 1 / 32768 if wave.dtype == np.int16 else 1.0
  return (wave[(start + np.arange(samples)) % len(wave)] * scale).astype(np.float32)


class BatchReader:
  """Builds this process's slice of batch `step`: `reader(step)` -> numpy batch.

  Picklable (grain sends it to worker processes): the data sources are TFDS ArrayRecord
  data sources, which reopen their files in each process. With an `augmenter`
  (hive/data/waveform_augment.Augmenter) rows come from the stored waveforms, augmented.
  """

  def __init__(self, table: TrainingTable, sources, shape: BatchShape, seed: int,
               feature_config: features_lib.FeatureConfig = features_lib.FeatureConfig(),
               augmenter=None):
    check_shape(table, shape)
    self.table, self.sources, self.shape, self.seed = table, list(sources), shape, seed
    self.feature_config = feature_config
    self.augmenter = augmenter
    self.utterance_table = table.speaker_utterances()

  def record(self, utterance: int) -> dict:
    return self.sources[self.table.source[utterance]][int(self.table.record[utterance])]

  def read(self, utterance: int) -> np.ndarray:
    return self.record(utterance)["features"]

  def __call__(self, step: int) -> dict:
    plan = plan_batch(self.table, self.utterance_table, self.shape, self.seed, int(step))
    t = self.table
    if self.augmenter is None:
      features = np.stack([
          crop(self.read(u), int(o), self.shape.crop_frames, float(t.factor[u]),
               self.feature_config) for u, o in zip(plan["utterance"], plan["offset"])])
    else:
      features = self._augmented(plan, int(step))
    return {"features": features, "speaker": plan["label"],
            "gender": t.speaker_gender[plan["label"]].astype(np.int32)}

  def _wave(self, utterance: int, start_frame: int, samples: int) -> np.ndarray:
    wave = self.record(utterance).get("waveform")
    if wave is None:
      raise ValueError("waveform augmentation needs the prepared records' waveforms "
                       "(data.store_waveform)")
    return crop_wave(wave, start_frame * self.feature_config.hop_length, samples)

  def _babble_bank(self, step: int, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(crops [BABBLE_BANK, samples], their voices): a pure function of (seed, step //
    BABBLE_REFRESH), kept for the steps it serves."""
    key = (step // BABBLE_REFRESH, samples)
    if getattr(self, "_bank_key", None) != key:
      t = self.table
      rng = np.random.default_rng([_BABBLE_TAG, self.seed, key[0]])
      originals = np.flatnonzero(t.factor == 1.0)
      chosen = originals[rng.integers(len(originals), size=BABBLE_BANK)]
      starts = rng.random(BABBLE_BANK)
      crops = np.stack([self._wave(int(u), int(s * t.num_frames[u]), samples)
                        for u, s in zip(chosen, starts)])
      self._bank, self._bank_key = (crops, t.speaker_voice[t.label[chosen]]), key
    return self._bank

  def babble(self, bank, rng: np.random.Generator, label: int, count: int,
             samples: int) -> np.ndarray:
    """Crops of up to `count` other voices (never the row's own, nor its speed copies)."""
    crops, voices = bank
    others = np.flatnonzero(voices != self.table.speaker_voice[label])
    order = others[np.argsort(rng.random(len(others)))]
    _, first = np.unique(voices[order], return_index=True)  # One crop per voice.
    picked = order[np.sort(first)][:count]
    return crops[picked, :samples]

  def _augmented(self, plan: dict, step: int) -> np.ndarray:
    from hive.data import waveform_augment
    t, crop_frames, hop = self.table, self.shape.crop_frames, self.feature_config.hop_length
    factors = t.factor[plan["utterance"]].astype(np.float64)
    # Enough audio for the slowest-consumed crop (factor > 1 reads more original frames),
    # from the frame each row's crop starts at.
    frames = int(np.ceil(crop_frames * max(1.0, factors.max()))) + 2
    starts = np.floor(plan["offset"] * factors).astype(np.int64)
    waves = np.stack([self._wave(int(u), int(s), frames * hop)
                      for u, s in zip(plan["utterance"], starts)])
    rngs = waveform_augment.row_rngs(self.seed, step, plan["row"])
    bank = self._babble_bank(step, frames * hop)
    waves = self.augmenter(waves, plan["label"], rngs,
                           babble=lambda rng, label, count, n: self.babble(bank, rng, label,
                                                                           count, n))
    mels = features_lib.log_mel_batch(waves, self.feature_config)
    out = np.empty((len(waves), crop_frames, mels.shape[-1]), np.float32)
    for row, (mel, factor, offset, start) in enumerate(zip(mels, factors, plan["offset"],
                                                             starts)):
      if factor == 1.0:
        out[row] = mel[:crop_frames]
      else:  # The sped-up crop's frames sit at original positions (offset + j) * factor.
        positions = (offset + np.arange(crop_frames)) * factor - start
        out[row] = features_lib.warped_frames(mel, positions, factor, self.feature_config)
    return out


def make_batches(reader: BatchReader, start_step: int = 0, workers: int = 0,
                 prefetch: int = 4):
  """Endless iterator of `reader`'s batches for steps start_step, start_step + 1, ...

  On grain: a MapDataset over step numbers (random access: resuming at any step needs no
  state), mapped on `workers` processes (0: threads of this process) with `prefetch`
  batches read ahead, so the training step does not wait.
  """
  import grain
  steps = grain.MapDataset.range(start_step, start_step + 2**62).map(reader)
  dataset = steps.to_iter_dataset(grain.ReadOptions(num_threads=max(1, min(prefetch, 4)),
                                                    prefetch_buffer_size=prefetch))
  if workers > 0:
    from absl import flags
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside app.run
      flags.FLAGS.mark_as_parsed()   # (tests, notebooks) nobody has parsed them.
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=workers, per_worker_buffer_size=max(1, prefetch // workers)))
  return iter(dataset)
