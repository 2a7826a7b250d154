"""The shipped model: present, small, loadable with no download, and better than chance on
speakers it never saw."""

import logging

import numpy as np
import pytest

from hive import checkpoint, metrics, voiceid, workdir as workdir_lib
from hive.data import readers
from hive.encoder import PRETRAINED_DIR, Encoder


def test_shipped_model_is_complete_and_small(caplog):
  assert (PRETRAINED_DIR / "MODEL_CARD.md").is_file()
  files = [f for f in PRETRAINED_DIR.rglob("*") if f.is_file()]
  assert sum(f.stat().st_size for f in files) <= 20 * 2**20
  speakers = workdir_lib.load_speakers(PRETRAINED_DIR)
  assert not set(speakers["train"]) & set(speakers["dev"])  # Speaker-disjoint.
  with caplog.at_level(logging.WARNING):
    enc = Encoder.pretrained()
  assert not caplog.records, "loading a model must not log warnings"  # Library use is quiet.
  assert enc.step == workdir_lib.load_config(PRETRAINED_DIR).train.steps  # The finished run.
  assert enc.embedding_mean is not None  # Centred embeddings (hive/centring.py).
  # Its calibrated threshold applies to it (written for this step and mean).
  assert voiceid.model_threshold(enc) == (0.56, "model: manual")


def test_shipped_model_separates_held_out_speakers(shared_data):
  """Six dev speakers of speechocean762 (72 utterances): far better than chance (50 %)."""
  enc = Encoder.pretrained()
  dev = set(workdir_lib.load_speakers(PRETRAINED_DIR)["dev"])
  corpus = readers.read_corpus(shared_data / "speechocean762")
  utts = sorted((u for u in corpus.utterances if f"speechocean762/{u.speaker}" in dev),
                key=lambda u: (u.speaker, u.id))
  speakers = sorted({u.speaker for u in utts})[:6]
  utts = [u for u in utts if u.speaker in speakers]
  assert len(utts) == 72
  embeddings = enc.embed_many([u.path for u in utts])
  np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
  report = metrics.verification(embeddings, [u.speaker for u in utts])
  assert report["eer"] < 0.2
