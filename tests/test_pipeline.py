"""The N x M batch pipeline, speaker splits and fixed evaluation segments.

Every frame of the fixture pool is a code [speaker, utterance, frame index], so
each cropped row can be decoded back to where it came from.
"""

import numpy as np
import pytest

from hive import features
from hive.data import batches, examples as examples_lib, input_pipeline

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


def make_examples(speakers=SPEAKERS):
  """Examples sorted by utterance id (as `load_examples` returns them)."""
  names = sorted(speakers)
  rows = sorted((f"{s}-{u:03d}", s, speakers[s][0], n)
                for s in names for u, n in enumerate(speakers[s][1]))
  feats = []
  for index, (_, speaker, _, n) in enumerate(rows):
    f = np.empty((n, 3), np.float32)
    f[:, 0] = names.index(speaker)
    f[:, 1] = index
    f[:, 2] = np.arange(n)
    feats.append(f)
  return examples_lib.Examples(
      utterance_ids=[r[0] for r in rows], speakers=[r[1] for r in rows],
      genders=np.array([r[2] for r in rows], np.int32),
      num_frames=np.array([r[3] for r in rows], np.int32), features=feats)


@pytest.fixture(scope="module")
def pool():
  return batches.FramePool.from_examples(make_examples())


def as_numpy(batch):
  return {k: np.asarray(v) for k, v in batch.items()}


def decode(pool, batch):
  """[(speaker, utterance, start frame)] per row, checking each row is one window."""
  out = []
  for row, label in zip(batch["features"], batch["speaker"]):
    speaker, utt = int(row[0, 0]), int(row[0, 1])
    assert np.all(row[:, 0] == speaker) and np.all(row[:, 1] == utt)
    assert speaker == label == pool.utterance_speaker[utt]
    length = pool.lengths[utt]
    start = int(row[0, 2])
    np.testing.assert_array_equal(row[:, 2], (start + np.arange(len(row))) % length)
    out.append((speaker, utt, start))
  return out


def test_pool_layout(pool):
  assert pool.speakers == sorted(SPEAKERS)
  assert pool.num_speakers == 6
  assert pool.frames.shape == (sum(sum(v[1]) for v in SPEAKERS.values()), 3)
  assert list(pool.speaker_gender) == [SPEAKERS[s][0] for s in pool.speakers]
  table = pool.speaker_utterances()
  assert table.shape == (6, 20)
  for s, name in enumerate(pool.speakers):
    own = table[s][table[s] >= 0]
    assert len(own) == len(SPEAKERS[name][1])
    assert all(pool.utterance_ids[u].startswith(name + "-") for u in own)


def test_batch_shapes_dtypes_and_speaker_major_rows(pool):
  n, m = 4, 3
  batch = as_numpy(batches.make_batch_fn(pool, n, m, CROP, seed=0)(0))
  assert batch["features"].shape == (n * m, CROP, 3)
  assert batch["features"].dtype == np.float32
  assert batch["speaker"].shape == batch["gender"].shape == (n * m,)
  assert batch["speaker"].dtype == batch["gender"].dtype == np.int32
  grid = batch["speaker"].reshape(n, m)
  assert np.all(grid == grid[:, :1])  # Speaker-major: each speaker's M rows together.
  assert len(set(grid[:, 0])) == n  # N distinct speakers.
  np.testing.assert_array_equal(batch["gender"], pool.speaker_gender[batch["speaker"]])


def test_rows_come_from_the_labelled_speaker_and_follow_the_rules(pool):
  n, m = 6, 4  # Every speaker in every batch.
  fn = batches.make_batch_fn(pool, n, m, CROP, seed=3)
  names = pool.speakers
  used_short = 0
  for step in range(25):
    batch = as_numpy(fn(step))
    rows = decode(pool, batch)
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
  short = [u for u in range(len(pool.lengths)) if pool.lengths[u] == SHORT]
  assert len(short) == 1
  fn = batches.make_batch_fn(pool, 6, 4, CROP, seed=0)
  batch = as_numpy(fn(0))
  rows = [r for r in batch["features"] if r[0, 1] == short[0]]
  assert rows  # "few" has 3 < M utterances: every one is used.
  utterance = pool.frames[pool.starts[short[0]]:pool.starts[short[0]] + SHORT]
  expected = np.concatenate([utterance, utterance])[:CROP]
  for row in rows:
    np.testing.assert_array_equal(row, expected)


def test_deterministic_under_seed_and_step(pool):
  a = batches.make_batch_fn(pool, 4, 3, CROP, seed=7)
  b = batches.make_batch_fn(pool, 4, 3, CROP, seed=7)
  c = batches.make_batch_fn(pool, 4, 3, CROP, seed=8)
  for step in (0, 1, 5):
    x, y, z = as_numpy(a(step)), as_numpy(b(step)), as_numpy(c(step))
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])
    assert not np.array_equal(x["features"], z["features"])
  assert not np.array_equal(as_numpy(a(0))["features"], as_numpy(a(1))["features"])


