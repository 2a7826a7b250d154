"""From `config.data` to training batches and dev windows.

Resolves the corpus roots (the built-in synthetic corpus when none is given),
prepares them through the TFDS builder, merges them, splits speakers into
train / dev and hands out the batch pipeline and the fixed dev windows.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import numpy as np
from absl import logging

from hive import features as features_lib
from hive.data import builder as builder_lib
from hive.data import pipeline, synthetic


@dataclasses.dataclass
class Inputs:
  roots: list[str]
  train: pipeline.FramePool
  dev: pipeline.FramePool | None
  reports: list[builder_lib.PrepareReport]

  @property
  def dev_speakers(self) -> list[str]:
    return self.dev.speakers if self.dev is not None else []


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


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def load_examples(data_config) -> tuple[builder_lib.Examples, list, list[str]]:
  """Prepares every root (process 0 first, then the others hit its cache) and merges them.

  With several roots, speakers are prefixed with their corpus folder name so ids
  from different corpora cannot collide.
  """
  roots = corpus_roots(data_config) if jax.process_index() == 0 else None
  _sync("hive-corpus-ready")
  roots = roots or corpus_roots(data_config)
  features = feature_config(data_config)
  merged, reports = None, []
  for root in roots:
    if jax.process_index() == 0:
      builder_lib.prepare(root, data_config.data_dir, features)
    _sync(f"hive-prepared-{root}")
    builder, report = builder_lib.prepare(root, data_config.data_dir, features)
    reports.append(report)
    examples = builder_lib.load_examples(builder)
    if len(roots) > 1:
      prefix = pathlib.Path(root).resolve().name
      examples.speakers = [f"{prefix}/{s}" for s in examples.speakers]
      examples.utterance_ids = [f"{prefix}/{u}" for u in examples.utterance_ids]
    merged = examples if merged is None else builder_lib.Examples(
        merged.utterance_ids + examples.utterance_ids, merged.speakers + examples.speakers,
        np.concatenate([merged.genders, examples.genders]),
        np.concatenate([merged.num_frames, examples.num_frames]),
        merged.features + examples.features)
  return merged, reports, roots


def load_inputs(data_config) -> Inputs:
  examples, reports, roots = load_examples(data_config)
  dev_speakers = list(data_config.dev_speakers) if data_config.get("dev_speakers") else None
  train_speakers, dev_speakers = pipeline.split_speakers(
      examples.speakers, data_config.dev_fraction, data_config.split_seed, dev_speakers)
  train_examples = examples.select_speakers(train_speakers)
  if data_config.get("speed_factors"):
    train_examples = builder_lib.with_speed_perturbed_speakers(
        train_examples, data_config.speed_factors, feature_config(data_config))
  train = pipeline.FramePool.from_examples(train_examples)
  dev = (pipeline.FramePool.from_examples(examples.select_speakers(dev_speakers))
         if dev_speakers else None)
  logging.info("Data: %d train speakers (%d utterances), %d dev speakers", train.num_speakers,
               len(train.utterance_ids), len(dev_speakers))
  return Inputs(roots, train, dev, reports)


def train_batches(inputs: Inputs, data_config, seed: int, start_step: int):
  """Iterator of this process's numpy batches, starting at `start_step`."""
  ds = pipeline.make_dataset(inputs.train, data_config.n_speakers, data_config.n_utterances,
                             data_config.crop_frames, seed, start_step,
                             jax.process_index(), jax.process_count())
  return ds.as_numpy_iterator()


def dev_segments(inputs: Inputs, data_config) -> dict | None:
  if inputs.dev is None:
    return None
  return pipeline.fixed_segments(inputs.dev, data_config.crop_frames,
                                 data_config.dev_segments_per_speaker)
