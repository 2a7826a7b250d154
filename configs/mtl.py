"""The unified embedding: GE2E + triplet + speaker-ID + gender, trained jointly.

python -m hive.main --config=configs/mtl.py --workdir=/tmp/mtl
Defaults are sized to finish in a few minutes on a 2-core CPU with the built-in
synthetic corpus; point `--config.data.root` at real data and raise
`--config.train.steps` for a real model.
"""

from hive.config import base_config


def get_config():
  c = base_config()
  c.loss.weights = dict(ge2e=1.0, triplet=1.0, speaker_id=1.0, gender=0.1)
  return c
