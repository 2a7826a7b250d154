"""The prepared dataset: a TFDS builder that decodes a corpus once, into ArrayRecord shards.

Storage. One record per usable utterance, in utterance-id order, in TFDS's ArrayRecord file
format (random access by record index, `builder.as_data_source("corpus")`): the log-mel
[frames, n_mels] (float32, or float16 with `feature_dtype`), optionally the 16 kHz waveform as
int16 (`store_waveform`, for waveform augmentation), speaker, gender, utterance id and number
of frames. The dataset's metadata (TFDS `metadata.json`, written with the dataset) holds the
index training starts from without a pass over the data: the speakers, every record's
speaker, utterance id and length, and the preparation report (what was read, skipped and
noticed, also copied to `prepare_report.json` beside the dataset).

Preparation. One builder config per (corpus listing, feature and storage settings): its name
carries a digest of both, so preparing the same data twice is a cache hit and changed data or
settings prepare anew. Decoding runs in `num_workers` local processes, or, given Beam pipeline
options, on Apache Beam through TFDS's own distributed generation (DirectRunner locally,
Dataflow / Flink / Spark on a cluster). Records are keyed by their position in the sorted
listing and written in key order (`disable_shuffling`), so both ways give the same records.
TFDS writes into a temporary directory and renames it when complete: a preparation killed
at any moment leaves no half dataset behind, and the next one starts afresh.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import pathlib
import re
import uuid

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from hive import features as features_lib, workdir as workdir_lib
from hive.data import examples as examples_lib, extract, readers

REPORT_FILE = "prepare_report.json"
INDEX_FORMAT = 1
FEATURE_DTYPES = {"float32": np.float32, "float16": np.float16}


def default_data_dir() -> str:
  return os.path.join(os.environ.get("HIVE_CACHE", os.path.expanduser("~/.cache/hive")), "tfds")


@dataclasses.dataclass(frozen=True)
class Storage:
  """What a record holds besides the log-mel, and in which precision."""
  store_waveform: bool = False
  feature_dtype: str = "float32"

  def __post_init__(self):
    if self.feature_dtype not in FEATURE_DTYPES:
      raise ValueError(f"feature_dtype must be one of {sorted(FEATURE_DTYPES)}, got "
                       f"{self.feature_dtype!r}")


class SpeechCorpusConfig(tfds.core.BuilderConfig):
  """A corpus root plus feature and storage settings."""

  def __init__(self, *, corpus: readers.Corpus, feature_config: features_lib.FeatureConfig,
               storage: Storage = Storage()):
    settings = json.dumps({**dataclasses.asdict(feature_config), **dataclasses.asdict(storage)},
                          sort_keys=True)
    digest = hashlib.sha256((corpus.fingerprint() + settings).encode()).hexdigest()[:12]
    slug = re.sub(r"[^a-z0-9]+", "_", pathlib.Path(corpus.root).resolve().name.lower()).strip("_")
    super().__init__(name=f"{slug or 'corpus'}_{digest}",
                     description=f"{corpus.layout} corpus at {corpus.root}; settings {settings}")
    self.corpus = corpus
    self.feature_config = feature_config
    self.storage = storage


def sorted_listing(corpus: readers.Corpus) -> list[readers.Utterance]:
  """The corpus' utterances in utterance-id order: record keys are positions in it."""
  return sorted(corpus.utterances, key=lambda u: u.id)


def to_example(item: extract.Extracted) -> tuple[int, dict]:
  example = {
      "features": item.mel,
      "speaker": item.utterance.speaker,
      "gender": examples_lib.GENDER_CODES[item.utterance.gender],
      "utterance_id": item.utterance.id,
      "num_frames": len(item.mel),
  }
  if item.wave is not None:
    example["waveform"] = item.wave
  return item.index, example


def _is_kept(item: extract.Extracted) -> bool:
  return item.mel is not None


def _row_json(item: extract.Extracted) -> str:
  return json.dumps(item.row())


