"""The front door of the data: from `config.data` to training batches and dev utterances.

Resolves the corpus roots (the built-in synthetic corpus when none is given), prepares each
through the TFDS builder (hive/data/builder.py), merges them, splits speakers into train /
dev, and hands out the N x M batches (hive/data/batches.py) and the dev utterances that the
evaluator scores (hive/evaluator.py).
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
class Inputs:
  roots: list[str]
  train: batches.FramePool
  dev: examples_lib.Examples | None  # Whole utterances of the dev speakers.
  train_examples: examples_lib.Examples  # The training speakers' real recordings.
  reports: list[builder_lib.PrepareReport]

  @property
  def dev_speakers(self) -> list[str]:
    return sorted(set(self.dev.speakers)) if self.dev is not None else []


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


def corpus_prefix(root) -> str:
  """The prefix of a corpus' speaker and utterance ids when several train together."""
  return pathlib.Path(root).resolve().name + "/"


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def load_corpus(data_config) -> tuple[examples_lib.Examples, list, list[str]]:
  """Prepares every root (process 0 first, then the others hit its cache) and merges them.

  With several roots, speakers are prefixed with their corpus folder name so ids
  from different corpora cannot collide. Returns (examples, reports, roots).
  """
  roots = corpus_roots(data_config) if jax.process_index() == 0 else None
  _sync("hive-corpus-ready")
  roots = roots or corpus_roots(data_config)
  features = feature_config(data_config)
  parts, reports = [], []
  for root in roots:
    if jax.process_index() == 0:
      builder_lib.prepare(root, data_config.data_dir, features)
    _sync(f"hive-prepared-{root}")
    builder, report = builder_lib.prepare(root, data_config.data_dir, features)
    reports.append(report)
    examples = builder_lib.read_examples(builder)
    parts.append(examples.with_prefix(corpus_prefix(root)) if len(roots) > 1 else examples)
  return examples_lib.Examples.concatenate(parts), reports, roots


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


def load_inputs(data_config) -> Inputs:
  examples, reports, roots = load_corpus(data_config)
  dev_speakers = list(data_config.dev_speakers) if data_config.get("dev_speakers") else None
  train_speakers, dev_speakers = split_speakers(
      examples.speakers, data_config.dev_fraction, data_config.split_seed, dev_speakers)
  train_examples = examples.select_speakers(train_speakers)
  augmented = train_examples
  if data_config.get("speed_factors"):
    augmented = examples_lib.with_speed_perturbed_speakers(
        train_examples, data_config.speed_factors, feature_config(data_config))
  train = batches.FramePool.from_examples(augmented)
  dev = examples.select_speakers(dev_speakers) if dev_speakers else None
  logging.info("Data: %d train speakers (%d utterances), %d dev speakers", train.num_speakers,
               len(train.utterance_ids), len(dev_speakers))
  return Inputs(roots, train, dev, train_examples, reports)


def train_batches(inputs: Inputs, data_config, seed: int, start_step: int):
  """Iterator of this process's numpy batches, starting at `start_step`."""
  ds = batches.make_dataset(inputs.train, data_config.n_speakers, data_config.n_utterances,
                            data_config.crop_frames, seed, start_step,
                            jax.process_index(), jax.process_count())
  return ds.as_numpy_iterator()
