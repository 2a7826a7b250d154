"""The N x M batches read from prepared records, and speaker splits.

Every frame of the fixture records is a code [speaker, utterance, frame index], so each
cropped row can be decoded back to where it came from. Records are plain dicts here (what a
TFDS data source returns), so the sampler is tested without preparing a dataset.
"""

import numpy as np
import pytest

from hive import features
from hive.data import batches, input_pipeline

CROP = 50
SHORT = 40  # One utterance shorter than the crop.
# speaker -> (gender, utterance lengths in frames).
SPEAKERS = {
    "alone": (0, [300]),  # One long utterance.
    "few": (1, [SHORT, 120, 200]),
    "many": (0, [60 + 10 * i for i in range(20)]),
    "five": (1, [80, 90, 100, 110, 130]),
    "two": (-1, [150, 70]),
    "four": (0, [55, 65, 75, 85]),
}


class Pool:
  """One 'prepared corpus' of coded records and its training table."""

  def __init__(self, speakers=SPEAKERS, factors=()):
    names = sorted(speakers)
    rows = sorted((f"{s}-{u:03d}", s, speakers[s][0], n)
                  for s in names for u, n in enumerate(speakers[s][1]))
    self.records = []
    for index, (_, speaker, _, n) in enumerate(rows):
      f = np.empty((n, 3), np.float32)
      f[:, 0] = names.index(speaker)
      f[:, 1] = index
      f[:, 2] = np.arange(n)
      self.records.append({"features": f})
    self.lengths = np.array([r[3] for r in rows])
    self.record_speaker = [r[1] for r in rows]
    self.table = batches.TrainingTable.build(
        [(0, i, r[1], r[2], r[3]) for i, r in enumerate(rows)], factors)

  def reader(self, n, m, seed, process_index=0, process_count=1, crop=CROP):
    shape = batches.BatchShape(n, m, crop, process_index, process_count)
    return batches.BatchReader(self.table, [self.records], shape, seed,
                               features.FeatureConfig(n_mels=3))


@pytest.fixture(scope="module")
def pool():
  return Pool()


def decode(pool, batch):
  """[(speaker, utterance, start frame)] per row, checking each row is one window."""
  out = []
  for row, label in zip(batch["features"], batch["speaker"]):
    speaker, utt = int(row[0, 0]), int(row[0, 1])
    assert np.all(row[:, 0] == speaker) and np.all(row[:, 1] == utt)
    assert pool.table.speakers[label] == pool.record_speaker[utt]
    assert speaker == label  # One corpus, no speed factors: labels are sorted names.
    length = pool.lengths[utt]
    start = int(row[0, 2])
    np.testing.assert_array_equal(row[:, 2], (start + np.arange(len(row))) % length)
    out.append((speaker, utt, start))
  return out


def test_table_layout(pool):
  table = pool.table
  assert table.speakers == sorted(SPEAKERS) and table.num_speakers == 6
  assert list(table.speaker_gender) == [SPEAKERS[s][0] for s in table.speakers]
  utterances = table.speaker_utterances()
  assert utterances.shape == (6, 20)
  for s, name in enumerate(table.speakers):
    own = utterances[s][utterances[s] >= 0]
    assert len(own) == len(SPEAKERS[name][1])
    assert all(pool.record_speaker[table.record[u]] == name for u in own)


def test_batch_shapes_dtypes_and_speaker_major_rows(pool):
  n, m = 4, 3
  batch = pool.reader(n, m, seed=0)(0)
  assert batch["features"].shape == (n * m, CROP, 3)
  assert batch["features"].dtype == np.float32
  assert batch["speaker"].shape == batch["gender"].shape == (n * m,)
  assert batch["speaker"].dtype == batch["gender"].dtype == np.int32
  grid = batch["speaker"].reshape(n, m)
  assert np.all(grid == grid[:, :1])  # Speaker-major: each speaker's M rows together.
  assert len(set(grid[:, 0])) == n  # N distinct speakers.
  np.testing.assert_array_equal(batch["gender"], pool.table.speaker_gender[batch["speaker"]])


