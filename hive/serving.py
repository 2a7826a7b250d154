"""Waveform-in serving: one pure function from 16 kHz audio to the embedding, and its exports.

    fn = serving.embedding_function(config, params, embedding_mean)
    fn(waveform [B, S] float32 in -1..1, num_samples [B] int32)
      -> {"embedding": [B, D] float32, "gender_probability": [B] float32}

`embedding` is what `hive.Encoder.embed` gives for row b's first num_samples[b]
samples: the log-mel front end (hive/frontend.py, jax.numpy), the short-utterance
rule (repeated end-to-end to the training crop), the encoder's own way of
embedding an utterance, the model's input normalisation and masks, and centring
(subtract the training mean, renormalise) all happen inside. `gender_probability`
is P(female) from the gender head, which reads the uncentred embedding as in
`Encoder.embed_features(..., with_gender=True)`. Rows are independent: batching
waves of mixed lengths changes no row's result.

Both of the Encoder's modes are exact, not approximations:
  * "utterance" (masked encoders: the TDNN, the shipped model): one masked pass
    per piece. Utterances of 2 * MAX_FRAMES frames (60 s) or more are cut into
    the Encoder's consecutive pieces of MAX_FRAMES (the tail joining the last)
    and the piece embeddings averaged. Pieces are laid out as rows of length
    min(frames, 2 * MAX_FRAMES - 1), so audio over a minute costs up to twice the
    compute of one pass; anything shorter is a single piece, at no extra cost.
  * "windows" (the LSTM, the ResCNN): windows of the training crop with the
    Encoder's overlap, the last aligned to the end, embedded without masks and
    their unit embeddings averaged.
Both are gathers with per-row indices computed from num_samples, so they trace
with symbolic batch and length dimensions.

Formats (each writes a directory holding the model and `serving.json`, which
describes inputs, outputs, sample rate, front end and model; `load(dir)` runs any):
  * StableHLO (`export_stablehlo`): `jax.export` with symbolic shapes (b, s), so
    one artifact serves any batch size and length; the parameters are constants
    inside; lowered for CPU and CUDA. Needs jax only to run.
  * TensorFlow SavedModel (`export_savedmodel`): jax2tf with native serialisation
    (the same StableHLO inside an XlaCallModule op, polymorphic in batch and
    length), the parameters as tf.Variables. Chosen over orbax-export, whose
    TensorFlow path (JaxModule) is itself a wrapper over jax2tf: it is installed
    here only as a dependency of jax2onnx (0.0.8, not pinned by hive, itself
    depending on orbax-checkpoint, which hive pins at 0.12.8: one more pin to keep
    in step) and would add nothing this needs (one function, one signature, no
    pre/post-processing graph). jax2tf ships with jax. The signature `serving_default`
    takes `waveform` float32 [batch, samples] and `num_samples` int32 [batch] and
    returns `embedding` and `gender_probability`; loading needs TensorFlow only.
  * ONNX (`export_onnx`): jax2onnx, the whole waveform-in function, batch and
    length dynamic (one repair, see there); onnxruntime runs it.
XLA compiles once per input shape (seconds on a CPU): the SavedModel's signature
and the StableHLO loader pad inputs to bucketed shapes (`bucketed`) first, so a
server meets a few dozen shapes, not one per utterance length. Callers of the raw
StableHLO should do the same (padding never changes a row's result).

Bad input inside a graph cannot raise: num_samples is clipped to [0, samples];
a row of zero samples gives the embedding of one silent frame repeated, as
meaningless as any embedding of silence. Check lengths before calling.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import logging
import pathlib
import warnings
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hive import features as features_lib, frontend
from hive.models import SpeakerModel, create_model
from hive.models.model import l2_normalise
from hive.models.tdnn import apply_mask, masked_mean

# hive.encoder's: the piece length of whole-utterance mode (30 s), and the overlap of
# consecutive windows in windows mode (tests/test_serving.py checks they agree).
MAX_FRAMES = 3000
WINDOW_OVERLAP = 0.5
EMBEDDING, GENDER = "embedding", "gender_probability"
METADATA_FILE = "serving.json"
STABLEHLO_FILE = "embedder.stablehlo"
ONNX_FILE = "embedder.onnx"
# Where a StableHLO / SavedModel export runs. Lowering for CUDA needs no GPU here.
PLATFORMS = ("cpu", "cuda")
# XLA compiles a program once per input shape (seconds each on a CPU), so the SavedModel's
# signature and the loaders pad inputs to these lengths (1 s * 2**(k/4) up to an hour, at
# most 19 % more samples) and batch sizes (powers of two) first; the padding is ignored.
SAMPLE_BUCKETS = np.unique(np.ceil(16000 * 2 ** (np.arange(49) / 4))).astype(np.int32)
BATCH_BUCKETS = (2 ** np.arange(17)).astype(np.int32)


def feature_config(config) -> features_lib.FeatureConfig:
  """The front end's settings for a model config (as `hive.Encoder.feature_config`)."""
  return features_lib.FeatureConfig(n_mels=config.data.n_mels,
                                    trim_silence=config.data.trim_silence)