def test_resume_at_step_k_matches_fresh_dataset(pool):
  k = 3
  fresh = list(batches.make_dataset(pool, 4, 3, CROP, seed=5).take(k + 2).as_numpy_iterator())
  resumed = list(batches.make_dataset(pool, 4, 3, CROP, seed=5, start_step=k)
                 .take(2).as_numpy_iterator())
  for i in range(2):
    for key in fresh[k + i]:
      np.testing.assert_array_equal(fresh[k + i][key], resumed[i][key])
  fn = batches.make_batch_fn(pool, 4, 3, CROP, seed=5)
  np.testing.assert_array_equal(fresh[k]["features"], as_numpy(fn(k))["features"])


@pytest.mark.parametrize("n, m, hosts", [(4, 3, 2), (6, 4, 2), (6, 2, 3)])
def test_per_host_slices_partition_the_global_batch(pool, n, m, hosts):
  single = batches.make_batch_fn(pool, n, m, CROP, seed=11)
  parts = [batches.make_batch_fn(pool, n, m, CROP, seed=11, process_index=i,
                                  process_count=hosts) for i in range(hosts)]
  for step in (0, 4):
    whole = as_numpy(single(step))
    slices = [as_numpy(p(step)) for p in parts]
    speaker_sets = [set(s["speaker"]) for s in slices]
    for i in range(hosts):
      assert len(slices[i]["speaker"]) == n // hosts * m
      for j in range(i):
        assert not speaker_sets[i] & speaker_sets[j]
    for key in whole:
      np.testing.assert_array_equal(np.concatenate([s[key] for s in slices]), whole[key])


def test_errors_for_impossible_batches(pool):
  with pytest.raises(ValueError, match="need 7 speakers"):
    batches.make_batch_fn(pool, 7, 2, CROP, seed=0)
  with pytest.raises(ValueError, match="not divisible by 4"):
    batches.make_batch_fn(pool, 6, 2, CROP, seed=0, process_count=4)
  with pytest.raises(ValueError, match="no utterances"):
    batches.FramePool.from_examples(make_examples({}))


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
  examples = make_examples()
  names = sorted(SPEAKERS)
  train, dev = input_pipeline.split_speakers(examples.speakers, 0.34, seed=2)
  assert len(dev) == 2
  train_pool = batches.FramePool.from_examples(examples.select_speakers(train))
  assert train_pool.speakers == train
  fn = batches.make_batch_fn(train_pool, 4, 2, CROP, seed=0)
  dev_codes = {names.index(s) for s in dev}
  for step in range(10):
    features = as_numpy(fn(step))["features"]
    assert not set(np.unique(features[:, :, 0]).astype(int)) & dev_codes


# --- Speaker augmentation by speed perturbation --------------------------------------


def test_speed_perturbed_speakers_are_new_speakers_with_rescaled_utterances():
  rng = np.random.default_rng(0)
  lengths = [100, 161, 40]
  examples = examples_lib.Examples(
      ["a-1", "a-2", "b-1"], ["a", "a", "b"], np.array([1, 1, 0], np.int32),
      np.array(lengths, np.int32), [rng.normal(size=(n, 40)).astype(np.float32) for n in lengths])
  out = examples_lib.with_speed_perturbed_speakers(examples, (0.9, 1.0, 1.1), features.FeatureConfig())
  # Factor 1.0 is the original itself, so it adds nothing.
  assert out.speakers == ["a", "a", "b", "a~sp0.9", "a~sp0.9", "b~sp0.9",
                          "a~sp1.1", "a~sp1.1", "b~sp1.1"]
  assert out.utterance_ids[3] == "a-1~sp0.9" and out.utterance_ids[-1] == "b-1~sp1.1"
  assert out.genders.tolist() == [1, 1, 0] * 3
  assert out.num_frames.tolist() == lengths + [round(n / 0.9) for n in lengths] + [
      round(n / 1.1) for n in lengths]
  assert [len(f) for f in out.features] == out.num_frames.tolist()
  for original, kept in zip(examples.features, out.features[:3]):
    np.testing.assert_array_equal(original, kept)
  np.testing.assert_allclose(out.features[6], features.speed_perturb(examples.features[0], 1.1))


def test_speed_factors_bad_or_repeated():
  examples = examples_lib.Examples(["a-1"], ["a"], np.array([0], np.int32), np.array([50], np.int32),
                              [np.zeros((50, 40), np.float32)])
  config = features.FeatureConfig()
  for bad, message in (((0.9, -1.0), "must be positive"), (("fast",), "must be numbers")):
    with pytest.raises(ValueError, match=f"data.speed_factors {message}"):
      examples_lib.with_speed_perturbed_speakers(examples, bad, config)
  out = examples_lib.with_speed_perturbed_speakers(examples, (1.1, 1.1), config)
  assert out.speakers == ["a", "a~sp1.1"]
