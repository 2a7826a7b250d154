"""Evaluates a trained model on a corpus: `python -m hive.evaluate --workdir=DIR --data=PATH`.

Every utterance of every speaker under PATH (LibriSpeech layout or Kaldi dir)
is embedded (centred when the model has a training mean embedding, see
hive/centring.py, as every hive command does); the report (JSON) holds:
  * eer, min_dcf (p_target 0.01) and their thresholds over all pairs of
    utterances, cosine scoring; num_trials; a threshold is null when its best
    operating point accepts no trial (+inf, which JSON cannot hold);
  * identification_accuracy: one-shot closed-set identification, each speaker
    enrolled with its first utterance (sorted ids), every other utterance
    assigned to the most similar enrolled speaker;
  * gender_accuracy from the gender head where labels exist (else null);
  * num_speakers, num_utterances, seconds_of_audio, embed_seconds;
  * the model: workdir, checkpoint_step and centring (the training mean's digest).
`--split=dev` keeps only the workdir's held-out dev speakers. `--plots=DIR`
adds a DET curve and a 2-D map of the embeddings (PNG). `--segment_seconds=S`
scores consecutive S-second segments instead of whole utterances: for corpora
with one utterance per speaker (most of the shared LibriSpeech sample), where
same-speaker trials then come from one recording, an easier task.
"""

from __future__ import annotations

import json
import math
import pathlib
import sys
import time

import tensorflow as tf

tf.config.set_visible_devices([], "GPU")  # TF only reads the prepared features.

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from hive import centring, checkpoint, logs, metrics  # noqa: E402
from hive.data import builder as builder_lib  # noqa: E402
from hive.data import readers  # noqa: E402
from hive.encoder import Encoder, use_compilation_cache  # noqa: E402


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defined only when run as a program, so importing several hive commands in
  one process (tests, notebooks) does not clash on shared flag names."""
  flags.DEFINE_string("workdir", None, "Training workdir (or pretrained/hive-mtl).")
  flags.DEFINE_string("data", None, "Corpus root: LibriSpeech layout or Kaldi data dir.")
  flags.DEFINE_string("out", None, "Where to write the JSON report (default: stdout only).")
  flags.DEFINE_enum("split", "all", ["all", "dev", "train"],
                             "Speakers to keep: all, or the workdir's dev / train speakers.")
  flags.DEFINE_string("plots", None, "Directory for det.png and embeddings.png.")
  flags.DEFINE_string("data_dir", None, "TFDS cache for the prepared features.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
  flags.DEFINE_float("segment_seconds", 0.0,
                     "Score S-second segments of each utterance instead of whole ones (0: off).")


def select_split(examples: builder_lib.Examples, root, workdir, split: str):
  """Keeps the workdir's dev or train speakers (names may carry a corpus prefix)."""
  if split == "all":
    return examples
  wanted = set(checkpoint.load_speakers(workdir)[split])
  prefix = pathlib.Path(root).resolve().name + "/"
  keep = [s for s in set(examples.speakers) if s in wanted or prefix + s in wanted]
  if not keep:
    raise ValueError(f"none of the workdir's {split} speakers are in {root}")
  return examples.select_speakers(keep)


def utterances_per_speaker(speakers) -> np.ndarray:
  return np.unique(np.asarray(speakers), return_counts=True)[1]


def auto_segment_seconds(speakers, seconds: float = 3.0) -> float:
  """`seconds` when fewer than half of the speakers have two or more utterances, else 0
  (whole utterances). The benchmarks' rule for choosing segment scoring."""
  counts = utterances_per_speaker(speakers)
  return seconds if (counts >= 2).sum() < len(counts) / 2 else 0.0


def evaluate(encoder: Encoder, examples: builder_lib.Examples, hop_seconds: float = 0.01) -> dict:
  """The report's numbers for prepared examples (embeddings returned under '_embeddings')."""
  if not (utterances_per_speaker(examples.speakers) >= 2).any():
    raise ValueError("every speaker has a single utterance, so there is no same-speaker "
                     "trial; score segments instead (--segment_seconds)")
  started = time.time()
  embeddings, p_female = encoder.embed_features(examples.features, with_gender=True)
  embed_seconds = time.time() - started
  report = {"num_speakers": len(set(examples.speakers)),
            "num_utterances": len(examples.utterance_ids),
            "seconds_of_audio": round(float(np.sum(examples.num_frames)) * hop_seconds, 2),
            "embed_seconds": round(embed_seconds, 3)}
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


