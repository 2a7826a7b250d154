"""The Python API: load a trained model and embed audio of any length.

    enc = hive.Encoder.from_workdir("runs/mtl")        # or hive.Encoder.pretrained()
    a, b = enc.embed("a.flac"), enc.embed("b.flac")
    enc.similarity(a, b)                               # cosine, in [-1, 1]

Embeddings are centred when the model has a training mean embedding
(hive/centring.py: written at the end of training, shipped with exports): the
mean is subtracted and the result renormalised, so cosine scores compare what
tells speakers apart. The gender head reads the model's own (uncentred) output.

Two ways to embed an utterance, chosen by the encoder:
  * "utterance" (encoders that take a frame mask, the TDNN): the whole
    utterance in one pass. Utterances are padded to a few bucketed lengths and
    embedded together; the mask makes padding invisible, so the result is the
    same as embedding each alone. Utterances over MAX_FRAMES are cut into
    consecutive pieces whose embeddings are averaged.
  * "windows" (the LSTM, the ResCNN): windows of the training crop length with
    50 % overlap (the last aligned to the end), all embedded together in jitted
    batches, each utterance's window embeddings averaged and renormalised (the
    GE2E d-vector recipe).
Either way an utterance shorter than the training crop is repeated end-to-end
to fill it, the same rule as the training crops.

`Embedder` is that procedure for any parameters (training's evaluator embeds the dev set
with the parameters of the step it evaluates); `Encoder` is an Embedder with the parameters
and centring mean of one trained model. This module never imports training code: a model is
loaded with its shapes (hive/models), its checkpoint (hive/checkpoint.py) and its workdir's
files (hive/workdir.py) alone.

Loading a model (`Encoder.from_workdir`, `Encoder.pretrained`) turns on JAX's persistent
compilation cache in hive's directory ($HIVE_CACHE/jax, default ~/.cache/hive/jax), as the
commands do, unless a directory is configured already (JAX_COMPILATION_CACHE_DIR or
`jax.config`): a new process then loads the programs an earlier one compiled instead of
compiling them again, which is most of the first embedding's time. Opt out with
`compilation_cache=False` (JAX's settings are left as they are) or, for every JAX program,
JAX_ENABLE_COMPILATION_CACHE=false.
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from hive import checkpoint, cli, features as features_lib, scoring, workdir as workdir_lib
from hive.data import audio
from hive.data.examples import consecutive_segments
from hive.models import SpeakerModel, abstract_params, create_model

PRETRAINED_DIR = pathlib.Path(__file__).resolve().parents[1] / "pretrained" / "hive-mtl"
BUCKETS = (16, 64, 256)  # Window-batch sizes: one compilation each, whatever the input.
# Whole-utterance mode: batch sizes (each batch is full; a group of 11 runs as 8 + 2 + 1),
# padded lengths 128 * 2**(k/4) frames (at most 19 % padding), a frame budget per
# batch, and the longest piece embedded at once.
ROWS = (1, 2, 4, 8, 16, 32, 64)
FRAMES_PER_BATCH = 32768
MAX_FRAMES = 3000  # 30 s.
WINDOW_OVERLAP = 0.5  # Windows mode: consecutive windows share half their frames.


def padded_length(num_frames: int) -> int:
  """The bucketed length a piece of `num_frames` frames is padded to: the first of
  128 * 2**(k/4) frames, rounded up to a multiple of 8, that holds it."""
  k = 0
  while (length := int(np.ceil(128 * 2 ** (k / 4) / 8)) * 8) < num_frames:
    k += 1
  return length


def window_starts(num_frames: int, window: int, hop: int) -> np.ndarray:
  """Start frames of the windows covering [0, num_frames); the last ends at the end."""
  if num_frames <= window:
    return np.zeros(1, np.int64)
  starts = np.arange(0, num_frames - window + 1, hop)
  if starts[-1] + window < num_frames:
    starts = np.append(starts, num_frames - window)
  return starts


def cut_windows(mel: np.ndarray, window: int, hop: int) -> np.ndarray:
  """[frames, F] -> [K, window, F]; shorter inputs wrap around to fill one window."""
  if len(mel) == 0:
    raise ValueError("cannot embed an utterance with no frames")
  if len(mel) < window:
    mel = np.resize(mel, (window, mel.shape[1]))  # np.resize repeats the rows cyclically.
  starts = window_starts(len(mel), window, hop)
  return np.stack([mel[s:s + window] for s in starts])


class Embedder:
  """Log-mels of any length -> the model's embeddings, for any parameters of one model."""

  def __init__(self, config, num_speakers: int):
    self.config = config
    self.window = int(config.data.crop_frames)
    self.hop = max(1, int(round(self.window * (1 - WINDOW_OVERLAP))))
    self.embed_dim = int(config.model.embed_dim)
    self.hop_seconds = features_lib.FeatureConfig().hop_ms / 1000  # One frame.
    self.model = create_model(config.model, num_speakers)
    self.mode = "utterance" if getattr(self.model.encoder, "supports_mask", False) else "windows"
    self._embed = jax.jit(lambda p, x: self.model.apply({"params": p}, x,
                                                        method=SpeakerModel.embed))
    self._embed_padded = jax.jit(lambda p, x, n: self.model.apply(
        {"params": p}, x, n, method=SpeakerModel.embed))
    self._gender = jax.jit(lambda p, e: self.model.apply(
        {"params": p}, e, method=lambda m, e: m.gender(e)[:, 0]))

  def _embed_windows(self, params, windows: np.ndarray) -> np.ndarray:
    out, i = [], 0
    while i < len(windows):
      left = len(windows) - i
      size = next((b for b in BUCKETS if b >= left), BUCKETS[-1])
      chunk = windows[i:i + size]
      pad = size - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
      out.append(np.asarray(self._embed(params, jnp.asarray(chunk)))[:size - pad])
      i += size
    return np.concatenate(out)

  def _embed_pieces(self, params, pieces: list[np.ndarray]) -> np.ndarray:
    """Pieces of any length -> [K, D], in padded batches of bucketed shapes."""
    n_mels = pieces[0].shape[1]
    out = np.zeros((len(pieces), self.embed_dim), np.float32)
    by_length = {}
    for i, piece in enumerate(pieces):
      by_length.setdefault(padded_length(len(piece)), []).append(i)
    for length, members in sorted(by_length.items()):
      allowed = [r for r in ROWS if r * length <= FRAMES_PER_BATCH] or [1]
      i = 0
      while i < len(members):
        # The largest batch that is full: no compute is spent on padding rows.
        rows = max(r for r in allowed if r <= len(members) - i)
        chunk = members[i:i + rows]
        batch = np.zeros((rows, length, n_mels), np.float32)
        lengths = np.array([len(pieces[j]) for j in chunk], np.int32)
        for row, j in enumerate(chunk):
          batch[row, :lengths[row]] = pieces[j]
        out[chunk] = np.asarray(self._embed_padded(params, jnp.asarray(batch),
                                                   jnp.asarray(lengths)))
        i += rows
    return out

  def _cut(self, mel: np.ndarray) -> np.ndarray | list[np.ndarray]:
    """One utterance as the pieces its mode embeds (windows or whole pieces)."""
    if len(mel) == 0:
      raise ValueError("cannot embed an utterance with no frames")
    if self.mode == "windows":
      return cut_windows(mel, self.window, self.hop)
    if len(mel) < self.window:
      mel = np.resize(mel, (self.window, mel.shape[1]))  # Repeats rows cyclically.
    return consecutive_segments(mel, MAX_FRAMES)

  def embeddings(self, params, mels) -> np.ndarray:
    """Log-mels [frames, F] -> the model's own L2-normalised embeddings [K, D] (before
    centring: what its heads read), batched together."""
    mels = list(mels)
    if not mels:
      return np.zeros((0, self.embed_dim), np.float32)
    pieces = [self._cut(np.asarray(m, np.float32)) for m in mels]
    owner = np.repeat(np.arange(len(mels)), [len(p) for p in pieces])
    if self.mode == "windows":
      piece_embeddings = self._embed_windows(params, np.concatenate(pieces))
    else:
      piece_embeddings = self._embed_pieces(params, [p for ps in pieces for p in ps])
    sums = np.zeros((len(mels), piece_embeddings.shape[1]), np.float64)
    np.add.at(sums, owner, piece_embeddings)
    return (sums / np.linalg.norm(sums, axis=1, keepdims=True)).astype(np.float32)

  def female_probability(self, params, embeddings) -> np.ndarray:
    """P(female) [K] from the gender head, given the model's own embeddings [K, D]."""
    if not len(embeddings):
      return np.zeros(0, np.float32)
    logits = self._gender(params, jnp.asarray(embeddings, jnp.float32))
    return np.asarray(jax.nn.sigmoid(logits))

  def warm_up(self, params, max_seconds: float = 10.0) -> None:
    n_mels = int(self.config.data.n_mels)
    if self.mode == "windows":
      for size in BUCKETS:
        self._embed_windows(params, np.zeros((size, self.window, n_mels), np.float32))
      return
    top = padded_length(min(int(max_seconds * 100), MAX_FRAMES))
    length = padded_length(self.window)
    while length <= top:
      self._embed_pieces(params, [np.zeros((length, n_mels), np.float32)])
      length = padded_length(length + 1)