def test_rows_come_from_the_labelled_speaker_and_follow_the_rules(pool):
  n, m = 6, 4  # Every speaker in every batch.
  fn = pool.reader(n, m, seed=3)
  names = pool.table.speakers
  used_short = 0
  for step in range(25):
    rows = decode(pool, fn(step))
    for group in np.array(rows, dtype=np.int64).reshape(n, m, 3):
      speaker = names[group[0, 0]]
      utts, starts = group[:, 1], group[:, 2]
      count = len(SPEAKERS[speaker][1])
      if count >= m:
        assert len(set(utts)) == m, (speaker, utts)  # M distinct utterances.
      else:
        assert len(set(utts)) == count  # All of them, reused in turn.
      if count == 1:
        assert len(set(starts)) == m, (speaker, starts)  # M different windows.
      # Reused utterances take different windows.
      pairs = list(zip(utts, starts))
      for u in set(utts):
        if pool.lengths[u] - CROP + 1 >= m:
          assert len({p for p in pairs if p[0] == u}) == sum(utts == u)
      for u, start in pairs:
        if pool.lengths[u] < CROP:
          used_short += 1
          assert start == 0  # Wrap-around: the utterance repeated from its start.
        else:
          assert start + CROP <= pool.lengths[u]  # Fully inside the utterance.
  assert used_short > 0


def test_short_utterance_wraps_around(pool):
  (short,) = np.flatnonzero(pool.lengths == SHORT)
  batch = pool.reader(6, 4, seed=0)(0)
  rows = [r for r in batch["features"] if r[0, 1] == short]
  assert rows  # "few" has 3 < M utterances: every one is used.
  utterance = pool.records[short]["features"]
  expected = np.concatenate([utterance, utterance])[:CROP]
  for row in rows:
    np.testing.assert_array_equal(row, expected)


def test_deterministic_under_seed_and_step(pool):
  a, b, c = pool.reader(4, 3, seed=7), pool.reader(4, 3, seed=7), pool.reader(4, 3, seed=8)
  for step in (0, 1, 5):
    x, y, z = a(step), b(step), c(step)
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])
    assert not np.array_equal(x["features"], z["features"])
  assert not np.array_equal(a(0)["features"], a(1)["features"])


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_at_step_k_matches_a_fresh_run_on_threads_and_processes(pool, workers):
  k = 3
  fresh = batches.make_batches(pool.reader(4, 3, seed=5), 0, workers=workers)
  fresh = [next(fresh) for _ in range(k + 2)]
  resumed = batches.make_batches(pool.reader(4, 3, seed=5), start_step=k, workers=workers)
  resumed = [next(resumed) for _ in range(2)]
  for i in range(2):
    for key in fresh[k + i]:
      np.testing.assert_array_equal(fresh[k + i][key], resumed[i][key])
  np.testing.assert_array_equal(fresh[k]["features"], pool.reader(4, 3, seed=5)(k)["features"])


@pytest.mark.parametrize("n, m, hosts", [(4, 3, 2), (6, 4, 2), (6, 2, 3)])
def test_per_host_slices_partition_the_global_batch(pool, n, m, hosts):
  single = pool.reader(n, m, seed=11)
  parts = [pool.reader(n, m, seed=11, process_index=i, process_count=hosts)
           for i in range(hosts)]
  for step in (0, 4):
    whole = single(step)
    slices = [p(step) for p in parts]
    speaker_sets = [set(s["speaker"]) for s in slices]
    for i in range(hosts):
      assert len(slices[i]["speaker"]) == n // hosts * m
      for j in range(i):
        assert not speaker_sets[i] & speaker_sets[j]
    for key in whole:
      np.testing.assert_array_equal(np.concatenate([s[key] for s in slices]), whole[key])


