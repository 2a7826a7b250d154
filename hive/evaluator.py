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
  * num_speakers, num_utterances, seconds_of_audio, embed_seconds;
  * calibration {slope, offset, prior, source}: the logistic map of the cosine to a
    log-likelihood ratio (hive/scoring.py), fitted on these trials unless one is given
    (the model's: a test of how it transfers); cllr of its LLRs and min_cllr (the best
    monotonic map's, PAV), act_dcf: the cost of its Bayes decisions at p_target and
    act_dcf_threshold, the cosine where they switch;
  * far, far_threshold (the most accepting cosine threshold whose false-accept rate on
    these trials is at most `far`), far_false_accept, far_false_reject, and
    far_thresholds: [far, threshold, false-reject rate] along metrics.FAR_GRID;
  * open_set_*: open-set identification at far_threshold (metrics.open_set_identification:
    half the speakers enrolled, every other utterance a probe);
  * with `bootstrap` resamples: eer_ci, min_dcf_ci, identification_accuracy_ci (95 %,
    a bootstrap over speakers, metrics.speaker_bootstrap), bootstrap_resamples, ...;
  * with a `cohort`: asnorm_* (eer, min_dcf, their thresholds, cllr, min_cllr, act_dcf,
    identification_accuracy, far_threshold, far_thresholds, calibration) of AS-Norm
    scores, asnorm_top_k, asnorm_cohort_size; with the bootstrap too, their intervals and
    the paired intervals of the change from cosine scores (asnorm_eer_change_ci, ...).
Everything but the bootstrap and AS-Norm takes well under a second for 100k trials, so
training's periodic dev evaluation computes it too.
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
               centring_examples: Examples | None = None, hop_seconds: float = 0.01,
               far: float = 0.01, p_target: float = 0.01, bootstrap: int = 0, seed: int = 0,
               top_k: int = 100, calibration_prior: float = 0.5):
    """`centring_examples`: training utterances whose mean embedding, under the parameters
    being evaluated, centres the embeddings (as the training mean of a finished model
    does); without them, `run` centres with the `mean` it is given, if any. `far`: the
    target false-accept rate of far_threshold and the open-set rates; `p_target`: the
    prior of min_dcf and act_dcf; `bootstrap`: resamples of the speakers for confidence
    intervals (0: none), seeded by `seed`; `top_k`: AS-Norm's cohort size per side;
    `calibration_prior`: the prior the calibration is fitted at."""
    if not (utterances_per_speaker(examples.speakers) >= 2).any():
      raise ValueError("every speaker has a single utterance, so there is no same-speaker "
                       "trial; score segments instead (--segment_seconds)")
    if not 0 < far < 1 or not 0 < p_target < 1:
      raise ValueError(f"far and p_target must be in (0, 1), got {far} and {p_target}")
    if bootstrap < 0:
      raise ValueError(f"bootstrap resamples must be >= 0, got {bootstrap}")
    self.embedder = embedder
    self.examples = examples
    self.centring_examples = centring_examples
    self.hop_seconds = hop_seconds
    self.far, self.p_target = far, p_target
    self.bootstrap, self.seed, self.top_k = bootstrap, seed, top_k
    self.calibration_prior = calibration_prior

  def run(self, params, mean=None, cohort=None, calibration: dict | None = None) -> dict:
    """The numbers for `params`; the embeddings it scored are returned under '_embeddings'.
    `cohort` [C, D]: AS-Norm's cohort embeddings (made by this model, centred like the
    embeddings) adds the asnorm_* numbers; `calibration` ({"slope", "offset", ...}, e.g.
    the model's) is applied instead of one fitted on these trials."""
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
    report.update(metrics.verification(embeddings, examples.speakers, self.p_target))
    report.update(metrics.one_shot_identification(embeddings, examples.speakers,
                                                  examples.utterance_ids))
    # A calibration records which scores it maps ("cosine", or "asnorm": AS-Norm's).
    asnorm_calibration = None
    if calibration is not None and calibration.get("scores", "cosine") == "asnorm":
      if cohort is None:
        raise ValueError("an AS-Norm calibration needs the model's AS-Norm cohort")
      asnorm_calibration, calibration = calibration, None
    scores, labels = metrics.all_pairs_trials(embeddings, examples.speakers)
    report.update(score_report(scores, labels, self.far, self.p_target, calibration,
                               self.calibration_prior))
    report.update(metrics.open_set_identification(embeddings, examples.speakers,
                                                  examples.utterance_ids,
                                                  report["far_threshold"]))
    counts = samples = None
    if self.bootstrap:
      counts = metrics.resample_counts(report["num_speakers"], self.bootstrap, self.seed)
      samples = metrics.bootstrap_samples(metrics.cosine_matrix(embeddings), examples.speakers,
                                          examples.utterance_ids, counts, self.p_target)
      report.update({f"{k}_ci": metrics.percentile_interval(v) for k, v in samples.items()})
      report.update(bootstrap_resamples=self.bootstrap, bootstrap_seed=self.seed,
                    bootstrap_level=0.95)
    if cohort is not None:
      report.update(self.asnorm_report(embeddings, cohort, asnorm_calibration, counts,
                                       samples))
    labelled = examples.genders >= 0
    if labelled.any():
      female = p_female[labelled] > 0.5
      report["gender_accuracy"] = float(np.mean(female == (examples.genders[labelled] == 1)))
    else:
      report["gender_accuracy"] = None
    report["num_gender_labelled"] = int(labelled.sum())
    report["_embeddings"] = embeddings
    return report

  def asnorm_report(self, embeddings, cohort, calibration: dict | None = None, counts=None,
                    cosine_samples: dict | None = None) -> dict:
    """The verification and identification numbers of AS-Norm scores, prefixed asnorm_
    (`calibration`: one of AS-Norm scores to apply instead of fitting one). With the
    bootstrap's resample `counts` and the cosine scores' samples under them: their
    intervals (asnorm_eer_ci, ...) and the paired intervals of the change from cosine
    scoring (asnorm_eer_change_ci, ...: below 0 for EER and minDCF means AS-Norm wins)."""
    cohort = np.asarray(cohort)
    if cohort.ndim != 2 or cohort.shape[1] != np.shape(embeddings)[1]:
      raise ValueError(f"an AS-Norm cohort of {np.shape(embeddings)[1]}-d embeddings is "
                       f"needed, got shape {cohort.shape}")
    stats = scoring.asnorm_stats(metrics.cosine_matrix(embeddings, cohort), self.top_k)
    matrix = scoring.asnorm(metrics.cosine_matrix(embeddings), stats, stats)
    speakers = np.asarray(self.examples.speakers)
    i, j = np.triu_indices(len(speakers), k=1)
    scores, labels = matrix[i, j], speakers[i] == speakers[j]
    rate, rate_threshold = metrics.eer(scores, labels)
    dcf, dcf_threshold = metrics.min_dcf(scores, labels, self.p_target)
    numbers = {"eer": rate, "eer_threshold": rate_threshold, "min_dcf": dcf,
               "min_dcf_threshold": dcf_threshold}
    numbers.update(score_report(scores, labels, self.far, self.p_target, calibration,
                                self.calibration_prior))
    numbers.update(metrics.one_shot_identification_scores(matrix, speakers,
                                                          self.examples.utterance_ids))
    numbers.update({"top_k": min(self.top_k, len(cohort)), "cohort_size": len(cohort)})
    if counts is not None:
      samples = metrics.bootstrap_samples(matrix, speakers, self.examples.utterance_ids, counts,
                                          self.p_target)
      for key, values in samples.items():
        numbers[f"{key}_ci"] = metrics.percentile_interval(values)
        numbers[f"{key}_change_ci"] = (None if values is None else metrics.percentile_interval(
            values - cosine_samples[key]))
    return {f"asnorm_{k}": v for k, v in numbers.items()}