def encoder_mode(model: SpeakerModel) -> str:
  """"utterance" for encoders that take a frame mask, "windows" otherwise (hive.Encoder)."""
  return "utterance" if getattr(model.encoder, "supports_mask", False) else "windows"


def _unit(x, eps: float = 1e-12):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def _div(x, y: int):
  """x // y for x >= 0. lax.div (truncating) rather than jnp's // and %, which
  jax2onnx 0.13 cannot convert with symbolic shapes."""
  return jax.lax.div(x, jnp.asarray(y, x.dtype))


def _mod(x, y):
  """x % y for x >= 0, y > 0 (arrays)."""
  return x - jax.lax.div(x, y) * y


def _iota(n):
  """jnp.arange(n) for a possibly symbolic n; jax2onnx 0.13 replaces jnp.arange by a
  version that loses symbolic sizes."""
  return jax.lax.iota(jnp.int32, n)


def _embed_masked(model: SpeakerModel, features, lengths):
  """`SpeakerModel.embed(features, lengths)` (a Flax method), its frame mask built with
  lax.iota: jax2onnx 0.13 replaces the jnp.arange that SpeakerModel.embed uses by a
  version that loses symbolic lengths. Tested equal to SpeakerModel.embed."""
  mask = jax.lax.broadcasted_iota(jnp.int32, features.shape[:2], 1) < lengths[:, None]
  mask = mask[..., None].astype(jnp.float32)
  if model.input_norm:
    features = apply_mask(features - masked_mean(features, mask), mask)
  return l2_normalise(model.encoder(features, mask).astype(jnp.float32))


def _gather_rows(mels, source):
  """mels [B, T, F], source [B, K, L] frame indices -> [B * K, L, F]."""
  batch, pieces, length = source.shape
  rows = jnp.take_along_axis(mels, source.reshape(batch, pieces * length, 1), axis=1)
  return rows.reshape(batch * pieces, length, mels.shape[-1])


