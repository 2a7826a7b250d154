"""The GE2E d-vector network: stacked LSTMs, last frame, linear projection.

Wan et al. 2018 (GE2E) and Resemblyzer: 3 LSTM layers of 256 units, the top
layer's last output projected to the embedding.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class LSTMLayer(nn.Module):
  """An LSTM over time, written for speed on CPU/GPU.

  The input-to-gates product for all timesteps is one large matmul; only the
  small recurrent matmul stays inside the `lax.scan` over time.
  """
  hidden: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, T, F] -> [B, T, H]
    h = self.hidden
    gates_x = nn.Dense(4 * h, dtype=self.dtype, name="input",
                       bias_init=_forget_bias_one(h))(x)
    w_rec = self.param("recurrent", nn.initializers.orthogonal(), (h, 4 * h)).astype(self.dtype)
    batch = x.shape[0]

    def step(carry, g_x):
      h_prev, c_prev = carry
      g = g_x + h_prev.astype(self.dtype) @ w_rec
      i, f, c_hat, o = jnp.split(g.astype(jnp.float32), 4, axis=-1)
      c = jax.nn.sigmoid(f) * c_prev + jax.nn.sigmoid(i) * jnp.tanh(c_hat)
      h_new = jax.nn.sigmoid(o) * jnp.tanh(c)
      return (h_new, c), h_new

    init = (jnp.zeros((batch, h), jnp.float32), jnp.zeros((batch, h), jnp.float32))
    _, hs = jax.lax.scan(step, init, jnp.swapaxes(gates_x, 0, 1))
    return jnp.swapaxes(hs, 0, 1)


def _forget_bias_one(hidden):
  """Bias init with forget gates at 1: the usual LSTM trick for long sequences."""
  def init(key, shape, dtype=jnp.float32):
    del key
    return jnp.zeros(shape, dtype).at[hidden:2 * hidden].set(1.0)
  return init


class LSTMEmbedder(nn.Module):
  embed_dim: int = 256
  hidden: int = 256
  layers: int = 3
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, T, F] -> [B, embed_dim] (not yet normalised)
    x = x.astype(self.dtype)
    for i in range(self.layers):
      x = LSTMLayer(self.hidden, self.dtype, name=f"lstm_{i}")(x)
    return nn.Dense(self.embed_dim, dtype=self.dtype, name="projection")(x[:, -1])