def bounded_map(pool: concurrent.futures.Executor, fn, items, window: int):
  """`pool.map(fn, items)` in order, with at most `window` tasks in flight, so a slow
  consumer (the writer) never lets finished results pile up in memory."""
  pending = collections.deque()
  for item in items:
    pending.append(pool.submit(fn, item))
    if len(pending) >= window:
      yield pending.popleft().result()
  while pending:
    yield pending.popleft().result()


class SpeechCorpus(tfds.core.GeneratorBasedBuilder):
  """Log-mel features (and waveforms) of every usable utterance of a corpus, split "corpus"."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Log-mel features with speaker, gender and utterance ids.",
      "2.0.0": "ArrayRecord records in utterance-id order; optional int16 waveforms; the "
               "speaker/record index and the preparation report in the metadata.",
  }

  def __init__(self, *, config: SpeechCorpusConfig, num_workers: int | None = None,
               beam: bool = False, **kwargs):
    self.num_workers = max(1, num_workers or os.cpu_count() or 1)
    self.beam = beam
    self._rows: list[dict] = []
    self._rows_dir: str | None = None
    super().__init__(config=config, file_format="array_record", **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    features = {
        "features": tfds.features.Tensor(
            shape=(None, config.feature_config.n_mels),
            dtype=FEATURE_DTYPES[config.storage.feature_dtype],
            encoding=tfds.features.Encoding.BYTES),
        "speaker": tfds.features.Text(),
        "gender": np.int32,  # 0 male, 1 female, -1 unknown.
        "utterance_id": tfds.features.Text(),
        "num_frames": np.int32,
    }
    if config.storage.store_waveform:
      features["waveform"] = tfds.features.Tensor(shape=(None,), dtype=np.int16,
                                                  encoding=tfds.features.Encoding.BYTES)
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(features), description=config.description,
        disable_shuffling=True, metadata=tfds.core.MetadataDict())

  @property
  def _extract_fn(self):
    config = self.builder_config
    return functools.partial(extract.extract_item, config=config.feature_config,
                             store_waveform=config.storage.store_waveform,
                             feature_dtype=FEATURE_DTYPES[config.storage.feature_dtype])

  def _split_generators(self, dl_manager):
    del dl_manager  # Local data only: nothing to download.
    items = list(enumerate(sorted_listing(self.builder_config.corpus)))
    if not self.beam:
      return {"corpus": self._generate_examples(items)}
    import apache_beam as beam
    fn, rows = self._extract_fn, os.path.join(self._rows_dir, "rows")

    @beam.ptransform_fn
    def extract_with_beam(pbegin):
      extracted = (pbegin | "List" >> beam.Create(items) | "Spread" >> beam.Reshuffle()
                   | "Extract" >> beam.Map(fn))
      _ = (extracted | "Row" >> beam.Map(_row_json)
           | "WriteRows" >> beam.io.WriteToText(rows, file_name_suffix=".jsonl"))
      return extracted | "Kept" >> beam.Filter(_is_kept) | "Example" >> beam.Map(to_example)

    return {"corpus": extract_with_beam()}  # pylint: disable=no-value-for-parameter

  def _generate_examples(self, items):
    fn = self._extract_fn
    if self.num_workers <= 1 or len(items) < 64:
      extracted = map(fn, items)
      yield from self._keep(extracted)
      return
    # Processes (spawned: forking TensorFlow is unsafe), each decoding whole files.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(self.num_workers, mp_context=context) as pool:
      yield from self._keep(bounded_map(pool, fn, items, 8 * self.num_workers))

  def _keep(self, extracted):
    for item in extracted:
      self._rows.append(item.row())
      if item.mel is not None:
        yield to_example(item)

  def _download_and_prepare(self, dl_manager, download_config):
    self._rows = []
    if self.beam:
      # Beside the dataset (a bucket on a cluster), where every worker can write.
      self._rows_dir = str(epath.Path(self.data_dir).parent / f"hive-rows-{uuid.uuid4().hex}")
    try:
      super()._download_and_prepare(dl_manager, download_config)
      rows = self._rows if not self.beam else _read_rows(self._rows_dir)
    finally:
      if self._rows_dir and epath.Path(self._rows_dir).exists():
        epath.Path(self._rows_dir).rmtree()
    self.info.metadata["hive"] = make_index(self.builder_config.corpus, rows,
                                            self.builder_config.feature_config)


def _read_rows(directory: str) -> list[dict]:
  rows = []
  for path in sorted(epath.Path(directory).glob("rows*.jsonl")):
    rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return rows


def make_index(corpus: readers.Corpus, rows: list[dict],
               feature_config: features_lib.FeatureConfig) -> dict:
  """The metadata training starts from: records are the kept utterances in listing order."""
  listing = sorted_listing(corpus)
  if sorted(r["index"] for r in rows) != list(range(len(listing))):
    raise RuntimeError(f"{corpus.root}: preparation lost track of some utterances "
                       f"({len(rows)} results for {len(listing)} listed)")
  rows = sorted(rows, key=lambda r: r["index"])
  kept = [r for r in rows if r["num_frames"] > 0]
  utterances = [listing[r["index"]] for r in kept]
  speakers = sorted({u.speaker for u in utterances})
  speaker_of = {s: i for i, s in enumerate(speakers)}
  gender = {u.speaker: examples_lib.GENDER_CODES[u.gender] for u in utterances}
  skips = list(corpus.skips) + [readers.Skip(listing[r["index"]].path, r["reason"], r["kind"] or "")
                                for r in rows if r["num_frames"] == 0]
  seconds = sum(r["seconds"] for r in kept)
  speakers_by_gender = collections.Counter(examples_lib.GENDER_NAMES[gender[s]] for s in speakers)
  report = {
      "root": corpus.root, "layout": corpus.layout, "utterances": len(kept),
      "speakers": len(speakers), "hours": round(seconds / 3600, 4),
      "gender_utterances": dict(collections.Counter(
          examples_lib.GENDER_NAMES[gender[u.speaker]] for u in utterances)),
      "gender_speakers": dict(speakers_by_gender),
      "skips": [dataclasses.asdict(s) for s in skips],
      "notices": [dataclasses.asdict(n) for n in corpus.notices],
  }
  return {"format": INDEX_FORMAT, "speakers": speakers,
          "speaker_gender": [gender[s] for s in speakers],
          "utterance_ids": [u.id for u in utterances],
          "record_speaker": [speaker_of[u.speaker] for u in utterances],
          "num_frames": [r["num_frames"] for r in kept],
          "hop_ms": feature_config.hop_ms, "report": report}


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
  skips: list  # [{"path", "reason", "kind"}]
  notices: list  # [{"path", "message", "kind"}]
  cache_hit: bool = False

  @property
  def entries_listed(self) -> int:
    """Audio files (LibriSpeech, VoxCeleb) or wav.scp lines (Kaldi) seen: read + skipped."""
    return self.utterances + len(self.skips)


@dataclasses.dataclass
class CorpusIndex:
  """A prepared corpus' records, from its metadata: no pass over the data."""
  utterance_ids: list[str]  # Per record, sorted.
  speakers: list[str]  # Sorted.
  record_speaker: np.ndarray  # int32 [R]: index into speakers.
  speaker_gender: np.ndarray  # int32 [S]: 0 m, 1 f, -1 unknown.
  num_frames: np.ndarray  # int32 [R]

  @property
  def record_speakers(self) -> list[str]:
    return [self.speakers[i] for i in self.record_speaker]

  def records_of(self, speakers) -> np.ndarray:
    """Record indices of the given speakers' utterances, in record order."""
    wanted = np.zeros(len(self.speakers), bool)
    index = {s: i for i, s in enumerate(self.speakers)}
    wanted[[index[s] for s in speakers if s in index]] = True
    return np.flatnonzero(wanted[self.record_speaker])


