"""The LSTM layer's hand-written VJP against autodiff of a plain, per-step LSTM."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hive.models.lstm import LSTMEmbedder, LSTMLayer, lstm_time_major

B, T, F, H = 3, 7, 5, 4


def reference_lstm(x, w_in, b, w_rec):
  """x [B, T, F] -> [B, T, H]: the textbook LSTM, one timestep at a time, gates i, f, c_hat, o."""
  h = jnp.zeros((x.shape[0], w_rec.shape[0]))
  c = jnp.zeros_like(h)
  outputs = []
  for t in range(x.shape[1]):
    z = x[:, t] @ w_in + h @ w_rec + b
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    outputs.append(h)
  return jnp.stack(outputs, axis=1)


def reference_apply(params, x):
  return reference_lstm(x, params["input"]["kernel"], params["input"]["bias"],
                        params["recurrent"])


@functools.lru_cache(maxsize=None)
def params_and_input(steps=T):
  x = jax.random.normal(jax.random.PRNGKey(0), (B, steps, F))
  params = init_layer(x)
  # Non-trivial bias (init is 0 / forget 1) so every gradient term is exercised.
  params["input"]["bias"] = params["input"]["bias"] + 0.3 * jax.random.normal(
      jax.random.PRNGKey(2), (4 * H,))
  return params, x


@jax.jit
def init_layer(x):
  return LSTMLayer(H).init(jax.random.PRNGKey(1), x)["params"]


def test_parameters_as_before():
  """Same tree, shapes and initialisers as the Dense + recurrent kernel it replaces."""
  params = init_layer(jnp.zeros((B, T, F)))
  assert jax.tree.map(jnp.shape, params) == {
      "input": {"kernel": (F, 4 * H), "bias": (4 * H,)}, "recurrent": (H, 4 * H)}
  np.testing.assert_array_equal(params["input"]["bias"],
                                np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)])
  w = np.asarray(params["recurrent"])  # Orthogonal rows.
  np.testing.assert_allclose(w @ w.T, np.eye(H), atol=1e-5)


@pytest.mark.parametrize("steps, chunk", [(T, 8), (8, 3)])  # One chunk of 7; four of 2.
def test_gradients_match_autodiff_of_reference(steps, chunk):
  params, x = params_and_input(steps)
  layer = LSTMLayer(H, chunk=chunk)
  # A loss that weights every output (as for a lower layer) and the last one extra (top layer).
  weights = jax.random.normal(jax.random.PRNGKey(7), (B, steps, H))

  def loss(apply):
    def fn(params, x):
      out = apply(params, x)
      return jnp.sum(weights * out) + jnp.sum(jnp.sin(out[:, -1]))
    return jax.jit(jax.grad(fn, argnums=(0, 1)))

  (gp, gx), (rp, rx) = (loss(lambda p, x: layer.apply({"params": p}, x))(params, x),
                        loss(reference_apply)(params, x))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), gp, rp)
  np.testing.assert_allclose(gx, rx, rtol=1e-4, atol=1e-6)


def test_forward_and_vjp_match_reference():
  """The time-major function, with a random cotangent for every output; chunks of 1 step."""
  params, x = params_and_input()
  args = (jnp.swapaxes(x, 0, 1), params["input"]["kernel"], params["input"]["bias"],
          params["recurrent"])
  reference = lambda x, *w: jnp.swapaxes(reference_lstm(jnp.swapaxes(x, 0, 1), *w), 0, 1)
  ct = jax.random.normal(jax.random.PRNGKey(4), (T, B, H))

  @jax.jit
  def vjps(args):
    out, vjp = jax.vjp(lambda *a: lstm_time_major(*a, jnp.float32, 1), *args)
    ref_out, ref_vjp = jax.vjp(reference, *args)
    return out, vjp(ct), ref_out, ref_vjp(ct)

  out, grads, ref_out, ref_grads = vjps(args)
  assert out.shape == (T, B, H) and out.dtype == jnp.float32
  np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-6)
  for a, b in zip(grads, ref_grads):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_bfloat16_gradients_close_to_float32():
  """bf16 matmul operands and stored activations (float32 carries, gate math and
  accumulation): gradients within a few % of float32's."""
  params, x = params_and_input()

  @functools.partial(jax.jit, static_argnums=0)
  def grads(dtype):
    layer = LSTMLayer(H, dtype=dtype)
    loss = lambda p, x: jnp.sum(jnp.sin(layer.apply({"params": p}, x).astype(jnp.float32)))
    return jax.grad(loss, argnums=(0, 1))(params, x)

  for a, b in zip(jax.tree.leaves(grads(jnp.bfloat16)), jax.tree.leaves(grads(jnp.float32))):
    assert a.dtype == b.dtype == jnp.float32
    assert np.linalg.norm(a - b) <= 0.05 * np.linalg.norm(b)


