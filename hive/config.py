"""The base configuration every `configs/*.py` starts from; each field is explained here.

It is also the schema of a saved `config.json` (`from_dict`): a workdir saved by an older hive
gets today's defaults for the fields it lacks, so a new field must default to the old
behaviour, and a field that was removed is listed in `RETIRED_FIELDS`.
"""

from __future__ import annotations

from typing import Any, Mapping

import ml_collections

# Fields earlier versions wrote into config.json and that mean nothing today: ignored on load.
RETIRED_FIELDS = frozenset({
    "data.dev_segments_per_speaker",  # Dev windows; replaced by `eval` (whole utterances).
    "train.eval_batch_size",
})


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # Initialisation, batches and augmentation all derive from it.

  c.data = ml_collections.ConfigDict()
  c.data.root = ""  # Corpus root(s), comma-separated; empty: the built-in synthetic corpus.
  c.data.data_dir = ""  # TFDS cache; empty: $HIVE_CACHE/tfds or ~/.cache/hive/tfds.
  c.data.n_mels = 40
  c.data.trim_silence = False
  c.data.dev_fraction = 0.2  # Speakers held out for dev EER (speaker-disjoint).
  c.data.dev_speakers = ()  # Explicit dev speakers; overrides dev_fraction when given.
  # A file of dev speakers, one a line ('#' comments), like dev_speakers (which it joins).
  c.data.dev_speakers_file = ""
  c.data.split_seed = 0
  c.data.n_speakers = 16  # N: speakers per batch.
  c.data.n_utterances = 8  # M: utterances per speaker.
  c.data.crop_frames = 160  # 1.6 s crops.
  # Speaker augmentation: each training speaker also appears sped up / slowed down by
  # these factors, as a new speaker (e.g. (0.9, 1.1) triples the speakers). Dev untouched.
  c.data.speed_factors = ()
  # With several roots: the share of each batch's speakers each corpus gives, in expectation,
  # in the order of data.root (e.g. (1, 1, 1): a third each). Empty: every training speaker
  # is equally likely, so a corpus with many speakers fills most of every batch.
  c.data.corpus_weights = ()
  c.data.synthetic = ml_collections.ConfigDict(
      dict(num_speakers=100, utterances_per_speaker=6, seed=0))
  # Storage of the prepared records (hive/data/builder.py): the log-mel's precision
  # ("float16" halves the disk and reads), and the 16 kHz waveform as int16 beside it (four
  # times the log-mel's float16 size; waveform augmentation needs it).
  c.data.feature_dtype = "float32"
  c.data.store_waveform = False
  # Processes that read and crop batches ahead of the step (grain); 0: threads of the
  # training process.
  c.data.workers = 0

  c.model = ml_collections.ConfigDict()
  c.model.encoder = "lstm"  # "lstm" (GE2E d-vector), "rescnn" (Deep Speaker), "tdnn".
  c.model.embed_dim = 256
  c.model.speaker_head = "cosine"  # "cosine" (AM-softmax) or "linear".
  c.model.input_norm = True  # Per-utterance mean normalisation of the log-mel.
  c.model.dtype = "float32"  # "bfloat16" computes the encoder in bf16.
  c.model.lstm = ml_collections.ConfigDict(dict(hidden=256, layers=3))
  c.model.rescnn = ml_collections.ConfigDict(dict(channels=(32, 64, 128, 256), blocks_per_stage=1))
  c.model.tdnn = ml_collections.ConfigDict(dict(channels=256, dilations=(2, 3, 4)))

  c.loss = ml_collections.ConfigDict()
  c.loss.weights = ml_collections.ConfigDict(
      dict(ge2e=1.0, triplet=1.0, speaker_id=1.0, gender=0.1))  # 0 disables a term.
  c.loss.ge2e_kind = "softmax"  # "softmax" or "contrast".
  c.loss.ge2e_w_init = 10.0
  c.loss.ge2e_b_init = -5.0
  c.loss.triplet_margin = 0.3  # On cosine similarity.
  c.loss.triplet_mining = "batch_hard"  # "batch_hard" or "semi_hard".
  c.loss.triplet_group = 1  # >1: anchors/positives/negatives are means of this many utterances.
  c.loss.speaker_margin = 0.2  # AM-softmax margin (cosine head).
  c.loss.speaker_scale = 30.0  # AM-softmax scale (cosine head).

  # Augmentation of the log-mel batches inside the jitted step (hive/augment.py): noise in
  # the mel domain and SpecAugment-style masks.
  c.augment = ml_collections.ConfigDict(dict(
      enabled=False, noise_probability=0.5, snr_db=(5.0, 30.0),
      freq_masks=2, freq_mask_width=5, time_masks=2, time_mask_width=20))
  # Augmentation of the waveform crops in the input pipeline, before the log-mel (needs the
  # prepared records' waveforms: data.store_waveform is then implied).
  c.augment.wave = wave_augment_config()

  c.train = ml_collections.ConfigDict()
  c.train.steps = 300
  # Fine-tuning: a workdir (training run or export) whose latest model parameters start
  # this run (a new speaker-ID head if its speakers differ); optimiser and schedule afresh.
  c.train.init_from = ""
  c.train.learning_rate = 1e-3
  c.train.schedule = "cosine"  # "cosine" (with warm-up) or "constant".
  c.train.warmup_steps = 30
  c.train.final_lr_fraction = 0.05
  c.train.weight_decay = 1e-4
  c.train.grad_clip = 3.0  # Global-norm clipping, as in GE2E.
  c.train.loss_params_lr_scale = 0.01  # GE2E's w, b learn 100x slower.
  c.train.log_every = 10
  c.train.eval_every = 100
  c.train.checkpoint_every = 100
  c.train.keep_checkpoints = 3
  # The training mean embedding fitted when training ends (hive/centring.py): at most this
  # many training utterances, drawn with the seed (0: all).
  c.train.centring_utterances = 20000

  # Dev evaluation during training: the speaker-verification evaluator of `hive.evaluate`
  # (hive/evaluator.py), in a cheaper configuration, so the logged numbers mean the same.
  c.eval = ml_collections.ConfigDict()
  c.eval.utterances_per_speaker = 8  # At most this many per dev speaker (0: all).
  c.eval.max_speakers = 300  # At most this many dev speakers, drawn with the seed (0: all).
  # Speakers with a single utterance are scored on consecutive segments of this length, so
  # they have same-speaker trials (a corpus of one reading per speaker); 0: whole utterances.
  c.eval.segment_seconds = 3.0
  # Training utterances whose mean embedding centres the dev embeddings, as the training mean
  # that hive.main fits at the end does for every command (0: no centring).
  c.eval.centring_utterances = 500
  # Also score a corrupted copy of the dev utterances, as `hive.evaluate --degrade` does
  # (e.g. "telephone", "noise:5", "reverb", "telephone+noise:10"; logged as
  # dev_degraded_eer, ...); empty: none. The records then store waveforms.
  c.eval.degrade = ""
  return c


