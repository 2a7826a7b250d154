"""The front door of the data: from `config.data` to training batches and dev utterances.

Resolves the corpus roots (the built-in synthetic corpus when none is given), prepares each
through the TFDS builder (hive/data/builder.py: ArrayRecord records plus an index in the
dataset's metadata), splits speakers into train / dev, and hands out the N x M batches
(hive/data/batches.py, read by random access, so memory does not grow with the corpus) and
the few dev and training utterances the evaluator scores (hive/evaluator.py).
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import numpy as np
from absl import logging

from hive import features as features_lib
from hive.data import batches, builder as builder_lib, examples as examples_lib, synthetic


@dataclasses.dataclass
class PreparedCorpus:
  """One prepared corpus root; its speakers carry `prefix` when several train together."""
  root: str
  prefix: str
  builder: builder_lib.SpeechCorpus
  index: builder_lib.CorpusIndex
  report: builder_lib.PrepareReport

  @property
  def speakers(self) -> list[str]:
    return [self.prefix + s for s in self.index.speakers]

  def records_of(self, speakers) -> np.ndarray:
    """Record indices of the given (prefixed) speakers' utterances."""
    n = len(self.prefix)
    return self.index.records_of([s[n:] for s in speakers if s.startswith(self.prefix)])

  def read(self, records) -> examples_lib.Examples:
    examples = builder_lib.read_examples(self.builder, records)
    return examples.with_prefix(self.prefix) if self.prefix else examples


@dataclasses.dataclass
class Inputs:
  corpora: list[PreparedCorpus]
  table: batches.TrainingTable  # Training utterances (speed-perturbed speakers included).
  train_speakers: list[str]  # The real training speakers (recordings as they are).
  dev_speakers: list[str]
  dev: examples_lib.Examples | None  # The dev utterances the evaluator scores.
  centring: examples_lib.Examples | None  # Training utterances that centre them.
  dev_degraded: examples_lib.Examples | None = None  # The dev utterances, `eval.degrade`d.

  @property
  def roots(self) -> list[str]:
    return [c.root for c in self.corpora]


def corpus_roots(data_config) -> list[str]:
  """The configured roots (comma-separated), or the synthetic corpus if none."""
  if data_config.root:
    return [r.strip() for r in str(data_config.root).split(",") if r.strip()]
  s = data_config.synthetic
  root = synthetic.ensure_default_corpus(num_speakers=s.num_speakers,
                                         utterances_per_speaker=s.utterances_per_speaker,
                                         seed=s.seed)
  logging.info("No data.root given: using the built-in synthetic corpus at %s", root)
  return [str(root)]


def feature_config(data_config) -> features_lib.FeatureConfig:
  return features_lib.FeatureConfig(n_mels=data_config.n_mels,
                                    trim_silence=data_config.trim_silence)


def storage(config) -> builder_lib.Storage:
  """What the prepared records hold: waveforms too when the config asks for them, augments
  waveforms or scores a degraded copy of its dev set."""
  waves = (config.data.store_waveform or config.augment.wave.enabled
           or bool(config.eval.get("degrade")))
  return builder_lib.Storage(store_waveform=bool(waves), feature_dtype=config.data.feature_dtype)


def corpus_prefix(root) -> str:
  """The prefix of a corpus' speaker and utterance ids when several train together."""
  return pathlib.Path(root).resolve().name + "/"


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def prepare_corpora(config) -> list[PreparedCorpus]:
  """Prepares every root of `config.data` (process 0 first, then the others find its cache)."""
  data_config = config.data
  roots = corpus_roots(data_config) if jax.process_index() == 0 else None
  _sync("hive-corpus-ready")
  roots = roots or corpus_roots(data_config)
  features, stored = feature_config(data_config), storage(config)
  corpora = []
  for root in roots:
    if jax.process_count() > 1:  # Process 0 prepares; the others then find its cache.
      if jax.process_index() == 0:
        builder_lib.prepare(root, data_config.data_dir or None, features, storage=stored)
      _sync(f"hive-prepared-{root}")
    builder, report = builder_lib.prepare(root, data_config.data_dir or None, features,
                                          storage=stored)
    corpora.append(PreparedCorpus(root, corpus_prefix(root) if len(roots) > 1 else "", builder,
                                  builder_lib.corpus_index(builder), report))
  return corpora


