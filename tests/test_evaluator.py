"""One evaluator for training and hive.evaluate: the same numbers for the same model."""

import ml_collections
import numpy as np
import pytest

from hive import evaluate, evaluator as evaluator_lib, scoring
from hive.data.examples import Examples
from hive.encoder import Encoder


def examples_of(lengths_by_speaker):
  """Examples whose frames encode (speaker, utterance) so selections can be read back."""
  ids, speakers, frames = [], [], []
  for s, lengths in sorted(lengths_by_speaker.items()):
    for u, n in enumerate(lengths):
      ids.append(f"{s}-{u}")
      speakers.append(s)
      frames.append(np.full((n, 2), u, np.float32))
  return Examples(ids, speakers, np.zeros(len(ids), np.int32),
                  np.array([len(f) for f in frames], np.int32), frames)


def test_first_per_speaker_and_single_utterance_segments():
  ex = examples_of({"a": [5, 5, 5], "b": [7]})
  first = ex.first_per_speaker(2)
  assert first.utterance_ids == ["a-0", "a-1", "b-0"]
  assert ex.first_per_speaker(0).utterance_ids == ex.utterance_ids
  cut = first.cut_segments(3, single_utterance_only=True)
  # a has two utterances: whole; b has one: cut into 3 + 4 (the tail joins the last).
  assert cut.utterance_ids == ["a-0", "a-1", "b-0#0", "b-0#1"]
  assert list(cut.num_frames) == [5, 5, 3, 4]


def test_training_evaluation_is_hive_evaluate(tiny_encoder, tiny_examples):
  encoder, corpus = tiny_encoder, tiny_examples
  """With the centring mean fitted on the same training utterances, the training evaluator
  and hive.evaluate give the same report for the same parameters."""
  speakers = sorted(set(corpus.speakers))
  dev, train = corpus.select_speakers(speakers[:4]), corpus.select_speakers(speakers[4:])
  config = ml_collections.ConfigDict(dict(utterances_per_speaker=0, segment_seconds=0.0,
                                          centring_utterances=10_000))
  during_training = evaluator_lib.training_evaluator(encoder.embedder, dev, train, config)
  report = during_training.run(encoder.params)
  mean = scoring.fit_mean(encoder.embedder.embeddings(encoder.params, train.features))
  centred = Encoder(encoder.config, encoder.params, encoder.step, embedding_mean=mean)
  standalone = evaluate.evaluate(centred, dev)
  for key in ("eer", "min_dcf", "identification_accuracy", "gender_accuracy", "num_trials"):
    assert report[key] == standalone[key], key
  np.testing.assert_allclose(report["_embeddings"], standalone["_embeddings"], atol=1e-6)


def test_training_evaluator_without_same_speaker_trials_is_none(tiny_encoder, tiny_examples):
  encoder, corpus = tiny_encoder, tiny_examples
  one_each = corpus.first_per_speaker(1)
  config = ml_collections.ConfigDict(dict(utterances_per_speaker=1, segment_seconds=0.0,
                                          centring_utterances=0))
  assert evaluator_lib.training_evaluator(encoder.embedder, one_each, one_each, config) is None
  with pytest.raises(ValueError, match="no same-speaker trial"):
    evaluator_lib.VerificationEvaluator(encoder.embedder, one_each)