def wave_augment_config() -> ml_collections.ConfigDict:
  """`config.augment.wave`: augmentation of the training waveforms before the log-mel
  (hive/data/waveform_augment.py), every field explained."""
  c = ml_collections.ConfigDict()
  c.enabled = False  # The pipeline augments waveforms only when True.
  # MUSAN root: adds its noise/, music/ and speech/ folders to noise.dirs, music.dirs and
  # babble.dirs (each its own kind).
  c.musan_root = ""
  # Where the simulated RIR bank is cached; empty: $HIVE_CACHE/rirs or ~/.cache/hive/rirs.
  c.cache_dir = ""
  # Decoded source audio kept in memory, per process, all folders together (512 MB: 2.3 h).
  c.cache_mb = 512
  # Files up to this long are decoded whole (and cached); longer ones are read a segment at a
  # time, so long music or speech recordings are never decoded whole for 1.6 s of them.
  c.whole_file_seconds = 60.0

  # Additive sources. At most one per row: noise, music or babble, chosen with their
  # probabilities (which must sum to <= 1; the rest of the rows get none). SNR: speech power
  # (after reverberation) over the added source's power, over the whole crop, drawn uniformly.
  # Folders are searched recursively for .wav/.flac at any rate and channel count.
  c.noise = ml_collections.ConfigDict(dict(
      probability=0.2,
      snr_db=(0.0, 15.0),
      dirs=(),  # Empty: generated coloured noise (below) instead.
      # Generated noise: power ~ 1/f^x for x one of these per row (0 white, 1 pink, 2 brown),
      # cut at a random offset from a seeded 65 s bank per colour made once per process.
      colours=(0.0, 1.0, 2.0),
  ))
  c.music = ml_collections.ConfigDict(dict(
      probability=0.15,
      snr_db=(5.0, 15.0),
      dirs=(),  # Empty: no music (its share of rows gets no additive source).
  ))
  c.babble = ml_collections.ConfigDict(dict(
      probability=0.15,
      snr_db=(13.0, 20.0),
      speakers=(3, 7),  # How many utterances are summed (uniform, inclusive).
      # Empty: crops of other training speakers, read from the training corpus itself (never
      # the row's own speaker), each scaled to the same power before summing.
      dirs=(),
  ))

  c.reverb = ml_collections.ConfigDict(dict(
      probability=0.3,
      dirs=(),  # RIR recordings (WAV/FLAC); empty: the simulated bank below.
      # RIRs are cut this long after their direct path (the tail beyond is > 30 dB down for
      # RT60 <= 0.8 s); longer costs FFT time on every batch.
      max_seconds=0.5,
      simulated=ml_collections.ConfigDict(dict(
          count=200,  # RIRs in the bank (generated once, ~0.1 s each, then read from the cache).
          seed=0,
          room_m=((3.0, 10.0), (3.0, 10.0), (2.5, 4.0)),  # Shoebox length, width, height ranges.
          rt60_s=(0.2, 0.8),  # Target reverberation time (Sabine) -> wall absorption.
          # Image sources up to this reflection order (pyroomacoustics' own choice for long RT60
          # in small rooms takes seconds per RIR; beyond ~40 only the far tail changes).
          max_order=40,
          min_distance_m=0.5,  # Source-microphone distance at least this.
      )),
  ))

  c.telephone = ml_collections.ConfigDict(dict(
      probability=0.1,
      # One per row, uniformly, of: mulaw, alaw (G.711, nearly free), gsm (GSM 06.10: libsndfile
      # encodes one row at a time, ~2 ms a row), none.
      codecs=("mulaw", "alaw"),
      band_hz=(300.0, 3400.0),  # The G.712 telephone band (4th-order Butterworth at 8 kHz).
  ))
  c.bandpass = ml_collections.ConfigDict(dict(
      probability=0.2,
      low_hz=(50.0, 400.0),  # High-pass corner, log-uniform.
      high_hz=(3000.0, 7500.0),  # Low-pass corner, uniform.
      order=(1, 4),  # Butterworth magnitude order (uniform integer, inclusive).
      eq_bands=(0, 3),  # Number of Gaussian (in log-frequency) EQ bumps, uniform inclusive.
      eq_centre_hz=(100.0, 6000.0),  # Each bump's centre, log-uniform.
      eq_gain_db=6.0,  # Each bump's gain uniform in +-this.
      eq_width_octaves=(0.5, 2.0),  # Each bump's standard deviation, in octaves.
  ))
  c.gain = ml_collections.ConfigDict(dict(
      probability=0.3,
      db=(-6.0, 6.0),  # Uniform; the result is not clipped (float32 can exceed 1).
  ))
  return c


