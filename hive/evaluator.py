"""The speaker-verification evaluator: one procedure, for `hive.evaluate` and for training.

In the style of big_vision's evaluators: build it once with the utterances to score, then
`run(params)` for any parameters of the model. Training calls it on the dev speakers every
`train.eval_every` steps (in a cheaper configuration, `config.eval`); `hive.evaluate` calls it
on a whole corpus with a trained model. Both embed whole utterances with `hive.Embedder`,
centre them with a training mean and compute the same numbers, so the EER logged in
training means what a user gets.

The numbers (all pairs of utterances, cosine scoring):
  * eer, min_dcf (p_target 0.01) and their thresholds; num_trials, num_target_trials;
  * identification_accuracy: one-shot closed-set identification, each speaker enrolled
    with its first utterance (sorted ids), every other utterance assigned to the most
    similar enrolled speaker;
  * gender_accuracy of the gender head where labels exist (else None), num_gender_labelled;
  * num_speakers, num_utterances, seconds_of_audio, embed_seconds.
"""

from __future__ import annotations

import time

import numpy as np

from hive import metrics, scoring
from hive.data.examples import Examples
from hive.encoder import Embedder


def utterances_per_speaker(speakers) -> np.ndarray:
  return np.unique(np.asarray(speakers), return_counts=True)[1]


class VerificationEvaluator:
  """Scores a fixed set of utterances with any parameters of one model."""

  def __init__(self, embedder: Embedder, examples: Examples,
               centring_examples: Examples | None = None, hop_seconds: float = 0.01):
    """`centring_examples`: training utterances whose mean embedding, under the parameters
    being evaluated, centres the embeddings (as the training mean of a finished model
    does); without them, `run` centres with the `mean` it is given, if any."""
    if not (utterances_per_speaker(examples.speakers) >= 2).any():
      raise ValueError("every speaker has a single utterance, so there is no same-speaker "
                       "trial; score segments instead (--segment_seconds)")
    self.embedder = embedder
    self.examples = examples
    self.centring_examples = centring_examples
    self.hop_seconds = hop_seconds

  def run(self, params, mean=None) -> dict:
    """The numbers for `params`; the embeddings it scored are returned under '_embeddings'."""
    started = time.time()
    raw = self.embedder.embeddings(params, self.examples.features)
    if self.centring_examples is not None:
      mean = scoring.fit_mean(self.embedder.embeddings(params, self.centring_examples.features))
    embeddings = raw if mean is None else scoring.centre(raw, mean)
    p_female = self.embedder.female_probability(params, raw)
    examples = self.examples
    report = {"num_speakers": len(set(examples.speakers)),
              "num_utterances": len(examples.utterance_ids),
              "seconds_of_audio": round(float(np.sum(examples.num_frames)) * self.hop_seconds, 2),
              "embed_seconds": round(time.time() - started, 3)}
    report.update(metrics.verification(embeddings, examples.speakers))
    report.update(metrics.one_shot_identification(embeddings, examples.speakers,
                                                  examples.utterance_ids))
    labelled = examples.genders >= 0
    if labelled.any():
      female = p_female[labelled] > 0.5
      report["gender_accuracy"] = float(np.mean(female == (examples.genders[labelled] == 1)))
    else:
      report["gender_accuracy"] = None
    report["num_gender_labelled"] = int(labelled.sum())
    report["_embeddings"] = embeddings
    return report


def training_evaluator(embedder: Embedder, dev: Examples, centring: Examples | None,
                       eval_config) -> VerificationEvaluator | None:
  """The evaluator training runs on its dev utterances (`config.eval`; the input pipeline
  read at most `utterances_per_speaker` of each of at most `max_speakers` dev speakers, and
  `centring_utterances` training utterances): single-utterance speakers are cut into
  `segment_seconds` segments, and the embeddings are centred with the training utterances'
  mean under the parameters being evaluated. None when there is no same-speaker trial."""
  frames = int(round(eval_config.segment_seconds / embedder.hop_seconds))
  if frames > 0:
    dev = dev.cut_segments(frames, single_utterance_only=True)
  if not (utterances_per_speaker(dev.speakers) >= 2).any():
    return None
  return VerificationEvaluator(embedder, dev, centring)
