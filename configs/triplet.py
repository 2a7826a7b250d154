"""The one-shot seed: a 64-d embedding trained with triplets of group averages.

Anchors, positives and negatives are means of groups of 5 utterances of a
speaker (so M = 10 gives two groups per speaker), mined batch-hard.
python -m hive.main --config=configs/triplet.py --workdir=runs/triplet
"""

from hive.config import base_config


def get_config():
  c = base_config()
  c.model.embed_dim = 64
  c.data.n_utterances = 10
  c.loss.weights = dict(ge2e=0.0, triplet=1.0, speaker_id=0.0, gender=0.0)
  c.loss.triplet_group = 5
  c.loss.triplet_mining = "batch_hard"
  return c