def test_each_host_reads_only_its_own_rows(pool):
  reads = []

  class Counting(list):
    def __getitem__(self, i):
      reads.append(i)
      return list.__getitem__(self, i)

  shape = batches.BatchShape(6, 2, CROP, process_index=1, process_count=3)
  reader = batches.BatchReader(pool.table, [Counting(pool.records)], shape, seed=0)
  reader(0)
  assert len(reads) == 2 * 2  # 2 speakers x M = 2 rows, not the global 12.


def test_errors_for_impossible_batches(pool):
  with pytest.raises(ValueError, match="need 7 speakers"):
    pool.reader(7, 2, seed=0)
  with pytest.raises(ValueError, match="not divisible by 4"):
    pool.reader(6, 2, seed=0, process_count=4)
  with pytest.raises(ValueError, match="no utterances"):
    batches.TrainingTable.build([])


# --- Speaker splits -----------------------------------------------------------


def test_split_speakers_deterministic_disjoint_and_sized():
  speakers = [f"spk{i:03d}" for i in range(101)] * 2  # Duplicates are ignored.
  train, dev = input_pipeline.split_speakers(speakers, 0.1, seed=0)
  assert (train, dev) == input_pipeline.split_speakers(list(reversed(speakers)), 0.1, seed=0)
  assert len(dev) == round(0.1 * 101) and len(train) == 101 - len(dev)
  assert not set(train) & set(dev)
  assert sorted(train + dev) == sorted(set(speakers))
  assert train == sorted(train) and dev == sorted(dev)
  assert input_pipeline.split_speakers(speakers, 0.1, seed=1)[1] != dev
  assert input_pipeline.split_speakers(speakers, 0.0, seed=0) == (sorted(set(speakers)), [])
  assert len(input_pipeline.split_speakers(speakers, 0.5, seed=0)[1]) == round(0.5 * 101)


def test_split_speakers_explicit_dev_and_errors():
  speakers = ["a", "b", "c", "d"]
  assert input_pipeline.split_speakers(speakers, 0.9, seed=0, dev_speakers=["c", "a"]) == (
      ["b", "d"], ["a", "c"])
  with pytest.raises(ValueError, match="not in the corpus"):
    input_pipeline.split_speakers(speakers, 0.1, seed=0, dev_speakers=["z"])
  for bad in (1.0, -0.1):
    with pytest.raises(ValueError, match="dev_fraction"):
      input_pipeline.split_speakers(speakers, bad, seed=0)


def test_dev_speakers_never_appear_in_train_batches():
  names = sorted(SPEAKERS)
  train, dev = input_pipeline.split_speakers(names, 0.34, seed=2)
  assert len(dev) == 2
  train_pool = Pool({s: SPEAKERS[s] for s in train})
  assert train_pool.table.speakers == train
  fn = train_pool.reader(4, 2, seed=0)
  dev_codes = {names.index(s) for s in dev}
  for step in range(10):
    codes = {train.index(train_pool.record_speaker[int(u)])
             for u in np.unique(fn(step)["features"][:, :, 1])}
    assert not {names.index(train[c]) for c in codes} & dev_codes


# --- Speaker augmentation by speed perturbation --------------------------------------


def test_speed_perturbed_speakers_are_new_speakers_cropped_from_the_originals():
  rng = np.random.default_rng(0)
  lengths = [100, 161, 40]
  mels = [rng.normal(size=(n, 40)).astype(np.float32) for n in lengths]
  table = batches.TrainingTable.build(
      [(0, 0, "a", 1, 100), (0, 1, "a", 1, 161), (0, 2, "b", 0, 40)], (0.9, 1.0, 1.1))
  # Factor 1.0 is the original itself, so it adds nothing.
  assert table.speakers == ["a", "a~sp0.9", "a~sp1.1", "b", "b~sp0.9", "b~sp1.1"]
  assert table.speaker_gender.tolist() == [1, 1, 1, 0, 0, 0]
  assert table.num_frames.tolist() == lengths + [round(n / 0.9) for n in lengths] + [
      round(n / 1.1) for n in lengths]
  assert table.factor.tolist() == pytest.approx([1.0] * 3 + [0.9] * 3 + [1.1] * 3)
  # A crop of a sped-up utterance is the crop of the whole utterance sped up, wrapping.
  whole = features.speed_perturb(mels[1], 1.1)
  np.testing.assert_allclose(batches.crop(mels[1], 30, 50, 1.1), whole[30:80], atol=1e-5)
  wrapped = batches.crop(mels[2], 0, 50, 0.9)
  np.testing.assert_allclose(wrapped, np.resize(features.speed_perturb(mels[2], 0.9), (50, 40)),
                             atol=1e-5)


