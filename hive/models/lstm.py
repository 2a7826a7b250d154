"""The GE2E d-vector network: stacked LSTMs, last frame, linear projection.

Wan et al. 2018 (GE2E) and Resemblyzer: 3 LSTM layers of 256 units, the top
layer's last output projected to the embedding.

The LSTM is a `jax.custom_vjp` written for speed on CPU, the way cuDNN and
oneDNN structure theirs; time is cut into chunks of `chunk` steps:

* forward: per chunk, the input-to-gates product of all its steps is one
  [k*B, F] x [F, 4H] matmul; only `h @ W_rec` and the gate arithmetic run per
  step. All four gates are activated by one `tanh` over the [B, 4H] row
  (sigmoid(z) = (1 + tanh(z/2)) / 2), which XLA:CPU vectorises well. With
  gradients, each step also stores what its backward step needs: the gate
  "slopes", d c / d h and f (7H values per step and row, counting h);
* backward: a reverse loop computes per step only the gate gradients (two
  multiplies) and `dh_{t-1} = dgates_t @ W_rec^T`; per chunk, the weight
  gradients are one [F + H, k*B] x [k*B, 4H] matmul (input and recurrent
  kernels together) and the input gradient one [k*B, 4H] x [4H, F] matmul,
  instead of the per-step accumulation that autodiff of a scan produces.
  Chunks, rather than whole-sequence matmuls, keep the [k, B, 4H] temporaries
  small: fresh memory is expensive (page faults) and caches are small.

Everything is time-major inside the stack ([T, B, F]), so consecutive layers
need no transposes. Carries (h, c), the gate arithmetic and all accumulation
are float32; `dtype` is that of the matmul operands, of the stored
activations and of each layer's output. bfloat16 about halves the step on
CPUs with avx512_bf16 (mixed precision: gradients within a few % of float32).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

_F32 = jnp.float32


def _dot(a, b, dtype):
  """a[..., K] @ b[K, N] with operands in `dtype`, accumulated and returned in float32."""
  return jnp.dot(a.astype(dtype), b.astype(dtype), preferred_element_type=_F32)


def _gate_constants(hidden):
  """(scale, offset) per gate column: sigmoid(z) = 0.5 tanh(z / 2) + 0.5 and tanh(z).

  With them every gate is activated by one `tanh` over the whole [B, 4H] row,
  which XLA:CPU vectorises; four activations on column slices it does not.
  """
  half, one = jnp.full((hidden,), 0.5, _F32), jnp.ones((hidden,), _F32)
  scale = jnp.concatenate([half, half, one, half])
  return scale, 1.0 - scale  # offset: 0.5 for the sigmoid gates, 0 for c_hat.


def _bits(a):
  """bfloat16 -> its uint16 bits (free); other dtypes unchanged.

  Arrays that a loop over time slices are passed to it as bits: XLA:CPU
  otherwise converts a whole bfloat16 array to float32 in front of the loop
  (hundreds of MB), and back, instead of converting the slice it reads.
  """
  return jax.lax.bitcast_convert_type(a, jnp.uint16) if a.dtype == jnp.bfloat16 else a


def _unbits(a):
  return jax.lax.bitcast_convert_type(a, jnp.bfloat16) if a.dtype == jnp.uint16 else a


def _chunk_size(steps, chunk):
  """The largest divisor of `steps` that is at most `chunk`."""
  return max(k for k in range(1, min(chunk, steps) + 1) if steps % k == 0)


def _chunks(a, k):
  return a.reshape(a.shape[0] // k, k, *a.shape[1:])


def _unchunk(a):
  return a.reshape(a.shape[0] * a.shape[1], *a.shape[2:])


def _forward(x, w_in, b, w_rec, dtype, chunk, keep):
  """The forward pass; with `keep`, also the activations the backward pass needs.

  Time is cut into chunks of k steps: each chunk's input-to-gates product is
  one [k*B, F] x [F, 4H] matmul inside the loop over chunks, so the [T, B, 4H]
  products are never all in memory at once.
  """
  steps, batch, _ = x.shape
  hidden = w_rec.shape[0]
  k = _chunk_size(steps, chunk)
  w_in, w_rec, b = w_in.astype(dtype), w_rec.astype(dtype), b.astype(_F32)
  scale, offset = _gate_constants(hidden)

  def step(carry, g_x):
    h_prev, c_prev = carry
    act = jnp.tanh((g_x + _dot(h_prev, w_rec, dtype)) * scale) * scale + offset
    i, f, g, o = jnp.split(act, 4, axis=-1)
    c = f * c_prev + i * g
    tanh_c = jnp.tanh(c)
    h = o * tanh_c
    h_out = h.astype(dtype)  # The carry stays float32; the output is what the next matmul reads.
    if not keep:
      return (h, c), h_out
    # What the backward step needs, so that it is two multiplies: with
    # dc = dc' + dh o (1 - tanh(c)^2), the gate gradients are
    # [dc, dc, dc, dh] * [g i (1-i), c_prev f (1-f), i (1-g^2), tanh(c) o (1-o)].
    slopes = jnp.concatenate([g * i * (1.0 - i), c_prev * f * (1.0 - f), i * (1.0 - g * g),
                              tanh_c * o * (1.0 - o)], axis=-1)
    return (h, c), (h_out, slopes.astype(dtype), (o * (1.0 - tanh_c * tanh_c)).astype(dtype),
                    f.astype(dtype))

  def chunk_step(carry, x_chunk):
    gates_x = _dot(_unbits(x_chunk), w_in, dtype) + b  # [k, B, 4H]
    carry, out = jax.lax.scan(step, carry, gates_x, unroll=k)
    return carry, jax.tree.map(_bits, out)

  zeros = jnp.zeros((batch, hidden), _F32)
  _, out = jax.lax.scan(chunk_step, (zeros, zeros), _chunks(_bits(x), k))
  return jax.tree.map(lambda a: _unbits(_unchunk(a)), out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def lstm_time_major(x, w_in, b, w_rec, dtype=_F32, chunk=4):
  """An LSTM layer over time-major input: x [T, B, F] -> h [T, B, H] (in `dtype`).

  w_in [F, 4H], b [4H], w_rec [H, 4H]; gates in the order i, f, c_hat, o;
  zero initial state. Differentiable (a hand-written VJP, see the module doc).
  `dtype`: of the matmul operands; `chunk`: timesteps per matmul over time.
  """
  return _forward(x, w_in, b, w_rec, dtype, chunk, keep=False)


def _lstm_fwd(x, w_in, b, w_rec, dtype, chunk):
  hs, slopes, dc_dh, f = _forward(x, w_in, b, w_rec, dtype, chunk, keep=True)
  return hs, (x, w_in, w_rec, hs, slopes, dc_dh, f)


def _lstm_bwd(dtype, chunk, residuals, d_hs):
  x, w_in, w_rec, hs, slopes, dc_dh, forget = residuals
  steps, batch, hidden = hs.shape
  features = x.shape[-1]
  k = _chunk_size(steps, chunk)
  w_rec_t, w_in_t = w_rec.astype(dtype).T, w_in.astype(dtype).T

  def step(carry, xs):
    dh, dc = carry
    slope, dc_dh_t, f, dh_out = xs
    dh = dh + dh_out.astype(_F32)
    dc = dc + dh * dc_dh_t
    d_gates = jnp.concatenate([dc, dc, dc, dh], axis=-1) * slope
    return (_dot(d_gates, w_rec_t, dtype), dc * f), d_gates.astype(dtype)

  def chunk_step(carry, xs):
    dh, dc, d_w, d_b = carry
    slope, dc_dh_t, f, dh_out, x_chunk, h_chunk, h_before = jax.tree.map(_unbits, xs)
    (dh, dc), d_gates = jax.lax.scan(step, (dh, dc), (slope, dc_dh_t, f, dh_out), reverse=True,
                                     unroll=k)
    # The weight gradients: one [F + H, k*B] x [k*B, 4H] matmul for the chunk.
    h_prev = jnp.concatenate([h_before[None], h_chunk[:-1]])
    inputs = jnp.concatenate([x_chunk.astype(dtype), h_prev.astype(dtype)], axis=-1)
    d_gates = d_gates.reshape(k * batch, 4 * hidden)
    # An explicit [F + H, k*B] operand: XLA:CPU then uses its fast (YNNPACK) matmul; given
    # the transposed [k*B, F + H] it falls back to a float32 Eigen one.
    inputs_t = jnp.transpose(inputs, (2, 0, 1)).reshape(-1, k * batch)
    d_w = d_w + jnp.dot(inputs_t, d_gates, preferred_element_type=_F32)
    d_b = d_b + jnp.sum(d_gates.astype(_F32), axis=0)
    d_x = jnp.dot(d_gates, w_in_t, preferred_element_type=_F32).reshape(k, batch, features)
    return (dh, dc, d_w, d_b), _bits(d_x.astype(x.dtype))

  zeros = jnp.zeros((batch, hidden), _F32)
  hs_chunks = _chunks(hs, k)
  h_before = jnp.concatenate([jnp.zeros_like(hs[:1]), hs_chunks[:-1, -1]])  # h just before each chunk.
  init = (zeros, zeros, jnp.zeros((features + hidden, 4 * hidden), _F32),
          jnp.zeros((4 * hidden,), _F32))
  xs = (_chunks(slopes, k), _chunks(dc_dh, k), _chunks(forget, k), _chunks(d_hs, k),
        _chunks(x, k), hs_chunks, h_before)
  (_, _, d_w, d_b), d_x = jax.lax.scan(chunk_step, init, jax.tree.map(_bits, xs), reverse=True)
  return (_unbits(_unchunk(d_x)), d_w[:features].astype(w_in.dtype), d_b,
          d_w[features:].astype(w_rec.dtype))


lstm_time_major.defvjp(_lstm_fwd, _lstm_bwd)


class _InputParams(nn.Module):
  """The input-to-gates kernel and bias, named and initialised as `nn.Dense` would."""
  features: int
  bias_init: nn.initializers.Initializer

  @nn.compact
  def __call__(self, in_features):
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (in_features, self.features))
    bias = self.param("bias", self.bias_init, (self.features,))
    return kernel, bias


class LSTMLayer(nn.Module):
  """An LSTM over time: [B, T, F] -> [B, T, H] ([T, B, F] -> [T, B, H] if time_major).

  Parameters: input/kernel [F, 4H], input/bias [4H] (forget gate at 1),
  recurrent [H, 4H] (orthogonal); gates in the order i, f, c_hat, o.
  """
  hidden: int
  dtype: jnp.dtype = jnp.float32
  time_major: bool = False
  chunk: int = 4

  @nn.compact
  def __call__(self, x):
    h = self.hidden
    w_in, b = _InputParams(4 * h, _forget_bias_one(h), name="input")(x.shape[-1])
    w_rec = self.param("recurrent", nn.initializers.orthogonal(), (h, 4 * h))
    if not self.time_major:
      x = jnp.swapaxes(x, 0, 1)
    hs = lstm_time_major(x, w_in, b, w_rec, jnp.dtype(self.dtype).type, self.chunk)
    return hs if self.time_major else jnp.swapaxes(hs, 0, 1)


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
  chunk: int = 4  # Timesteps per input/weight-gradient matmul (and per unrolled loop body).

  @nn.compact
  def __call__(self, x):  # [B, T, F] -> [B, embed_dim] (not yet normalised)
    x = jnp.swapaxes(x.astype(self.dtype), 0, 1)  # Time-major through the whole stack.
    for i in range(self.layers):
      x = LSTMLayer(self.hidden, self.dtype, time_major=True, chunk=self.chunk,
                    name=f"lstm_{i}")(x)
    return nn.Dense(self.embed_dim, dtype=self.dtype, name="projection")(x[-1])