def corpus_index(builder: SpeechCorpus) -> CorpusIndex:
  meta = builder.info.metadata.get("hive") if builder.info.metadata else None
  if not meta or meta.get("format") != INDEX_FORMAT:
    raise readers.CorpusError(f"{builder.data_dir}: a prepared dataset without hive's index "
                              "(prepared by another version of hive?); delete it and prepare "
                              "again")
  return CorpusIndex(list(meta["utterance_ids"]), list(meta["speakers"]),
                     np.asarray(meta["record_speaker"], np.int32),
                     np.asarray(meta["speaker_gender"], np.int32),
                     np.asarray(meta["num_frames"], np.int32))


def make_builder(root, data_dir=None, feature_config=features_lib.FeatureConfig(),
                 num_workers=None, storage: Storage = Storage(), beam: bool = False
                 ) -> SpeechCorpus:
  corpus = readers.read_corpus(root)
  config = SpeechCorpusConfig(corpus=corpus, feature_config=feature_config, storage=storage)
  return SpeechCorpus(config=config, data_dir=data_dir or default_data_dir(),
                      num_workers=num_workers, beam=beam)


def beam_options_from_flag(value: str | None):
  """`--beam_pipeline_options` as TFDS's own CLI takes it: comma-separated key=value pairs,
  e.g. "runner=DataflowRunner,project=P,region=R,temp_location=gs://b/tmp" or
  "direct_num_workers=2,direct_running_mode=multi_processing"."""
  from apache_beam.options.pipeline_options import PipelineOptions
  flags = [f"--{item.strip()}" for item in (value or "").split(",") if item.strip()]
  return PipelineOptions(flags)