def test_speed_factors_bad_or_repeated():
  for bad, message in (((0.9, -1.0), "must be positive"), (("fast",), "must be numbers")):
    with pytest.raises(ValueError, match=f"data.speed_factors {message}"):
      batches.TrainingTable.build([(0, 0, "a", 0, 50)], bad)
  assert batches.TrainingTable.build([(0, 0, "a", 0, 50)], (1.1, 1.1)).speakers == ["a", "a~sp1.1"]


# --- Waveform crops and their augmentation --------------------------------------------


def wave_pool(tmp_path_factory=None):
  """A pool whose records also hold waveforms (1.2-3 s of noise-like 'speech' each)."""
  rng = np.random.default_rng(1)
  speakers = {f"s{i}": (i % 2, [int(rng.integers(120, 300)) for _ in range(3)]) for i in range(8)}
  pool = Pool(speakers)
  for record in pool.records:
    samples = len(record["features"]) * 160
    record["waveform"] = (rng.standard_normal(samples) * 3000).astype(np.int16)
  return pool


def augmenter(tmp_path):
  from hive import config as config_lib
  from hive.data import waveform_augment
  c = config_lib.wave_augment_config()
  c.enabled, c.cache_dir = True, str(tmp_path)
  c.reverb.simulated.count = 4  # A small bank: built in a second.
  c.babble.probability, c.noise.probability = 0.5, 0.3
  return waveform_augment.Augmenter(c)


def test_augmented_rows_do_not_depend_on_how_the_batch_is_split(tmp_path):
  pool, aug = wave_pool(), augmenter(tmp_path)

  def reader(index, count):
    shape = batches.BatchShape(4, 3, 40, index, count)
    return batches.BatchReader(pool.table, [pool.records], shape, 5, augmenter=aug)

  for step in (0, 3):
    whole = reader(0, 1)(step)
    parts = [reader(i, 2)(step) for i in range(2)]
    for key in whole:
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
    assert whole["features"].shape == (12, 40, 40) and np.all(np.isfinite(whole["features"]))
  # Resuming needs nothing but the step: a fresh reader gives the same batch.
  np.testing.assert_array_equal(reader(0, 1)(3)["features"], whole["features"])
  assert not np.array_equal(reader(0, 1)(4)["features"], whole["features"])


def test_babble_reads_other_voices_only():
  """Babble crops come from other speakers' utterances, never from the row's own voice nor its
  speed-perturbed copies; the bank is a function of (seed, step // BABBLE_REFRESH)."""
  pool = wave_pool()
  table = batches.TrainingTable.build(
      [(0, i, s, 0, len(r["features"])) for i, (s, r) in
       enumerate(zip(pool.record_speaker, pool.records))], (0.9,))
  reader = batches.BatchReader(table, [pool.records], batches.BatchShape(4, 2, 40), 0)
  bank = reader._babble_bank(0, 800)
  crops, voices = bank
  assert crops.shape == (batches.BABBLE_BANK, 800)
  np.testing.assert_array_equal(reader._babble_bank(batches.BABBLE_REFRESH - 1, 800)[0], crops)
  fresh = batches.BatchReader(table, [pool.records], batches.BatchShape(4, 2, 40), 0)
  np.testing.assert_array_equal(fresh._babble_bank(1, 800)[0], crops)  # Same in any process.
  assert not np.array_equal(reader._babble_bank(batches.BABBLE_REFRESH, 800)[0], crops)
  label = table.speakers.index("s3~sp0.9")
  own = table.speaker_voice[label]
  for seed in range(20):
    picked = reader.babble(bank, np.random.default_rng(seed), label, 5, 800)
    assert len(picked) == 5
    rows = [int(np.flatnonzero((crops == p).all(axis=1))[0]) for p in picked]
    assert own not in voices[rows] and len(set(voices[rows])) == 5


