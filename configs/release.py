"""The release recipe: the unified (multi-task) embedding on both shared corpora.

python -m hive.main --config=configs/release.py --workdir=runs/release

Trains GE2E + triplet + speaker-ID + gender on ../shared/data/librispeech and
../shared/data/speechocean762 together, holding out a fixed, seeded 20 % of the
speakers of the merged set as dev (listed in the workdir's speakers.json; speaker
ids carry their corpus name). Encoder: the compact TDNN with attentive statistics
pooling, 256-d; noise and SpecAugment-style masking on. Sized for about an hour on
a 2-core CPU; raise train.steps on a GPU.
"""

import pathlib

from hive.config import base_config

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


def get_config():
  c = base_config()
  c.data.root = f"{SHARED / 'librispeech'},{SHARED / 'speechocean762'}"
  c.data.dev_fraction = 0.2
  c.data.split_seed = 0
  c.data.n_speakers, c.data.n_utterances = 24, 6
  c.data.dev_segments_per_speaker = 6
  c.model.encoder = "tdnn"
  c.model.embed_dim = 256
  c.loss.weights = dict(ge2e=1.0, triplet=1.0, speaker_id=1.0, gender=0.2)
  c.augment.enabled = True
  c.train.steps = 600
  c.train.learning_rate = 2e-3
  c.train.warmup_steps = 50
  c.train.eval_every = 100
  c.train.checkpoint_every = 100
  c.train.log_every = 25
  return c
