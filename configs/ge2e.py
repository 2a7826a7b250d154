"""GE2E alone (Wan et al. 2018): the d-vector LSTM trained with the GE2E softmax loss.

python -m hive.main --config=configs/ge2e.py --workdir=runs/ge2e
The paper's shape is N=64 speakers x M=10 utterances; on a CPU the base N x M is used.
"""

from hive.config import base_config


def get_config():
  c = base_config()
  c.loss.weights = dict(ge2e=1.0, triplet=0.0, speaker_id=0.0, gender=0.0)
  c.train.learning_rate = 1e-3
  return c