def test_wave_path_without_augmentation_is_the_log_mel_path(tmp_path):
  """With every augmentation probability at 0, log-mels of waveform crops (speed copies
  warped the same way) are the stored log-mels' crops, away from the crop edges (utterances
  longer than the crop: a wrapped-around crop joins samples here, frames there)."""
  from hive import config as config_lib
  from hive.data import waveform_augment
  rng = np.random.default_rng(3)
  records, utterances = [], []
  for i in range(12):
    wave = (rng.standard_normal(int(rng.integers(12000, 30000))) * 0.1).astype(np.float32)
    records.append({"features": features.log_mel(wave), "waveform": wave})
    utterances.append((0, i, f"s{i % 4}", 0, len(records[-1]["features"])))
  table = batches.TrainingTable.build(utterances, (0.9, 1.1))
  c = config_lib.wave_augment_config()
  for kind in ("reverb", "noise", "music", "babble", "telephone", "bandpass", "gain"):
    c[kind].probability = 0.0
  shape = batches.BatchShape(6, 2, 50)
  plain = batches.BatchReader(table, [records], shape, 1)(7)
  waves = batches.BatchReader(table, [records], shape, 1,
                              augmenter=waveform_augment.Augmenter(c))(7)
  np.testing.assert_array_equal(plain["speaker"], waves["speaker"])
  np.testing.assert_allclose(waves["features"][:, 3:-3], plain["features"][:, 3:-3], atol=2e-3)


def test_wave_crops_give_the_stored_log_mel_frames():
  """A crop of the waveform, turned into log-mels, is the stored log-mel's crop (away from
  the crop's edges, where the FFT window sees past it)."""
  rng = np.random.default_rng(2)
  wave = (rng.standard_normal(16000) * 0.1).astype(np.float32)
  mel = features.log_mel(wave)
  piece = batches.crop_wave(wave, 30 * 160, 50 * 160)
  cropped = features.log_mel_batch(piece[None])[0, :50]
  np.testing.assert_allclose(cropped[2:-2], mel[32:78], atol=1e-4)
  wrapped = batches.crop_wave((wave * 32768).astype(np.int16), 15000, 2000)
  np.testing.assert_allclose(wrapped, np.r_[wave[15000:], wave[:1000]], atol=1 / 32768)


def test_corpus_weights_set_each_corpus_share_of_the_batch():
  # Corpus 0: 40 speakers, corpus 1: 4 speakers; uniform draws would give corpus 1 ~9 %.
  utterances = [(0, i, f"a{i}", 0, 100) for i in range(40)] + [
      (1, i, f"b{i}", 1, 100) for i in range(4)]
  records = [[{"features": np.zeros((100, 3), np.float32)}] * 40] * 2
  shares = {}
  for weights in ((), (1, 1)):
    table = batches.TrainingTable.build(utterances, (), weights)
    reader = batches.BatchReader(table, records, batches.BatchShape(4, 1, 10), seed=0)
    labels = np.concatenate([reader(k)["speaker"] for k in range(300)])
    shares[weights] = np.mean([table.speakers[l].startswith("b") for l in labels])
  assert 0.05 < shares[()] < 0.14 and 0.42 < shares[(1, 1)] < 0.58
  with pytest.raises(ValueError, match="2 weights for 3 corpora"):
    batches.TrainingTable.build(utterances + [(2, 0, "c", 0, 100)], (), (1, 1))
  with pytest.raises(ValueError, match="non-negative"):
    batches.TrainingTable.build(utterances, (), (1, -1))
