"""A compact TDNN with attentive statistics pooling (ECAPA-TDNN, much reduced).

Dilated 1-D convolutions over time with residual connections and
squeeze-excitation, concatenated multi-layer features, then attentive
statistics pooling (a learned weighting of frames; weighted mean and standard
deviation) and a linear layer to the embedding. Cheap on CPU and strong for
speaker verification (Desplanques et al. 2020).

Every layer takes an optional frame mask [B, T, 1] (1 = real frame): padded
frames are zeroed before each temporal convolution and left out of every mean
and of the pooling, so a padded batch of utterances of different lengths embeds
each exactly as it would alone. That lets inference embed whole utterances.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def masked_mean(x, mask):
  """Mean over time (axis 1) of the frames where mask is 1; all frames without a mask."""
  if mask is None:
    return jnp.mean(x, axis=1, keepdims=True)
  return jnp.sum(x * mask, axis=1, keepdims=True) / jnp.maximum(
      jnp.sum(mask, axis=1, keepdims=True), 1)


def apply_mask(x, mask):
  return x if mask is None else x * mask.astype(x.dtype)


class SEBlock(nn.Module):
  bottleneck: int = 64
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):  # [B, T, C]
    s = masked_mean(x, mask)
    s = nn.relu(nn.Dense(self.bottleneck, dtype=self.dtype)(s))
    s = jax.nn.sigmoid(nn.Dense(x.shape[-1], dtype=self.dtype)(s))
    return x * s


class TDNNBlock(nn.Module):
  channels: int
  kernel: int
  dilation: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):  # x must be zero where mask is 0.
    y = nn.Conv(self.channels, (self.kernel,), kernel_dilation=(self.dilation,),
                dtype=self.dtype)(x)
    y = nn.LayerNorm(dtype=self.dtype)(nn.relu(y))
    y = nn.Conv(self.channels, (1,), dtype=self.dtype)(y)
    y = nn.LayerNorm(dtype=self.dtype)(nn.relu(y))
    return SEBlock(dtype=self.dtype)(y, mask)


class AttentiveStatsPool(nn.Module):
  attention: int = 64
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):  # [B, T, C] -> [B, 2C]
    a = jnp.tanh(nn.Dense(self.attention, dtype=self.dtype)(x))
    logits = nn.Dense(x.shape[-1], dtype=self.dtype)(a).astype(jnp.float32)
    if mask is not None:
      logits = jnp.where(mask > 0, logits, -jnp.inf)
    weights = jax.nn.softmax(logits, axis=1)
    x = x.astype(jnp.float32)
    mean = jnp.sum(weights * x, axis=1)
    var = jnp.sum(weights * x * x, axis=1) - mean * mean
    return jnp.concatenate([mean, jnp.sqrt(jnp.maximum(var, 1e-6))], axis=-1)


class TDNNEmbedder(nn.Module):
  embed_dim: int = 256
  channels: int = 256
  dilations: Sequence[int] = (2, 3, 4)
  dtype: jnp.dtype = jnp.float32

  supports_mask = True

  @nn.compact
  def __call__(self, x, mask=None):  # [B, T, F] (+ [B, T, 1]) -> [B, embed_dim]
    x = apply_mask(x.astype(self.dtype), mask)
    x = nn.LayerNorm(dtype=self.dtype)(nn.relu(nn.Conv(self.channels, (5,), dtype=self.dtype)(x)))
    x = apply_mask(x, mask)
    outputs = []
    for d in self.dilations:
      x = apply_mask(x + TDNNBlock(self.channels, 3, d, self.dtype)(x, mask), mask)
      outputs.append(x)
    x = nn.relu(nn.Conv(3 * self.channels, (1,), dtype=self.dtype)(jnp.concatenate(outputs, -1)))
    x = AttentiveStatsPool(dtype=self.dtype)(x, mask)
    x = nn.LayerNorm()(x)
    return nn.Dense(self.embed_dim, dtype=self.dtype, name="affine")(x)
