"""The speaker model: an embedder plus the speaker-ID and gender heads.

`SpeakerModel.__call__` returns {"embedding": [B, D] L2-normalised,
"speaker_logits": [B, S], "gender_logit": [B]}; `embed` returns the embedding
alone, for inference.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hive.models.lstm import LSTMEmbedder
from hive.models.rescnn import ResCNNEmbedder
from hive.models.tdnn import TDNNEmbedder, apply_mask, masked_mean

ENCODERS = {"lstm": LSTMEmbedder, "rescnn": ResCNNEmbedder, "tdnn": TDNNEmbedder}


def l2_normalise(x, eps=1e-8):
  return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


class CosineHead(nn.Module):
  """Cosines between the embedding and one learned direction per class."""
  num_classes: int

  @nn.compact
  def __call__(self, embedding):
    w = self.param("kernel", nn.initializers.normal(0.01), (embedding.shape[-1], self.num_classes))
    return l2_normalise(embedding.astype(jnp.float32)) @ l2_normalise(w.T).T


class SpeakerModel(nn.Module):
  encoder: nn.Module
  num_speakers: int
  speaker_head: str = "cosine"  # "cosine" (AM-softmax-ready) or "linear".
  input_norm: bool = True  # Per-utterance mean normalisation of each mel band.

  def setup(self):
    if self.speaker_head == "cosine":
      self.speaker = CosineHead(self.num_speakers)
    elif self.speaker_head == "linear":
      self.speaker = nn.Dense(self.num_speakers)
    else:
      raise ValueError(f"unknown speaker_head {self.speaker_head!r}: 'cosine' or 'linear'")
    self.gender = nn.Dense(1)

  def embed(self, features, lengths=None):
    """[B, T, F] -> [B, D]. `lengths` [B]: only the first lengths[b] frames of row b
    are real (the rest padding); needs an encoder with `supports_mask`."""
    mask = None
    if lengths is not None:
      if not getattr(self.encoder, "supports_mask", False):
        raise ValueError(f"{type(self.encoder).__name__} cannot embed padded batches")
      mask = (jnp.arange(features.shape[1])[None, :] < lengths[:, None])[..., None]
      mask = mask.astype(jnp.float32)
    if self.input_norm:
      # Removes the channel (microphone, room) offset; identity lives in the shape.
      features = apply_mask(features - masked_mean(features, mask), mask)
    encoded = self.encoder(features) if mask is None else self.encoder(features, mask)
    return l2_normalise(encoded.astype(jnp.float32))

  def __call__(self, features):
    embedding = self.embed(features)
    return {
        "embedding": embedding,
        "speaker_logits": self.speaker(embedding),
        "gender_logit": self.gender(embedding)[:, 0],
    }


def create_model(model_config, num_speakers: int) -> SpeakerModel:
  """Builds the model named by `model_config.encoder` with its sub-config."""
  name = model_config.encoder
  if name not in ENCODERS:
    raise ValueError(f"unknown encoder {name!r}; choose from {sorted(ENCODERS)}")
  dtype = jnp.bfloat16 if model_config.get("dtype", "float32") == "bfloat16" else jnp.float32
  options = dict(model_config.get(name, {}))
  encoder = ENCODERS[name](embed_dim=model_config.embed_dim, dtype=dtype, **options)
  return SpeakerModel(encoder=encoder, num_speakers=num_speakers,
                      speaker_head=model_config.speaker_head,
                      input_norm=model_config.get("input_norm", True))


def init_params(config, num_speakers: int, rng):
  """Fresh model parameters for `config` (its `model` and the feature size of its `data`)."""
  model = create_model(config.model, num_speakers)
  shape = (1, config.data.crop_frames, config.data.n_mels)
  return model.init(rng, jnp.zeros(shape, jnp.float32))["params"]


def abstract_params(config, num_speakers: int):
  """The shapes and dtypes of the model's parameters (`jax.ShapeDtypeStruct`s), without
  computing them: what a checkpoint reader needs to restore them."""
  return jax.eval_shape(lambda: init_params(config, num_speakers, jax.random.PRNGKey(0)))


def carried_over(params, same_speakers: bool):
  """The part of a trained model's parameters that a new run starting from it (fine-tuning)
  takes over: everything, except the speaker-ID head when the new run trains other speakers
  (its rows are the old run's speakers)."""
  return {k: v for k, v in params.items() if same_speakers or k != "speaker"}
