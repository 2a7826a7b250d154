"""The unified embedding: GE2E + triplet + speaker-ID + gender, trained jointly.

python -m hive.main --config=configs/mtl.py --workdir=runs/mtl
Sized to finish in about six minutes on a 2-core CPU with the built-in synthetic
corpus (100 voices; dev EER about 20 % after 200 steps): a 3 x 128 LSTM, N=16 x
M=8 batches, noise and SpecAugment-style masking. For a real model point
`--config.data.root` at real data and raise `--config.train.steps` (and
`--config.model.lstm.hidden=256` for the GE2E paper's width).
"""

from hive.config import base_config


def get_config():
  c = base_config()
  c.loss.weights = dict(ge2e=1.0, triplet=1.0, speaker_id=1.0, gender=0.1)
  c.model.lstm.hidden = 128
  c.augment.enabled = True
  c.train.steps = 200
  c.train.eval_every = 50
  return c