def score_report(scores, labels, far: float = 0.01, p_target: float = 0.01,
                 calibration: dict | None = None, calibration_prior: float = 0.5) -> dict:
  """Calibration and operating points of scored trials (see the module's docstring):
  calibration, cllr, min_cllr, act_dcf, act_dcf_threshold, far, far_threshold,
  far_false_accept, far_false_reject, far_thresholds. Without a `calibration`, one is
  fitted at `calibration_prior` (0.5 minimises Cllr; p_target favours act_dcf)."""
  if calibration is None:
    slope, offset = scoring.fit_calibration(scores, labels, calibration_prior)
    calibration = {"slope": slope, "offset": offset, "prior": calibration_prior,
                   "source": "fitted on these trials"}
  llrs = scoring.to_llr(scores, calibration["slope"], calibration["offset"])
  decide = scoring.bayes_threshold(p_target)
  threshold, false_accept, false_reject = metrics.threshold_at_far(scores, labels, far)
  kept = {k: calibration[k] for k in ("slope", "offset", "prior", "source") if k in calibration}
  return {"calibration": kept, "cllr": metrics.cllr(llrs, labels),
          "min_cllr": metrics.min_cllr(scores, labels),
          "act_dcf": metrics.detection_cost(llrs, labels, decide, p_target),
          # The cosine where the calibrated decision switches (none when the map falls).
          "act_dcf_threshold": (scoring.score_at_llr(decide, calibration["slope"],
                                                     calibration["offset"])
                                if calibration["slope"] > 0 else None),
          "p_target": p_target, "far": far, "far_threshold": threshold,
          "far_false_accept": false_accept, "far_false_reject": false_reject,
          "far_thresholds": metrics.far_table(scores, labels)}


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
