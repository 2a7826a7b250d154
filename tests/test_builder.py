"""The prepared dataset: ArrayRecord records, the index in its metadata, and the same records
however it is prepared (one process, several, or Apache Beam)."""

import numpy as np
import pytest
import soundfile as sf

from hive import features
from hive.data import audio, builder, synthetic
from test_readers import VOX1_META, make_voxceleb


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  root = tmp_path_factory.mktemp("builder") / "corpus"
  synthetic.generate_corpus(root, num_speakers=5, utterances_per_speaker=14,
                            seconds=(0.6, 1.2), seed=4)
  (root / "train-synthetic" / "1001" / "not-audio").mkdir()
  bad = root / "train-synthetic" / "1001" / "10000" / "1001-10000-0099.flac"
  bad.write_bytes(b"this is not a flac file")  # Listed, then skipped with its reason.
  return root


def records(prepared):
  source = builder.data_source(prepared)
  return [source[i] for i in range(len(source))]


def assert_same_records(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert set(x) == set(y) and x["utterance_id"] == y["utterance_id"]
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def test_records_and_index_agree(corpus, tmp_path):
  prepared, report = builder.prepare(corpus, tmp_path, num_workers=1)
  index = builder.corpus_index(prepared)
  rows = records(prepared)
  assert report.utterances == len(rows) == 70 and report.speakers == 5
  assert [s["reason"] for s in report.skips] and report.skips[0]["kind"] == "undecodable"
  assert report.entries_listed == 71
  assert [r["utterance_id"].decode() for r in rows] == index.utterance_ids == sorted(
      index.utterance_ids)
  assert [len(r["features"]) for r in rows] == index.num_frames.tolist()
  for r, s in zip(rows, index.record_speakers):
    assert r["speaker"].decode() == s
  # Records of a speaker, found in the index without reading the data.
  assert all(index.record_speakers[i] == "1003" for i in index.records_of(["1003"]))
  assert len(index.records_of(["1003", "nobody"])) == 14
  again, hit = builder.prepare(corpus, tmp_path, num_workers=1)
  assert hit.cache_hit and hit.utterances == report.utterances
  assert (tmp_path / again.data_dir / builder.REPORT_FILE).is_file()


def test_worker_processes_and_beam_write_the_same_records(corpus, tmp_path):
  one, _ = builder.prepare(corpus, tmp_path / "one", num_workers=1)
  two, _ = builder.prepare(corpus, tmp_path / "two", num_workers=2)
  beam, _ = builder.prepare(corpus, tmp_path / "beam", beam_pipeline_options=(
      "direct_num_workers=2,direct_running_mode=multi_processing"))
  expected = records(one)
  assert_same_records(expected, records(two))
  assert_same_records(expected, records(beam))
  assert one.info.metadata["hive"] == two.info.metadata["hive"] == beam.info.metadata["hive"]


def test_waveforms_and_half_precision_features(corpus, tmp_path):
  stored = builder.Storage(store_waveform=True, feature_dtype="float16")
  prepared, _ = builder.prepare(corpus, tmp_path, num_workers=1, storage=stored)
  index = builder.corpus_index(prepared)
  first = builder.data_source(prepared)[0]
  assert first["waveform"].dtype == np.int16 and first["features"].dtype == np.float16
  path = next(corpus.rglob(index.utterance_ids[0] + ".flac"))
  wave = audio.load_wave(path)
  np.testing.assert_allclose(first["waveform"] / 32768, wave, atol=1 / 32768)
  mel = features.log_mel(wave)
  np.testing.assert_allclose(first["features"].astype(np.float32), mel, atol=0.01, rtol=1e-3)
  examples = builder.read_examples(prepared, [0, 3])
  assert examples.features[0].dtype == np.float32 and len(examples.utterance_ids) == 2


def test_voxceleb_layout_prepares_with_speakers_and_genders(tmp_path):
  make_voxceleb(tmp_path / "vox", {"id10001": {"1zcIwhmdeo4": 2, "-5AkDNs_mEL": 1},
                                   "id10002": {"abc": 2}, "id10003": {"xyz": 1}})
  (tmp_path / "vox" / "vox1_meta.csv").write_text(VOX1_META)
  prepared, report = builder.prepare(tmp_path / "vox", tmp_path / "tfds", num_workers=1)
  index = builder.corpus_index(prepared)
  assert report.layout == "voxceleb" and report.utterances == 6
  assert index.speakers == ["id10001", "id10002", "id10003"]
  assert index.speaker_gender.tolist() == [0, 1, -1]  # m, f, not in the table.
  assert report.gender_speakers == {"m": 1, "f": 1, "unknown": 1}
  assert [n["kind"] for n in report.notices] == ["no_gender_entry"]