def split_speakers(speakers, dev_fraction: float, seed: int,
                   dev_speakers=None) -> tuple[list[str], list[str]]:
  """Deterministic speaker-disjoint (train, dev) split.

  `dev_speakers` (a list) overrides the draw; otherwise round(dev_fraction * S)
  speakers are drawn by a seeded permutation of the sorted speaker list.
  """
  speakers = sorted(set(speakers))
  if dev_speakers is not None:
    dev = sorted(set(dev_speakers) & set(speakers))
    missing = sorted(set(dev_speakers) - set(speakers))
    if missing:
      raise ValueError(f"dev speakers not in the corpus: {missing[:10]}")
  else:
    if not 0.0 <= dev_fraction < 1.0:
      raise ValueError(f"dev_fraction must be in [0, 1), got {dev_fraction}")
    count = int(round(dev_fraction * len(speakers)))
    order = np.random.default_rng(seed).permutation(len(speakers))
    dev = sorted(speakers[i] for i in order[:count])
  train = [s for s in speakers if s not in set(dev)]
  return train, dev


def select_utterances(corpora: list[PreparedCorpus], speakers, per_speaker: int = 0,
                      max_utterances: int = 0, seed: int = 0) -> list[tuple[int, int]]:
  """(corpus, record) of the given speakers' utterances: at most `per_speaker` a speaker
  (the first by id; 0: all), then at most `max_utterances` in all (drawn with `seed`; 0: all),
  in corpus and record order."""
  wanted = set(speakers)
  chosen = []
  for c, corpus in enumerate(corpora):
    records = corpus.records_of(wanted)
    if per_speaker > 0:
      record_speaker = corpus.index.record_speaker[records]
      rank = np.zeros(len(records), np.int64)
      for s in np.unique(record_speaker):  # Records are in id order within a speaker.
        rank[record_speaker == s] = np.arange((record_speaker == s).sum())
      records = records[rank < per_speaker]
    chosen += [(c, int(r)) for r in records]
  if max_utterances > 0 and len(chosen) > max_utterances:
    keep = np.random.default_rng(seed).choice(len(chosen), max_utterances, replace=False)
    chosen = [chosen[i] for i in sorted(keep)]
  return chosen


def read_selected(corpora: list[PreparedCorpus], chosen, degrade: str = "",
                  features: features_lib.FeatureConfig = features_lib.FeatureConfig()
                  ) -> examples_lib.Examples | None:
  """The (corpus, record) utterances `chosen`, read into memory; `degrade`: their waveforms
  corrupted as `hive.evaluate --degrade` does (hive/data/waveform_augment.py), then log-mels."""
  parts = []
  for c, corpus in enumerate(corpora):
    records = [r for k, r in chosen if k == c]
    if records:
      part = corpus.read(records)
      if degrade:
        part = degraded(part, builder_lib.read_waveforms(corpus.builder, records), degrade,
                        features)
      parts.append(part)
  return examples_lib.Examples.concatenate(parts) if parts else None


def degraded(examples: examples_lib.Examples, waves, spec: str,
             features: features_lib.FeatureConfig) -> examples_lib.Examples:
  """`examples` with the log-mels of their waveforms corrupted by `spec`, each utterance
  with its own seed (a digest of its id), so the copy is the same in every run."""
  import zlib
  from hive.data import waveform_augment
  mels = [features_lib.log_mel(waveform_augment.degrade(
      np.asarray(w, np.float32) / 32768 if w.dtype == np.int16 else w, spec,
      seed=zlib.crc32(u.encode())), features) for w, u in zip(waves, examples.utterance_ids)]
  return dataclasses.replace(examples, features=mels,
                             num_frames=np.array([len(m) for m in mels], np.int32))


