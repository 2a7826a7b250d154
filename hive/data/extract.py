"""Audio file -> log-mel, the unit of work of feature extraction.

Kept apart from the TFDS builder so it can be used (and tested) without
TensorFlow.
"""

from __future__ import annotations

from hive import features as features_lib
from hive.data import audio, readers


def extract(utterance: readers.Utterance, config: features_lib.FeatureConfig):
  """(utterance, log-mel or None, skip reason or None, seconds of audio)."""
  try:
    wave = audio.load_wave(utterance.path, config.sample_rate)
  except audio.BadAudio as e:
    return utterance, None, e.reason, 0.0
  mel = features_lib.log_mel(wave, config)
  if mel.shape[0] == 0:
    return utterance, None, "no frames left after silence trimming", 0.0
  return utterance, mel, None, len(wave) / config.sample_rate
