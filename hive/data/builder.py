"""The prepared dataset: a TFDS builder that decodes a corpus once into log-mel features.

One builder config per (corpus listing, feature settings): its name carries a
digest of both, so preparing the same data twice is a cache hit and changed data
or settings prepare anew. Unusable files are skipped with their reasons, which
are kept beside the dataset (`prepare_report.json`) so the summary is the same
on a cache hit.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from hive import features as features_lib
from hive.data import examples as examples_lib, extract, readers

REPORT_FILE = "prepare_report.json"


def default_data_dir() -> str:
  return os.path.join(os.environ.get("HIVE_CACHE", os.path.expanduser("~/.cache/hive")), "tfds")


class SpeechCorpusConfig(tfds.core.BuilderConfig):
  """A corpus root plus feature settings."""

  def __init__(self, *, corpus: readers.Corpus, feature_config: features_lib.FeatureConfig):
    settings = json.dumps(dataclasses.asdict(feature_config), sort_keys=True)
    digest = hashlib.sha256((corpus.fingerprint() + settings).encode()).hexdigest()[:12]
    slug = re.sub(r"[^a-z0-9]+", "_", pathlib.Path(corpus.root).resolve().name.lower()).strip("_")
    super().__init__(name=f"{slug or 'corpus'}_{digest}",
                     description=f"{corpus.layout} corpus at {corpus.root}; features {settings}")
    self.corpus = corpus
    self.feature_config = feature_config


class SpeechCorpus(tfds.core.GeneratorBasedBuilder):
  """Log-mel features of every usable utterance of a speech corpus, split "corpus"."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Log-mel features with speaker, gender and utterance ids."}

  def __init__(self, *, config: SpeechCorpusConfig, num_workers: int | None = None, **kwargs):
    self.num_workers = num_workers or os.cpu_count() or 1
    self.skips: list[readers.Skip] = list(config.corpus.skips)
    self.seconds = 0.0
    super().__init__(config=config, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    n_mels = self.builder_config.feature_config.n_mels
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "features": tfds.features.Tensor(shape=(None, n_mels), dtype=np.float32,
                                             encoding=tfds.features.Encoding.BYTES),
            "speaker": tfds.features.Text(),
            "speaker_index": np.int32,
            "gender": np.int32,  # 0 male, 1 female, -1 unknown.
            "utterance_id": tfds.features.Text(),
            "num_frames": np.int32,
        }),
        description=self.builder_config.description)

  def _split_generators(self, dl_manager):
    del dl_manager  # Local data only: nothing to download.
    return {"corpus": self._generate_examples()}

  def _generate_examples(self):
    corpus = self.builder_config.corpus
    speaker_index = {s: i for i, s in enumerate(corpus.speakers)}
    for utt, mel, reason, seconds in self._extract_all(corpus.utterances):
      if mel is None:
        self.skips.append(readers.Skip(utt.path, reason))
        continue
      self.seconds += seconds
      yield utt.id, {
          "features": mel,
          "speaker": utt.speaker,
          "speaker_index": speaker_index[utt.speaker],
          "gender": examples_lib.GENDER_CODES[utt.gender],
          "utterance_id": utt.id,
          "num_frames": mel.shape[0],
      }

  def _extract_all(self, utterances):
    config = self.builder_config.feature_config
    if self.num_workers <= 1 or len(utterances) < 64:
      for utt in utterances:
        yield extract.extract(utt, config)
      return
    # Threads, not processes: decoding (libsndfile), FFTs and BLAS release the
    # GIL, and processes would have to be spawned (forking TensorFlow is unsafe).
    with concurrent.futures.ThreadPoolExecutor(self.num_workers) as pool:
      yield from pool.map(lambda utt: extract.extract(utt, config), utterances)


@dataclasses.dataclass
class PrepareReport:
  """What preparing a corpus read, skipped and found."""
  root: str
  layout: str
  dataset_dir: str
  utterances: int
  speakers: int
  hours: float
  gender_utterances: dict
  gender_speakers: dict
  skips: list  # [{"path", "reason"}]
  notices: list  # [{"path", "message"}]
  cache_hit: bool = False

  @property
  def entries_listed(self) -> int:
    """Audio files (LibriSpeech) or wav.scp lines (Kaldi) seen: read + skipped."""
    return self.utterances + len(self.skips)


def make_builder(root, data_dir=None, feature_config=features_lib.FeatureConfig(),
                 num_workers=None) -> SpeechCorpus:
  corpus = readers.read_corpus(root)
  config = SpeechCorpusConfig(corpus=corpus, feature_config=feature_config)
  return SpeechCorpus(config=config, data_dir=data_dir or default_data_dir(),
                      num_workers=num_workers)


def prepare(root, data_dir=None, feature_config=features_lib.FeatureConfig(),
            num_workers=None) -> tuple[SpeechCorpus, PrepareReport]:
  """Prepares (or finds prepared) log-mel features for `root`; returns builder and report."""
  builder = make_builder(root, data_dir, feature_config, num_workers)
  report_path = pathlib.Path(builder.data_dir) / REPORT_FILE
  cache_hit = builder.is_prepared() if hasattr(builder, "is_prepared") else False
  if cache_hit and report_path.is_file():
    report = PrepareReport(**json.loads(report_path.read_text()))
    report.cache_hit = True
    return builder, report
  builder.download_and_prepare()
  report = _summarise(builder)
  report_path.write_text(json.dumps(dataclasses.asdict(report), indent=1))
  return builder, report


def _summarise(builder: SpeechCorpus) -> PrepareReport:
  corpus = builder.builder_config.corpus
  kept = read_examples(builder)
  speakers_by_gender = collections.Counter()
  for speaker in set(kept.speakers):
    speakers_by_gender[examples_lib.GENDER_NAMES[int(kept.gender_of_speaker[speaker])]] += 1
  frames = int(sum(kept.num_frames))
  hop_s = builder.builder_config.feature_config.hop_ms / 1000
  return PrepareReport(
      root=corpus.root, layout=corpus.layout, dataset_dir=builder.data_dir,
      utterances=len(kept.utterance_ids), speakers=len(set(kept.speakers)),
      hours=round((builder.seconds or frames * hop_s) / 3600, 4),
      gender_utterances=dict(collections.Counter(examples_lib.GENDER_NAMES[int(g)] for g in kept.genders)),
      gender_speakers=dict(speakers_by_gender),
      skips=[dataclasses.asdict(s) for s in builder.skips],
      notices=[dataclasses.asdict(n) for n in corpus.notices])


def read_examples(builder: SpeechCorpus) -> examples_lib.Examples:
  """Every prepared utterance, in memory, sorted by utterance id."""
  rows = sorted(tfds.as_numpy(builder.as_dataset(split="corpus")),
                key=lambda r: r["utterance_id"])
  return examples_lib.Examples(
      utterance_ids=[r["utterance_id"].decode() for r in rows],
      speakers=[r["speaker"].decode() for r in rows],
      genders=np.array([r["gender"] for r in rows], np.int32),
      num_frames=np.array([r["num_frames"] for r in rows], np.int32),
      features=[r["features"] for r in rows])