def listed_dev_speakers(data_config) -> list[str] | None:
  """`data.dev_speakers` and the speakers of `data.dev_speakers_file`; None when neither."""
  listed = list(data_config.dev_speakers or ())
  if data_config.get("dev_speakers_file"):
    path = pathlib.Path(data_config.dev_speakers_file)
    if not path.is_file():
      raise FileNotFoundError(f"{path}: no such dev speaker list (data.dev_speakers_file)")
    lines = path.read_text(encoding="utf-8").splitlines()
    listed += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
  return listed or None


def read_utterances(corpora: list[PreparedCorpus], speakers, per_speaker: int = 0,
                    max_utterances: int = 0, seed: int = 0, degrade: str = "",
                    features: features_lib.FeatureConfig = features_lib.FeatureConfig()
                    ) -> examples_lib.Examples | None:
  """`select_utterances`, read into memory (None: nothing selected)."""
  return read_selected(corpora, select_utterances(corpora, speakers, per_speaker,
                                                  max_utterances, seed), degrade, features)


def training_table(corpora: list[PreparedCorpus], train_speakers, speed_factors=(),
                   corpus_weights=()) -> batches.TrainingTable:
  wanted = set(train_speakers)
  utterances = []
  for c, corpus in enumerate(corpora):
    index = corpus.index
    for r in corpus.records_of(wanted):
      s = index.record_speaker[r]
      utterances.append((c, int(r), corpus.prefix + index.speakers[s],
                         int(index.speaker_gender[s]), int(index.num_frames[r])))
  return batches.TrainingTable.build(utterances, speed_factors, corpus_weights)


def load_inputs(config) -> Inputs:
  """Prepares the corpora of `config.data`, splits speakers and reads the evaluator's few
  utterances (`config.eval`); the training utterances stay on disk."""
  data, evaluation = config.data, config.eval
  corpora = prepare_corpora(config)
  speakers = [s for c in corpora for s in c.speakers]
  train_speakers, dev_speakers = split_speakers(speakers, data.dev_fraction, data.split_seed,
                                                listed_dev_speakers(data))
  table = training_table(corpora, train_speakers, data.get("speed_factors", ()),
                         data.get("corpus_weights", ()))
  scored = dev_speakers
  if evaluation.max_speakers and len(scored) > evaluation.max_speakers:
    pick = np.random.default_rng(config.seed).choice(len(scored), evaluation.max_speakers,
                                                     replace=False)
    scored = [scored[i] for i in sorted(pick)]
  dev = read_utterances(corpora, scored, evaluation.utterances_per_speaker) if scored else None
  dev_degraded = None
  if dev is not None and evaluation.get("degrade"):
    dev_degraded = read_utterances(corpora, scored, evaluation.utterances_per_speaker,
                                   degrade=evaluation.degrade, features=feature_config(data))
  centring = None
  if dev is not None and evaluation.centring_utterances > 0:
    centring = read_utterances(corpora, train_speakers,
                               max_utterances=evaluation.centring_utterances, seed=config.seed)
  logging.info("Data: %d training speakers (%d with speed-perturbed copies, %d utterances), "
               "%d dev speakers", len(train_speakers), table.num_speakers, len(table.label),
               len(dev_speakers))
  return Inputs(corpora, table, train_speakers, dev_speakers, dev, centring, dev_degraded)


def train_batches(inputs: Inputs, config, start_step: int):
  """Iterator of this process's numpy batches, starting at `start_step`."""
  data = config.data
  shape = batches.BatchShape(data.n_speakers, data.n_utterances, data.crop_frames,
                             jax.process_index(), jax.process_count())
  augmenter = None
  if config.augment.wave.enabled:
    from hive.data import waveform_augment
    augmenter = waveform_augment.Augmenter(config.augment.wave)
  reader = batches.BatchReader(inputs.table,
                               [builder_lib.data_source(c.builder) for c in inputs.corpora],
                               shape, config.seed, feature_config(data), augmenter)
  return batches.make_batches(reader, start_step, data.workers)