def plot_det(scores, labels, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from scipy.stats import norm
  fpr, fnr, _ = metrics.roc(scores, labels)
  clip = lambda x: np.clip(x, 1e-4, 1 - 1e-4)
  fig, ax = plt.subplots(figsize=(5, 5))
  ax.plot(norm.ppf(clip(fpr)), norm.ppf(clip(fnr)))
  ticks = [0.001, 0.01, 0.05, 0.2, 0.5]
  ax.set_xticks(norm.ppf(ticks), [f"{t:.1%}" for t in ticks])
  ax.set_yticks(norm.ppf(ticks), [f"{t:.1%}" for t in ticks])
  ax.plot([-4, 4], [-4, 4], ":", color="grey")
  ax.set(xlim=norm.ppf([1e-3, 0.6]), ylim=norm.ppf([1e-3, 0.6]),
         xlabel="false acceptance rate", ylabel="false rejection rate", title="DET curve")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_embeddings(embeddings, speakers, genders, path):
  """2-D t-SNE map (PCA first), colour = speaker, marker = gender."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from sklearn.decomposition import PCA
  from sklearn.manifold import TSNE
  x = PCA(min(30, embeddings.shape[1], len(embeddings))).fit_transform(embeddings)
  if len(x) > 5:
    x = TSNE(2, init="pca", perplexity=min(30, len(x) - 1), random_state=0).fit_transform(x)
  names = sorted(set(speakers))
  colour = np.array([names.index(s) for s in speakers])
  fig, ax = plt.subplots(figsize=(6, 6))
  for code, marker, label in ((0, "o", "male"), (1, "^", "female"), (-1, "x", "unknown")):
    rows = np.asarray(genders) == code
    if rows.any():
      ax.scatter(x[rows, 0], x[rows, 1], c=colour[rows], cmap="tab20", marker=marker, s=12,
                 vmin=0, vmax=max(len(names) - 1, 1), label=label)
  ax.legend(loc="best", fontsize=8)
  ax.set(title=f"{len(names)} speakers (colour) and gender (marker)", xticks=[], yticks=[])
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def strict_json(report: dict) -> dict:
  """Non-finite numbers (min_dcf_threshold is +inf when accepting nothing is cheapest) as
  null: json.dumps would write `Infinity`, which strict JSON parsers reject."""
  return {k: None if isinstance(v, float) and not math.isfinite(v) else v
          for k, v in report.items()}


def main(argv):
  del argv
  logs.quiet_libraries()
  if not FLAGS.workdir or not FLAGS.data:
    raise app.UsageError("--workdir and --data are required")
  if FLAGS.segment_seconds < 0:
    raise app.UsageError(f"--segment_seconds must be >= 0, got {FLAGS.segment_seconds}")
  use_compilation_cache()
  try:
    encoder = Encoder.from_workdir(FLAGS.workdir, FLAGS.step)
    builder, prepared = builder_lib.prepare(FLAGS.data, FLAGS.data_dir, encoder.feature_config)
    examples = select_split(builder_lib.load_examples(builder), FLAGS.data, FLAGS.workdir,
                            FLAGS.split)
    if FLAGS.segment_seconds > 0:
      examples = examples.cut_segments(
          round(FLAGS.segment_seconds * 1000 / encoder.feature_config.hop_ms))
    report = evaluate(encoder, examples, encoder.feature_config.hop_ms / 1000)
  except (FileNotFoundError, ValueError, readers.CorpusError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  embeddings = report.pop("_embeddings")
  report.update({"workdir": str(FLAGS.workdir), "checkpoint_step": encoder.step,
                 "centring": centring.digest(encoder.embedding_mean),
                 "data": str(FLAGS.data), "split": FLAGS.split,
                 "segment_seconds": FLAGS.segment_seconds or None,
                 "skipped_files": len(prepared.skips)})
  if FLAGS.plots:
    plots = pathlib.Path(FLAGS.plots)
    plots.mkdir(parents=True, exist_ok=True)
    plot_det(*metrics.all_pairs_trials(embeddings, examples.speakers), plots / "det.png")
    plot_embeddings(embeddings, examples.speakers, examples.genders, plots / "embeddings.png")
    report["plots"] = [str(plots / "det.png"), str(plots / "embeddings.png")]
  report = strict_json(report)
  text = json.dumps(report, indent=1, allow_nan=False)
  if FLAGS.out:
    pathlib.Path(FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(FLAGS.out).write_text(text + "\n")
  print(json.dumps(report, allow_nan=False))


if __name__ == "__main__":
  define_flags()
  app.run(main)