def prepare(root, data_dir=None, feature_config=features_lib.FeatureConfig(),
            num_workers=None, storage: Storage = Storage(), beam_pipeline_options: str | None = None
            ) -> tuple[SpeechCorpus, PrepareReport]:
  """Prepares (or finds prepared) `root`; returns the builder and what was read and skipped.
  `beam_pipeline_options` (a string, see `beam_options_from_flag`) prepares on Apache Beam."""
  beam = beam_pipeline_options is not None
  builder = make_builder(root, data_dir, feature_config, num_workers, storage, beam)
  cache_hit = builder.is_prepared()
  if not cache_hit:
    config = tfds.download.DownloadConfig(
        beam_options=beam_options_from_flag(beam_pipeline_options) if beam else None)
    builder.download_and_prepare(download_config=config, file_format="array_record")
  meta = builder.info.metadata.get("hive") if builder.info.metadata else None
  if not meta:
    corpus_index(builder)  # Raises the clear error.
  report = PrepareReport(dataset_dir=builder.data_dir, cache_hit=cache_hit, **meta["report"])
  report_path = pathlib.Path(builder.data_dir) / REPORT_FILE
  if not report_path.is_file():  # For people and tools: the whole report, every skip.
    full = dataclasses.asdict(report)
    del full["cache_hit"]
    workdir_lib.write_atomically(report_path, json.dumps(full, indent=1))
  logging.info("%s %s: %d utterances, %d speakers", "Found" if cache_hit else "Prepared",
               root, report.utterances, report.speakers)
  return builder, report


def data_source(builder: SpeechCorpus):
  """Random access to the prepared records: `source[i]` is record i as numpy arrays."""
  return builder.as_data_source(split="corpus")


def read_examples(builder: SpeechCorpus, records=None) -> examples_lib.Examples:
  """Prepared utterances in memory, in utterance-id order: every record, or `records`
  (indices). For evaluation sets and dev speakers; training reads records as it goes."""
  index = corpus_index(builder)
  records = np.arange(len(index.utterance_ids)) if records is None else np.sort(records)
  source = data_source(builder)
  features = [np.asarray(source[int(r)]["features"], np.float32) for r in records]
  return examples_lib.Examples(
      utterance_ids=[index.utterance_ids[r] for r in records],
      speakers=[index.speakers[index.record_speaker[r]] for r in records],
      genders=index.speaker_gender[index.record_speaker[records]].astype(np.int32),
      num_frames=index.num_frames[records].astype(np.int32),
      features=features)


def read_waveforms(builder: SpeechCorpus, records) -> list[np.ndarray]:
  """The stored int16 waveforms of `records` (prepared with `store_waveform`)."""
  if not builder.builder_config.storage.store_waveform:
    raise ValueError(f"{builder.data_dir}: prepared without waveforms (store_waveform)")
  source = data_source(builder)
  return [np.asarray(source[int(r)]["waveform"]) for r in np.sort(records)]
