"""Audio file -> log-mel (and 16 kHz int16 waveform), the unit of work of preparation.

Kept apart from the TFDS builder so it runs, and is tested, without TensorFlow: worker
processes of a local preparation and Beam workers import only this.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hive import features as features_lib
from hive.data import audio, readers


@dataclasses.dataclass
class Extracted:
  """One listed utterance, decoded or refused."""
  index: int  # Position in the sorted listing: the record's key.
  utterance: readers.Utterance
  mel: np.ndarray | None  # [frames, n_mels] in the storage dtype; None: skipped.
  wave: np.ndarray | None  # int16 [samples] at 16 kHz, when asked for.
  reason: str | None = None  # Why it was skipped.
  kind: str | None = None
  seconds: float = 0.0

  def row(self) -> dict:
    """What the dataset's index keeps of it (JSON-able, no arrays)."""
    return {"index": self.index, "num_frames": 0 if self.mel is None else int(len(self.mel)),
            "seconds": self.seconds, "reason": self.reason, "kind": self.kind}


def to_int16(wave: np.ndarray) -> np.ndarray:
  return np.round(np.clip(wave, -1.0, 32767 / 32768) * 32768).astype(np.int16)


def extract(index: int, utterance: readers.Utterance, config: features_lib.FeatureConfig,
            store_waveform: bool = False, feature_dtype=np.float32) -> Extracted:
  try:
    wave = audio.load_wave(utterance.path, config.sample_rate)
  except audio.BadAudio as e:
    return Extracted(index, utterance, None, None, e.reason, e.kind)
  if config.trim_silence:  # Trimmed here, so the stored wave is the audio of the log-mel.
    wave = features_lib.trim_silence(wave, config)
    config = dataclasses.replace(config, trim_silence=False)
  mel = features_lib.log_mel(wave, config)
  if mel.shape[0] == 0:
    return Extracted(index, utterance, None, None, "no frames left after silence trimming",
                     "no_frames")
  return Extracted(index, utterance, mel.astype(feature_dtype),
                   to_int16(wave) if store_waveform else None,
                   seconds=len(wave) / config.sample_rate)


def extract_item(item, config, store_waveform, feature_dtype) -> Extracted:
  """`extract` of an (index, utterance) pair: the function worker processes map."""
  return extract(item[0], item[1], config, store_waveform, feature_dtype)