def from_dict(saved: Mapping[str, Any], where: str = "config") -> ml_collections.ConfigDict:
  """A saved config (e.g. a workdir's config.json) read through the schema: every field
  is checked against `base_config()`, missing ones get today's defaults, retired ones are
  dropped; an unknown field is an error naming `where`."""
  config = base_config()
  _update(config, saved, "", where)
  return config


def _update(config: ml_collections.ConfigDict, saved: Mapping[str, Any], prefix: str,
            where: str) -> None:
  for key, value in saved.items():
    name = f"{prefix}{key}"
    if name in RETIRED_FIELDS:
      continue
    if key not in config:
      raise ValueError(f"{where}: unknown config field {name!r} (written by another version "
                       "of hive?)")
    if isinstance(config[key], ml_collections.ConfigDict) and name != "loss.weights":
      if not isinstance(value, Mapping):
        raise ValueError(f"{where}: config field {name!r} must be a section, got {value!r}")
      _update(config[key], value, name + ".", where)
    elif name == "loss.weights":
      config[key] = ml_collections.ConfigDict(dict(value))  # Any subset of the loss terms.
    else:
      if isinstance(config[key], tuple) and isinstance(value, list):
        value = _tuples(value)  # JSON has lists only; nested tuples come back as lists.
      try:
        config[key] = value
      except TypeError as e:
        raise ValueError(f"{where}: config field {name!r}: {e}") from None


def _tuples(value):
  return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
