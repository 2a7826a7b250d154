"""ResCNN in the spirit of Deep Speaker (Li et al. 2017).

Stages of a strided 5x5 convolution followed by residual identity blocks
(two 3x3 convolutions), clipped ReLU, then average over time and an affine
layer to the embedding. LayerNorm stands in for batch norm so the model has
no running statistics to carry.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


def clipped_relu(x):
  return jnp.clip(x, 0.0, 20.0)


class IdentityBlock(nn.Module):
  channels: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.Conv(self.channels, (3, 3), dtype=self.dtype)(x)
    y = clipped_relu(nn.LayerNorm(dtype=self.dtype)(y))
    y = nn.Conv(self.channels, (3, 3), dtype=self.dtype)(y)
    y = nn.LayerNorm(dtype=self.dtype)(y)
    return clipped_relu(x + y)


class ResCNNEmbedder(nn.Module):
  embed_dim: int = 256
  channels: Sequence[int] = (32, 64, 128, 256)
  blocks_per_stage: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, T, F] -> [B, embed_dim]
    x = x.astype(self.dtype)[..., None]  # Time x frequency image, one channel.
    for channels in self.channels:
      x = nn.Conv(channels, (5, 5), strides=(2, 2), dtype=self.dtype)(x)
      x = clipped_relu(nn.LayerNorm(dtype=self.dtype)(x))
      for _ in range(self.blocks_per_stage):
        x = IdentityBlock(channels, self.dtype)(x)
    b, t, f, c = x.shape
    x = jnp.mean(x.reshape(b, t, f * c), axis=1)  # Temporal average pooling.
    return nn.Dense(self.embed_dim, dtype=self.dtype, name="affine")(x)