def test_embedder_trains_in_bfloat16():
  x = jax.random.normal(jax.random.PRNGKey(0), (B, T, F))
  model = LSTMEmbedder(embed_dim=6, hidden=H, layers=2, dtype=jnp.bfloat16)
  params = jax.jit(model.init)(jax.random.PRNGKey(1), x)["params"]
  assert set(params) == {"lstm_0", "lstm_1", "projection"}
  grads = jax.jit(jax.grad(
      lambda p: jnp.sum(model.apply({"params": p}, x).astype(jnp.float32) ** 2)))(params)
  assert all(g.dtype == jnp.float32 and np.isfinite(g).all() and np.any(g != 0)
             for g in jax.tree.leaves(grads))


def reference_embedder(params, x, layers):
  """LSTMEmbedder's function written plainly: textbook layers, last frame, projection."""
  for i in range(layers):
    x = reference_apply(params[f"lstm_{i}"], x)
  return x[:, -1] @ params["projection"]["kernel"] + params["projection"]["bias"]


def test_twenty_adam_steps_follow_the_float32_reference():
  """Training quality, not just one gradient: 20 Adam steps of GE2E on a fixed batch. The
  hand-written VJP in float32 follows the autodiff reference to 1e-5 at every step; in
  bfloat16 (mixed precision) to 1 %, while the loss itself falls by 30 %."""
  import optax
  from hive import losses
  n, m, steps, layers = 4, 3, 10, 2
  x = jax.random.normal(jax.random.PRNGKey(5), (n * m, steps, F))
  model = LSTMEmbedder(embed_dim=6, hidden=H, layers=layers, chunk=3)
  params = jax.jit(model.init)(jax.random.PRNGKey(6), x)["params"]
  tx = optax.adam(1e-3)

  def trajectory(embed):
    def loss_fn(p):
      e = embed(p).astype(jnp.float32).reshape(n, m, -1)
      e = e / jnp.linalg.norm(e, axis=-1, keepdims=True)
      return losses.ge2e_loss(e, 10.0, -5.0)[0]

    @jax.jit
    def step(p, opt):
      loss, g = jax.value_and_grad(loss_fn)(p)
      updates, opt = tx.update(g, opt, p)
      return optax.apply_updates(p, updates), opt, loss

    p, opt, out = params, tx.init(params), []
    for _ in range(20):
      p, opt, loss = step(p, opt)
      out.append(float(loss))
    return np.array(out)

  reference = trajectory(lambda p: reference_embedder(p, x, layers))
  f32 = trajectory(lambda p: model.apply({"params": p}, x))
  bf16 = trajectory(lambda p: model.clone(dtype=jnp.bfloat16).apply({"params": p}, x))
  assert reference[-1] < 0.75 * reference[0]  # It learns (5.1 -> 3.6): a gap would show.
  np.testing.assert_allclose(f32, reference, rtol=1e-5)  # Measured: 2.5e-7.
  np.testing.assert_allclose(bf16, reference, rtol=1e-2)  # Measured: 0.3 %.
