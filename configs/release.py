"""The release recipe: the unified (multi-task) embedding on both shared corpora.

python -m hive.main --config=configs/release.py --workdir=runs/release

Trains GE2E + triplet + speaker-ID + gender on ../shared/data/librispeech and
../shared/data/speechocean762 together, holding out a fixed, seeded 20 % of the
speakers of the merged set as dev (listed in the workdir's speakers.json; speaker
ids carry their corpus name). Encoder: the compact TDNN with attentive statistics
pooling, 128 channels, 256-d embedding; batches of 48 speakers x 3 utterances;
noise and SpecAugment-style masking on; every training speaker also sped up and
slowed down by 10 % as two new speakers (data.speed_factors: 301 speakers become
903); 7200 steps. 93 minutes on the 2-core dev CPU (0.77 s a step); raise
train.steps on a GPU. Run from the repository root: the data paths are relative
to it. When training ends, hive.main fits the training speakers' mean embedding
that every command subtracts (hive/centring.py; on the shipped model,
speechocean762 dev EER 6.8 % -> 5.9 %).

Speed-perturbed speakers, measured on release 2 against the same recipe without
them (3600 steps each, dev speakers): LibriSpeech 3-s segments EER 6.8 % -> 4.2 %,
speechocean762 9.6 % -> 10.1 % (25 speakers: within noise); merged dev windows
logged in training 11.9 % -> 11.2 %.

Batch shape, measured on the same recipe (3600 steps each, centred, dev speakers;
same 144 crops a step): N=48 x M=3 against release 2's 24 x 6 took speechocean762
EER 7.8 % -> 7.1 % and one-shot ID 79.6 % -> 84.0 %, LibriSpeech 3-s segments EER
4.5 % -> 3.7 % (ID 84.9 % -> 80.7 %: 5 of 119 trials); merged dev windows logged in
training 11.2 % -> 10.3 %. More speakers a batch give GE2E and triplet more
negatives to learn from.

Training length, measured on the same recipe (centred, dev speakers): 7200 steps
against release 3's 3600 took speechocean762 EER 7.1 % -> 5.9 % and one-shot ID
84.0 % -> 87.6 %, LibriSpeech 3-s segments EER 3.7 % -> 4.1 % (1 of 243 target
trials; ID 80.7 % -> 89.9 %); merged dev windows logged in training 10.3 % -> 9.8 %.

Chosen by a measured sweep at an equal ~7-minute CPU budget (same data, losses and
schedule; dev speakers of speechocean762, see pretrained/hive-mtl/MODEL_CARD.md):
TDNN 128 channels (330 steps) EER 13.4 %, TDNN 256 channels (150 steps) 17.4 %,
3x256 LSTM in bf16 (380 steps) far behind (merged dev EER 37.6 % against 16.2 %).
"""

from hive.config import base_config


def get_config():
  c = base_config()
  c.data.root = "../shared/data/librispeech,../shared/data/speechocean762"
  c.data.dev_fraction = 0.2
  c.data.split_seed = 0
  c.data.n_speakers, c.data.n_utterances = 48, 3
  c.data.speed_factors = (0.9, 1.1)
  c.model.encoder = "tdnn"
  c.model.embed_dim = 256
  c.model.tdnn.channels = 128
  c.loss.weights = dict(ge2e=1.0, triplet=1.0, speaker_id=1.0, gender=0.2)
  c.augment.enabled = True
  c.train.steps = 7200
  c.train.learning_rate = 2e-3
  c.train.warmup_steps = 100
  c.train.eval_every = 1200
  c.train.checkpoint_every = 300
  c.train.log_every = 50
  return c
