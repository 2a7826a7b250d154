"""A compact TDNN with attentive statistics pooling (ECAPA-TDNN, much reduced).

Dilated 1-D convolutions over time with residual connections and
squeeze-excitation, concatenated multi-layer features, then attentive
statistics pooling (a learned weighting of frames; weighted mean and standard
deviation) and a linear layer to the embedding. Cheap on CPU and strong for
speaker verification (Desplanques et al. 2020).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class SEBlock(nn.Module):
  bottleneck: int = 64
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, T, C]
    s = jnp.mean(x, axis=1, keepdims=True)
    s = nn.relu(nn.Dense(self.bottleneck, dtype=self.dtype)(s))
    s = jax.nn.sigmoid(nn.Dense(x.shape[-1], dtype=self.dtype)(s))
    return x * s


class TDNNBlock(nn.Module):
  channels: int
  kernel: int
  dilation: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.Conv(self.channels, (self.kernel,), kernel_dilation=(self.dilation,),
                dtype=self.dtype)(x)
    y = nn.LayerNorm(dtype=self.dtype)(nn.relu(y))
    y = nn.Conv(self.channels, (1,), dtype=self.dtype)(y)
    y = nn.LayerNorm(dtype=self.dtype)(nn.relu(y))
    return SEBlock(dtype=self.dtype)(y)


class AttentiveStatsPool(nn.Module):
  attention: int = 64
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, T, C] -> [B, 2C]
    a = jnp.tanh(nn.Dense(self.attention, dtype=self.dtype)(x))
    weights = jax.nn.softmax(nn.Dense(x.shape[-1], dtype=self.dtype)(a).astype(jnp.float32),
                             axis=1)
    x = x.astype(jnp.float32)
    mean = jnp.sum(weights * x, axis=1)
    var = jnp.sum(weights * x * x, axis=1) - mean * mean
    return jnp.concatenate([mean, jnp.sqrt(jnp.maximum(var, 1e-6))], axis=-1)


class TDNNEmbedder(nn.Module):
  embed_dim: int = 256
  channels: int = 256
  dilations: Sequence[int] = (2, 3, 4)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, T, F] -> [B, embed_dim]
    x = x.astype(self.dtype)
    x = nn.LayerNorm(dtype=self.dtype)(nn.relu(nn.Conv(self.channels, (5,), dtype=self.dtype)(x)))
    outputs = []
    for d in self.dilations:
      x = x + TDNNBlock(self.channels, 3, d, self.dtype)(x)
      outputs.append(x)
    x = nn.relu(nn.Conv(3 * self.channels, (1,), dtype=self.dtype)(jnp.concatenate(outputs, -1)))
    x = AttentiveStatsPool(dtype=self.dtype)(x)
    x = nn.LayerNorm()(x)
    return nn.Dense(self.embed_dim, dtype=self.dtype, name="affine")(x)