def piece_layout(frames, total: int, crop: int, max_frames: int = MAX_FRAMES):
  """The Encoder's whole-utterance pieces as gather indices.

  frames [B] (>= 1) real frames of each row of a [B, total, F] log-mel. An
  utterance shorter than `crop` is repeated to `crop` frames; one of L >= 2 *
  max_frames frames is cut into pieces of max_frames, the tail joining the last
  (the Encoder's `consecutive_segments`). Returns (source [B, P, Lp] frame
  indices into the row, lengths [B, P] real frames of each piece (1 for an
  unused piece, so no row is empty), used [B, P] 1.0 where the piece exists).
  """
  effective_total = jax.core.max_dim(total, crop)
  pieces = jax.core.max_dim(1, effective_total // max_frames)
  length = jax.core.min_dim(effective_total, 2 * max_frames - 1)
  effective = jnp.maximum(frames, crop)[:, None]  # [B, 1]
  count = jnp.maximum(1, _div(effective, max_frames))
  p = _iota(pieces)[None, :]
  used = p < count
  last = effective - max_frames * p
  lengths = jnp.where(used, jnp.where(p == count - 1, last, max_frames), 1)
  position = max_frames * p[..., None] + _iota(length)[None, None, :]
  source = _mod(position, frames[:, None, None])  # Cyclic: the repeat of short rows.
  return source, lengths.astype(jnp.int32), used.astype(jnp.float32)


def window_layout(frames, total: int, crop: int, hop: int):
  """The Encoder's windows (`hive.encoder.window_starts`) as gather indices: crop
  frames every `hop`, the last aligned to the end; a row shorter than crop is
  repeated to fill one. Returns (source [B, W, crop], used [B, W])."""
  effective_total = jax.core.max_dim(total, crop)
  windows = (effective_total - crop + hop - 1) // hop + 1
  effective = jnp.maximum(frames, crop)[:, None]
  count = _div(effective - crop + hop - 1, hop) + 1
  k = _iota(windows)[None, :]
  starts = jnp.minimum(k * hop, effective - crop)
  source = _mod(starts[..., None] + _iota(crop)[None, None, :], frames[:, None, None])
  return source, (k < count).astype(jnp.float32)


def embedding_function(config, params, embedding_mean=None,
                       max_frames: int | None = None) -> Callable:
  """The pure serving function of a model: (waveform [B, S] float32, num_samples [B]
  int32) -> {"embedding": [B, D], "gender_probability": [B]} (see the module doc).

  `params`: the model parameters (`hive.Encoder.params`); `embedding_mean`: the
  training mean (`Encoder.embedding_mean`) or None for uncentred embeddings;
  `max_frames`: the piece length of whole-utterance mode (default MAX_FRAMES, read
  when the function is built)."""
  apply = serving_apply(config, params["speaker"]["kernel"].shape[-1], embedding_mean,
                        max_frames)
  return functools.partial(apply, params)


def serving_apply(config, num_speakers: int, embedding_mean=None,
                  max_frames: int | None = None) -> Callable:
  """`embedding_function` with the parameters as its first argument:
  apply(params, waveform, num_samples) (jax2tf keeps them as tf.Variables).
  Raises ValueError for a config the front end cannot compute (trim_silence)."""
  model = create_model(config.model, num_speakers)
  mode = encoder_mode(model)
  features = feature_config(config)
  frontend.stft_mel_matrices(features)  # Fails now on what it cannot compute.
  crop = int(config.data.crop_frames)
  hop = max(1, int(round(crop * (1 - WINDOW_OVERLAP))))
  mean = None if embedding_mean is None else np.asarray(embedding_mean, np.float32)
  max_frames = MAX_FRAMES if max_frames is None else int(max_frames)

  def apply(params, waveform, num_samples):
    variables = {"params": params}
    mels, frames = frontend.log_mel(waveform, num_samples, features)
    batch, total = mels.shape[0], mels.shape[1]
    if mode == "utterance":
      source, lengths, used = piece_layout(frames, total, crop, max_frames)
      pieces = model.apply(variables, _gather_rows(mels, source), lengths.reshape(-1),
                           method=_embed_masked)
    else:
      source, used = window_layout(frames, total, crop, hop)
      pieces = model.apply(variables, _gather_rows(mels, source), method=SpeakerModel.embed)
    pieces = pieces.reshape(batch, used.shape[1], pieces.shape[-1])
    raw = _unit(jnp.sum(pieces * used[..., None], axis=1))  # The Encoder's average.
    embedding = raw if mean is None else _unit(raw - mean)
    logit = model.apply(variables, raw, method=lambda m, e: m.gender(e)[:, 0])
    return {EMBEDDING: embedding, GENDER: jax.nn.sigmoid(logit)}

  return apply


# --- exports ------------------------------------------------------------------


def pad_batch(waves: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """1-D 16 kHz waves -> (waveform float32 [B, max samples] zero-padded, num_samples
  int32 [B]): the inputs of every export."""
  waves = [np.asarray(w, np.float32) for w in waves]
  if not waves or any(w.ndim != 1 or w.size == 0 for w in waves):
    raise ValueError(f"expected non-empty 1-D waves, got shapes {[w.shape for w in waves]}")
  batch = np.zeros((len(waves), max(len(w) for w in waves)), np.float32)
  for row, w in enumerate(waves):
    batch[row, :len(w)] = w
  return batch, np.array([len(w) for w in waves], np.int32)


def bucketed(waveform: np.ndarray, num_samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Inputs zero-padded to the next SAMPLE_BUCKETS length and BATCH_BUCKETS size (sizes
  past the last bucket stay as they are); padding rows have 0 samples. The first rows of
  the outputs are the inputs' own."""
  waveform, num_samples = _as_inputs(waveform, num_samples)
  rows, samples = waveform.shape
  new_rows, new_samples = _bucket(rows, BATCH_BUCKETS), _bucket(samples, SAMPLE_BUCKETS)
  return (np.pad(waveform, ((0, new_rows - rows), (0, new_samples - samples))),
          np.pad(num_samples, (0, new_rows - rows)))


def _bucket(size: int, buckets: np.ndarray) -> int:
  i = np.searchsorted(buckets, size)
  return int(buckets[i]) if i < len(buckets) else size


def _abstract_inputs():
  """Symbolic (any batch, any length) input specs for jax.export and jax2tf."""
  batch, samples = jax.export.symbolic_shape("b, s")
  return (jax.ShapeDtypeStruct((batch, samples), jnp.float32),
          jax.ShapeDtypeStruct((batch,), jnp.int32))


def _new_dir(out) -> pathlib.Path:
  out = pathlib.Path(out)
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise FileExistsError(f"{out}: the export's output directory must be new or empty")
  out.mkdir(parents=True, exist_ok=True)
  return out


def _mean_digest(mean) -> str:
  """Tells centring means apart ("none": uncentred); the digest hive's workdir records use."""
  if mean is None:
    return "none"
  return hashlib.sha256(np.asarray(mean, np.float32).tobytes()).hexdigest()[:16]


def _write_metadata(out: pathlib.Path, fmt: str, config, embedding_mean, info) -> None:
  """OUT/serving.json: what the export takes and gives, for people and for `load`."""
  model = create_model(config.model, 1)
  dim = int(config.model.embed_dim)
  metadata = {
      "format": fmt,
      "inputs": {"waveform": "float32 [batch, samples], 16 kHz mono in -1..1, zero-padded",
                 "num_samples": "int32 [batch], real samples of each row"},
      "outputs": {EMBEDDING: f"float32 [batch, {dim}], unit length"
                             f"{', centred' if embedding_mean is not None else ''}",
                  GENDER: "float32 [batch], P(female) from the gender head"},
      "sample_rate": feature_config(config).sample_rate,
      "embed_dim": dim,
      "encoder": config.model.encoder,
      "mode": encoder_mode(model),
      "centring": _mean_digest(embedding_mean),
      "front_end": dataclasses.asdict(feature_config(config)),
      **dict(info or {}),
  }
  (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")


def export_stablehlo(config, params, embedding_mean, out, info: dict | None = None,
                     platforms: Sequence[str] = PLATFORMS) -> pathlib.Path:
  """Writes OUT/embedder.stablehlo (`jax.export`, symbolic batch and length, parameters
  inside) and OUT/serving.json. `info`: extra metadata (e.g. step, source)."""
  out = _new_dir(out)  # Refused before any work; an empty one is accepted on a retry.
  fn = jax.jit(embedding_function(config, params, embedding_mean))
  exported = jax.export.export(fn, platforms=tuple(platforms))(*_abstract_inputs())
  (out / STABLEHLO_FILE).write_bytes(exported.serialize())
  _write_metadata(out, "stablehlo", config, embedding_mean, info)
  return out


def export_savedmodel(config, params, embedding_mean, out, info: dict | None = None,
                      platforms: Sequence[str] = PLATFORMS) -> pathlib.Path:
  """Writes a TensorFlow SavedModel to OUT (jax2tf, native serialisation; signature
  `serving_default`: waveform, num_samples -> embedding, gender_probability) and
  OUT/serving.json."""
  out = _new_dir(out)
  import tensorflow as tf  # Heavy; only this format needs it.
  from jax.experimental import jax2tf
  apply = serving_apply(config, params["speaker"]["kernel"].shape[-1], embedding_mean)
  converted = jax2tf.convert(apply, polymorphic_shapes=[None, "(b, s)", "(b,)"],
                             native_serialization_platforms=tuple(platforms),
                             with_gradient=False)
  module = tf.Module()
  # Variables, not constants: the weights live in variables/, outside the graph proto.
  module.params = jax.tree.map(lambda x: tf.Variable(np.asarray(x), trainable=False), params)

  def bucket(size, buckets: np.ndarray):  # `_bucket` in TF ops.
    i = tf.searchsorted(tf.constant(buckets), tf.reshape(size, [1]))[0]
    last = len(buckets) - 1
    return tf.where(i <= last, tf.gather(tf.constant(buckets), tf.minimum(i, last)), size)

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([None, None], tf.float32, name="waveform"),
      tf.TensorSpec([None], tf.int32, name="num_samples")])
  def serve(waveform, num_samples):
    # Bucketed shapes, as `bucketed`: the XlaCallModule op compiles once per shape.
    rows, samples = tf.shape(waveform)[0], tf.shape(waveform)[1]
    extra_rows = bucket(rows, BATCH_BUCKETS) - rows
    extra_samples = bucket(samples, SAMPLE_BUCKETS) - samples
    outputs = converted(module.params, tf.pad(waveform, [[0, extra_rows], [0, extra_samples]]),
                        tf.pad(num_samples, [[0, extra_rows]]))
    return {name: value[:rows] for name, value in outputs.items()}

  module.serve = serve
  tf.saved_model.save(module, str(out), signatures={"serving_default": serve})
  _write_metadata(out, "savedmodel", config, embedding_mean, info)
  return out


def export_onnx(config, params, embedding_mean, out, info: dict | None = None,
                opset: int = 21) -> pathlib.Path:
  """Writes OUT/embedder.onnx (jax2onnx; inputs waveform [B, S] float32, num_samples [B]
  int32; outputs embedding, gender_probability; B and S dynamic) and OUT/serving.json.

  The whole waveform-in function converts, front end included (it is matmuls).
  One repair: jax2onnx 0.13 drops the SAME padding of dilated convolutions when the
  length is dynamic (flax/nnx/conv.py writes explicit pads only for static shapes,
  since ORT refuses auto_pad with dilation), which would shorten every TDNN block;
  `_restore_same_pads` puts the pads back, valid because hive's convolutions are
  all SAME with stride 1 along time."""
  out = _new_dir(out)
  fn = embedding_function(config, params, embedding_mean)
  with _quiet_jax2onnx():
    import jax2onnx  # Imports its plugins: seconds, the first time.
    model = jax2onnx.to_onnx(
        fn, inputs=[jax.ShapeDtypeStruct(("B", "S"), jnp.float32),
                    jax.ShapeDtypeStruct(("B",), jnp.int32)],
        model_name="hive_embedder", opset=opset,
        input_names=["waveform", "num_samples"], output_names=[EMBEDDING, GENDER])
  _restore_same_pads(model)
  (out / ONNX_FILE).write_bytes(model.SerializeToString())
  _write_metadata(out, "onnx", config, embedding_mean, info)
  return out


@contextlib.contextmanager
def _quiet_jax2onnx():
  """jax2onnx 0.13 prints debugging lines to stdout for every convolution and logs a
  warning per optional plugin it cannot import (dm_pix) and per untyped constant, and
  its tracing makes jax warn of a float64 it truncates to float32 (masked_mean's
  division): noise around a conversion that succeeds. Its errors still raise."""
  loggers = [logging.getLogger(name) for name in ("jax2onnx", "onnx_ir")]
  levels = [logger.level for logger in loggers]
  for logger in loggers:
    logger.setLevel(logging.ERROR)
  try:
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
      warnings.filterwarnings("ignore", "Explicitly requested dtype float64")
      yield
  finally:
    for logger, level in zip(loggers, levels):
      logger.setLevel(level)


def _restore_same_pads(model) -> None:
  """Adds SAME padding to the ONNX Conv nodes that have neither pads nor auto_pad but
  dilation > 1 (see export_onnx); a strided one among them is an error."""
  import onnx
  kernels = {t.name: tuple(t.dims) for t in model.graph.initializer}
  for node in model.graph.node:
    if node.op_type != "Conv":
      continue
    attrs = {a.name: a for a in node.attribute}
    dilations = list(attrs["dilations"].ints) if "dilations" in attrs else []
    if "pads" in attrs or "auto_pad" in attrs or all(d == 1 for d in dilations):
      continue
    if any(s != 1 for s in attrs["strides"].ints) or node.input[1] not in kernels:
      raise ValueError(f"ONNX export: cannot repair the padding of Conv {node.name}")
    sizes = kernels[node.input[1]][2:]  # [O, I, spatial...]
    totals = [(k - 1) * d for k, d in zip(sizes, dilations)]
    node.attribute.append(onnx.helper.make_attribute(
        "pads", [t // 2 for t in totals] + [t - t // 2 for t in totals]))  # lax's SAME.


def load(path) -> Callable:
  """An export (any format, told by its serving.json) as a function (waveform [B, S],
  num_samples [B]) -> {"embedding": np [B, D], "gender_probability": np [B]}."""
  path = pathlib.Path(path)
  try:
    fmt = json.loads((path / METADATA_FILE).read_text())["format"]
  except (OSError, ValueError, KeyError) as e:
    raise ValueError(f"{path}: not a hive serving export ({METADATA_FILE}: {e})") from None
  loaders = {"stablehlo": load_stablehlo, "savedmodel": load_savedmodel, "onnx": load_onnx}
  if fmt not in loaders:
    raise ValueError(f"{path / METADATA_FILE}: unknown format {fmt!r}")
  return loaders[fmt](path)


def _as_inputs(waveform, num_samples) -> tuple[np.ndarray, np.ndarray]:
  return np.asarray(waveform, np.float32), np.asarray(num_samples, np.int32)


def load_stablehlo(path) -> Callable:
  """OUT/embedder.stablehlo as a function (see `load`) of bucketed inputs; needs jax only."""
  exported = jax.export.deserialize(bytearray((pathlib.Path(path) / STABLEHLO_FILE).read_bytes()))
  call = jax.jit(exported.call)

  def run(w, n):
    rows = len(n)
    return {k: np.asarray(v)[:rows] for k, v in call(*bucketed(w, n)).items()}

  return run


def load_savedmodel(path) -> Callable:
  """The SavedModel's serving_default signature as a function (see `load`)."""
  import tensorflow as tf
  signature = tf.saved_model.load(str(path)).signatures["serving_default"]

  def run(w, n):
    w, n = _as_inputs(w, n)
    return {k: v.numpy() for k, v in signature(waveform=w, num_samples=n).items()}

  return run


def load_onnx(path) -> Callable:
  """OUT/embedder.onnx in onnxruntime (CPU) as a function (see `load`)."""
  import onnxruntime
  session = onnxruntime.InferenceSession(str(pathlib.Path(path) / ONNX_FILE),
                                         providers=["CPUExecutionProvider"])
  names = [o.name for o in session.get_outputs()]

  def run(w, n):
    w, n = _as_inputs(w, n)
    return dict(zip(names, session.run(names, {"waveform": w, "num_samples": n})))

  return run