class Encoder:
  """A trained speaker model, ready to embed audio."""

  def __init__(self, config, params, step: int | None = None, source: str | None = None,
               speakers=None, embedding_mean=None):
    self.config = config
    # None: embeddings are the model's output as is (see hive/scoring.py).
    self.embedding_mean = None if embedding_mean is None else np.asarray(embedding_mean)
    self.params = params
    self.step = step
    self.source = source
    self.speakers = list(speakers or [])
    self.feature_config = features_lib.FeatureConfig(n_mels=config.data.n_mels,
                                                     trim_silence=config.data.trim_silence)
    self.embedder = Embedder(config, params["speaker"]["kernel"].shape[-1])
    self.model, self.mode, self.window = (self.embedder.model, self.embedder.mode,
                                          self.embedder.window)

  @classmethod
  def from_workdir(cls, workdir, step: int | None = None, centring: bool = True,
                   compilation_cache: bool = True) -> "Encoder":
    """Loads the latest (or the given) orbax checkpoint of a training workdir, and its
    training mean embedding if it has one (`centring=False` ignores it).
    `compilation_cache`: see the module docstring (False: leave JAX's settings alone)."""
    if compilation_cache and jax.config.jax_compilation_cache_dir is None:
      cli.use_compilation_cache()
    workdir = epath.Path(workdir)  # Local or a bucket (gs://...), as in training.
    config = workdir_lib.load_config(workdir)
    speakers = workdir_lib.load_speakers(workdir)["train"]
    manager = checkpoint.make_manager(workdir, create=False)
    # The newest intact checkpoint when `step` is None (a damaged newer one is named).
    params, chosen = checkpoint.load_model_params(manager, step,
                                                  abstract_params(config, len(speakers)))
    mean = workdir_lib.load_mean(workdir, config.model.embed_dim, chosen) if centring else None
    return cls(config, params, chosen, str(workdir), speakers, mean)

  @classmethod
  def pretrained(cls, compilation_cache: bool = True) -> "Encoder":
    """The model shipped in the repository (pretrained/hive-mtl); no download."""
    if not (PRETRAINED_DIR / workdir_lib.CONFIG_FILE).is_file():
      raise FileNotFoundError(f"{PRETRAINED_DIR}: the shipped model is missing")
    return cls.from_workdir(PRETRAINED_DIR, compilation_cache=compilation_cache)

  def model_record(self) -> dict:
    """What identifies this model's embeddings (hive/workdir.py: model_record)."""
    return workdir_lib.model_record(self.config, self.step, self.embedding_mean, self.source)

  # --- features ---------------------------------------------------------------

  def features_of(self, wave_or_path) -> np.ndarray:
    """Log-mel of a path (any rate/channels, FLAC/WAV) or of a 16 kHz mono wave."""
    if isinstance(wave_or_path, (str, os.PathLike)):
      wave = audio.load_wave(wave_or_path, self.feature_config.sample_rate)
    else:
      wave = np.asarray(wave_or_path, np.float32)
      if wave.ndim != 1 or wave.size == 0:
        raise ValueError(f"expected a non-empty 1-D 16 kHz wave, got shape {wave.shape}")
    return features_lib.log_mel(wave, self.feature_config)

  # --- embeddings -------------------------------------------------------------

  def embed_features(self, mels, with_gender: bool = False):
    """Many log-mels [frames, F] -> L2-normalised embeddings [K, D], batched together
    (centred when the model has a training mean). `with_gender=True` returns
    (embeddings, P(female) [K]) from the same pass."""
    raw = self.embedder.embeddings(self.params, mels)
    embeddings = raw if self.embedding_mean is None else scoring.centre(raw,
                                                                          self.embedding_mean)
    if not with_gender:
      return embeddings
    return embeddings, self.embedder.female_probability(self.params, raw)

  def embed(self, wave_or_path) -> np.ndarray:
    """One utterance (path or 16 kHz wave) -> embedding [D]."""
    return self.embed_features([self.features_of(wave_or_path)])[0]

  def embed_many(self, waves_or_paths, with_gender: bool = False):
    """Many utterances -> [K, D]: decoded on all cores, embedded in large batches
    (`with_gender`: see embed_features)."""
    items = list(waves_or_paths)
    # Decoding and FFTs release the GIL, so threads use every core.
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
      mels = list(pool.map(self.features_of, items))
    return self.embed_features(mels, with_gender)

  def warm_up(self, max_seconds: float = 10.0) -> "Encoder":
    """Compiles now, rather than on first use, what embedding one input at a time up to
    `max_seconds` needs (servers); batches of other sizes compile when first met."""
    self.embedder.warm_up(self.params, max_seconds)
    return self

  @staticmethod
  def similarity(a, b) -> float | np.ndarray:
    """Cosine similarity of two embeddings (or row-wise of two [K, D] arrays)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    num = np.sum(a * b, axis=-1)
    return num / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
