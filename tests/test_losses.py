"""Losses: hand-worked values, loop references from the papers, gradients, masking, invariances."""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hive import losses

TOL = dict(rtol=1e-5, atol=1e-5)

# Jitted once per shape: eager op-by-op dispatch compiles every primitive and is far slower.
ge2e_loss = jax.jit(losses.ge2e_loss, static_argnames="kind")
ge2e_similarity = jax.jit(losses.ge2e_similarity)
triplet_loss = jax.jit(losses.triplet_loss, static_argnames=("mining", "group_size"))
group_means = jax.jit(losses.group_means, static_argnames="group_size")
speaker_id_loss = jax.jit(losses.speaker_id_loss)
gender_loss = jax.jit(losses.gender_loss)


def _unit(deg):
  r = math.radians(deg)
  return [math.cos(r), math.sin(r)]


def _sigmoid(x):
  return 1.0 / (1.0 + math.exp(-x))


def _log_sum_exp(z):
  top = z.max(axis=-1)
  return top + np.log(np.exp(z - top[:, None]).sum(axis=-1))


def _random_grid(rng, n, m, d):
  x = rng.normal(size=(n, m, d))
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------- GE2E


def ge2e_reference(x, w, b, kind):
  """GE2E straight from Wan et al. 2018, Eqs. 5-9, with Python loops in float64."""
  x = np.asarray(x, np.float64)
  n, m, _ = x.shape
  w = max(w, losses.W_MIN)
  e = x / np.linalg.norm(x, axis=-1, keepdims=True)
  unit = lambda v: v / np.linalg.norm(v)
  cos = lambda a, c: float(np.dot(unit(a), unit(c)))
  total = 0.0
  for j in range(n):
    for i in range(m):
      s = []
      for k in range(n):
        if k == j:  # Exclusive centroid: own speaker without this utterance.
          c = sum(e[j, q] for q in range(m) if q != i) / (m - 1)
        else:
          c = sum(e[k, q] for q in range(m)) / m
        s.append(w * cos(e[j, i], c) + b)
      if kind == "softmax":
        total += -s[j] + math.log(sum(math.exp(v) for v in s))
      else:
        total += 1.0 - _sigmoid(s[j]) + max(_sigmoid(s[k]) for k in range(n) if k != j)
  return total / (n * m)


def test_ge2e_orthogonal_speakers_by_hand():
  # A's utterances both (1,0), B's both (0,1). Every exclusive centroid equals the
  # utterance itself (cos 1); the other speaker's centroid is orthogonal (cos 0).
  # With w=10, b=-5: S_own = 10*1 - 5 = 5, S_other = 10*0 - 5 = -5 for all 4 utterances.
  x = jnp.array([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
  # softmax: -5 + log(e^5 + e^-5) = log(1 + e^-10)
  expected_softmax = math.log1p(math.exp(-10.0))
  # contrast: 1 - sigmoid(5) + sigmoid(-5) = 2 sigmoid(-5)
  expected_contrast = 2.0 / (1.0 + math.exp(5.0))
  soft, mets = ge2e_loss(x, 10.0, -5.0, "softmax")
  cont, _ = ge2e_loss(x, 10.0, -5.0, "contrast")
  np.testing.assert_allclose(soft, expected_softmax, **TOL)
  np.testing.assert_allclose(cont, expected_contrast, **TOL)
  assert float(mets["ge2e_accuracy"]) == 1.0
  s = ge2e_similarity(x, 10.0, -5.0)
  np.testing.assert_allclose(s, [[[5, -5], [5, -5]], [[-5, 5], [-5, 5]]], **TOL)


def test_ge2e_45_degree_example_by_hand():
  # A at 0 and 45 degrees, B at 90 and 135 degrees. Full centroids: A at 22.5, B at 112.5.
  # Own (exclusive) centroid of each utterance = the other utterance of its speaker,
  # 45 degrees away: cos 45 = 0.7071 (the inclusive centroid would give cos 22.5 = 0.9239).
  # Cosine to the other speaker's centroid:
  #   A@0 vs B@112.5: cos 112.5 = -sin 22.5;  A@45 vs B@112.5: cos 67.5 = +sin 22.5
  #   B@90 vs A@22.5: cos 67.5 = +sin 22.5;   B@135 vs A@22.5: cos 112.5 = -sin 22.5
  x = jnp.array([[_unit(0), _unit(45)], [_unit(90), _unit(135)]])
  w, b = 10.0, -5.0
  c45, s225 = math.cos(math.radians(45)), math.sin(math.radians(22.5))
  own = w * c45 + b  # 2.0711
  others = [w * -s225 + b, w * s225 + b, w * s225 + b, w * -s225 + b]  # -8.83, -1.17, ...
  expected_s = np.array([[[own, others[0]], [own, others[1]]],
                         [[others[2], own], [others[3], own]]])
  np.testing.assert_allclose(ge2e_similarity(x, w, b), expected_s, **TOL)
  # softmax per utterance: log(1 + exp(S_other - S_own))
  expected_softmax = np.mean([math.log1p(math.exp(o - own)) for o in others])
  # contrast per utterance: 1 - sigmoid(S_own) + sigmoid(S_other)
  expected_contrast = np.mean([1 - _sigmoid(own) + _sigmoid(o) for o in others])
  np.testing.assert_allclose(ge2e_loss(x, w, b, "softmax")[0], expected_softmax, **TOL)
  np.testing.assert_allclose(ge2e_loss(x, w, b, "contrast")[0], expected_contrast, **TOL)
  # The exclusive centroid matters: with the inclusive one, S_own = 10 cos 22.5 - 5.
  inclusive_own = w * math.cos(math.radians(22.5)) + b
  inclusive = np.mean([math.log1p(math.exp(o - inclusive_own)) for o in others])
  assert abs(inclusive - expected_softmax) > 1e-2


@pytest.mark.parametrize("kind", ["softmax", "contrast"])
@pytest.mark.parametrize("n,m,d,w,b", [
    (2, 2, 2, 10.0, -5.0), (3, 4, 8, 5.0, -2.0), (5, 3, 16, 1.0, 0.5),
    (4, 6, 4, 20.0, -10.0), (3, 2, 3, -3.0, -1.0), (6, 5, 32, 0.0, 2.0)])
def test_ge2e_matches_loop_reference(kind, n, m, d, w, b):
  rng = np.random.default_rng(n * 100 + m * 10 + d)
  x = _random_grid(rng, n, m, d) * rng.uniform(0.5, 2.0, size=(n, m, 1)).astype(np.float32)
  got, _ = ge2e_loss(jnp.asarray(x), w, b, kind)
  np.testing.assert_allclose(got, ge2e_reference(x, w, b, kind), **TOL)


def test_ge2e_gradients_reach_w_and_b():
  x = jnp.asarray(_random_grid(np.random.default_rng(0), 4, 3, 8))
  for kind in ("softmax", "contrast"):
    gw, gb = jax.grad(lambda w, b: ge2e_loss(x, w, b, kind)[0], argnums=(0, 1))(10.0, -5.0)
    assert np.isfinite(gw) and abs(float(gw)) > 1e-6, kind
    assert np.isfinite(gb), kind
    if kind == "contrast":
      assert abs(float(gb)) > 1e-6
    else:
      # A common shift b of all logits cancels in the softmax (logsumexp(s + b) - (s_own + b)),
      # so the softmax GE2E is exactly independent of b: its gradient is zero, not a bug.
      assert abs(float(gb)) < 1e-6
      np.testing.assert_allclose(ge2e_loss(x, 10.0, 3.0, kind)[0],
                                 ge2e_loss(x, 10.0, -5.0, kind)[0], **TOL)


def test_ge2e_w_is_kept_positive():
  x = jnp.asarray(_random_grid(np.random.default_rng(1), 3, 4, 5))
  for kind in ("softmax", "contrast"):
    at_min = ge2e_loss(x, losses.W_MIN, -1.0, kind)[0]
    for w in (0.0, -1.0, -100.0, 1e-9):
      np.testing.assert_allclose(ge2e_loss(x, w, -1.0, kind)[0], at_min, rtol=1e-7)
    s = ge2e_similarity(x, -7.0, 0.0)
    assert np.max(np.abs(np.asarray(s))) <= 1.0001 * losses.W_MIN
    # Above the clamp w acts normally.
    assert float(ge2e_loss(x, 2.0, -1.0, kind)[0]) != float(at_min)


def test_ge2e_rejects_bad_input():
  # Raised while tracing: eval_shape checks without running anything.
  with pytest.raises(ValueError):
    jax.eval_shape(losses.ge2e_loss, np.ones((3, 1, 4), np.float32), 10.0, -5.0)
  with pytest.raises(ValueError):
    jax.eval_shape(lambda x: losses.ge2e_loss(x, 10.0, -5.0, "bogus"), np.ones((3, 2, 4), np.float32))


# ---------------------------------------------------------------- triplet


def triplet_reference(x, margin, mining):
  """Triplet loss with Python loops over anchors, positives and negatives (float64)."""
  x = np.asarray(x, np.float64)
  n, m, d = x.shape
  e = x.reshape(n * m, d)
  e = e / np.linalg.norm(e, axis=1, keepdims=True)
  labels = np.repeat(np.arange(n), m)
  sim = e @ e.T
  per = []
  for a in range(n * m):
    pos = [p for p in range(n * m) if labels[p] == labels[a] and p != a]
    neg = [q for q in range(n * m) if labels[q] != labels[a]]
    if mining == "batch_hard":
      per.append(max(0.0, max(sim[a, q] for q in neg) - min(sim[a, p] for p in pos) + margin))
    else:
      for p in pos:
        semi = [sim[a, q] for q in neg if sim[a, q] < sim[a, p]]
        chosen = max(semi) if semi else min(sim[a, q] for q in neg)
        per.append(max(0.0, chosen - sim[a, p] + margin))
  return float(np.mean(per))


def _triplet_example():
  # Index: 0 = A@0, 1 = A@60, 2 = B@90 = (0,1), 3 = B@180 = (-1,0).
  # Cosines: s01 = 0.5, s02 = 0, s03 = -1, s12 = cos 30 = sqrt(3)/2, s13 = -0.5, s23 = 0.
  return jnp.array([[[1.0, 0.0], [0.5, math.sqrt(3) / 2]], [[0.0, 1.0], [-1.0, 0.0]]])


def test_triplet_batch_hard_by_hand():
  # margin 0.3; per anchor: relu(max neg sim - min pos sim + 0.3)
  #   a0: pos 0.5, negs {0, -1}    -> relu(0 - 0.5 + 0.3)            = 0
  #   a1: pos 0.5, negs {r3/2, -.5} -> r3/2 - 0.5 + 0.3               = r3/2 - 0.2
  #   a2: pos 0,   negs {0, r3/2}   -> r3/2 - 0 + 0.3                 = r3/2 + 0.3
  #   a3: pos 0,   negs {-1, -0.5}  -> relu(-0.5 + 0.3)               = 0
  # mean = (sqrt(3) + 0.1) / 4, two of four active.
  loss, mets = triplet_loss(_triplet_example(), 0.3, "batch_hard")
  np.testing.assert_allclose(loss, (math.sqrt(3) + 0.1) / 4, **TOL)
  np.testing.assert_allclose(mets["triplet_active"], 0.5, **TOL)


def test_triplet_semi_hard_by_hand():
  # One positive per anchor. Semi-hard negative: the most similar one with sim < sim(a, p).
  #   (a0,p1) sim 0.5: negs {0, -1} both < 0.5, max 0        -> relu(0 - 0.5 + 0.3)    = 0
  #   (a1,p0) sim 0.5: negs {r3/2, -0.5}, only -0.5 < 0.5     -> relu(-0.5 - 0.5 + 0.3) = 0
  #   (a2,p3) sim 0:   negs {0, r3/2}, none strictly < 0      -> fallback to the least
  #                    similar negative, 0                    -> relu(0 - 0 + 0.3)      = 0.3
  #                    (the hardest negative would have given r3/2 + 0.3)
  #   (a3,p2) sim 0:   negs {-1, -0.5} both < 0, max -0.5     -> relu(-0.5 + 0.3)       = 0
  # mean = 0.3 / 4 = 0.075, one of four active.
  loss, mets = triplet_loss(_triplet_example(), 0.3, "semi_hard")
  np.testing.assert_allclose(loss, 0.075, **TOL)
  np.testing.assert_allclose(mets["triplet_active"], 0.25, **TOL)


@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard"])
@pytest.mark.parametrize("n,m,d,margin", [
    (2, 2, 3, 0.3), (3, 4, 8, 0.2), (5, 3, 16, 0.5), (4, 5, 4, 0.1), (6, 2, 32, 1.0)])
def test_triplet_matches_loop_reference(mining, n, m, d, margin):
  rng = np.random.default_rng(n * 100 + m * 10 + d)
  x = _random_grid(rng, n, m, d) * rng.uniform(0.5, 2.0, size=(n, m, 1)).astype(np.float32)
  got, _ = triplet_loss(jnp.asarray(x), margin, mining)
  np.testing.assert_allclose(got, triplet_reference(x, margin, mining), **TOL)


def test_group_means_by_hand():
  # N=1, M=5, group_size=2: groups {0,1}, {2,3}; utterance 4 is dropped.
  x = jnp.array([[[1.0, 0.0], [0.0, 1.0], [3.0, 0.0], [1.0, 0.0], [0.0, -9.0]]])
  got = group_means(x, 2)
  r = 1 / math.sqrt(2)
  # mean (0.5, 0.5) -> (r, r); mean (2, 0) -> (1, 0)
  np.testing.assert_allclose(got, [[[r, r], [1.0, 0.0]]], **TOL)
  assert got.shape == (1, 2, 2)


def test_triplet_groups_equal_plain_triplet_on_group_means():
  x = jnp.asarray(_random_grid(np.random.default_rng(7), 4, 10, 8))
  means = group_means(x, 5)
  assert means.shape == (4, 2, 8)
  expected_means = np.asarray(x).reshape(4, 2, 5, 8).mean(axis=2)
  expected_means /= np.linalg.norm(expected_means, axis=-1, keepdims=True)
  np.testing.assert_allclose(means, expected_means, **TOL)
  for mining in ("batch_hard", "semi_hard"):
    grouped, _ = triplet_loss(x, 0.3, mining, group_size=5)
    plain, _ = triplet_loss(means, 0.3, mining)
    np.testing.assert_allclose(grouped, plain, **TOL)
    np.testing.assert_allclose(grouped, triplet_reference(np.asarray(means), 0.3, mining), **TOL)


@pytest.mark.parametrize("group_size", [0, -1, 6, 11])
def test_invalid_group_size_raises(group_size):
  x = np.ones((2, 10, 4), np.float32)
  with pytest.raises(ValueError):
    jax.eval_shape(lambda v: losses.group_means(v, group_size), x)
  if group_size > 1:
    with pytest.raises(ValueError):
      jax.eval_shape(lambda v: losses.triplet_loss(v, 0.3, "batch_hard", group_size), x)


def test_triplet_unknown_mining_raises():
  with pytest.raises(ValueError):
    jax.eval_shape(lambda v: losses.triplet_loss(v, 0.3, "random"), np.ones((2, 2, 3), np.float32))


# ---------------------------------------------------------------- speaker id


def test_speaker_id_plain_is_softmax_cross_entropy():
  rng = np.random.default_rng(3)
  logits = jnp.asarray(rng.normal(size=(12, 7)).astype(np.float32))
  labels = jnp.asarray(rng.integers(0, 7, size=12))
  loss, _ = speaker_id_loss(logits, labels)
  expected = jax.jit(optax.softmax_cross_entropy_with_integer_labels)(logits, labels).mean()
  np.testing.assert_allclose(loss, expected, **TOL)
  lg = np.asarray(logits, np.float64)
  plain = np.mean([np.log(np.exp(lg[r]).sum()) - lg[r, int(labels[r])] for r in range(12)])
  np.testing.assert_allclose(loss, plain, **TOL)


def test_speaker_id_am_softmax():
  rng = np.random.default_rng(4)
  cos = jnp.asarray(rng.uniform(-1, 1, size=(10, 5)).astype(np.float32))
  labels = jnp.asarray(rng.integers(0, 5, size=10))
  base, _ = speaker_id_loss(cos, labels, 0.0, 30.0)
  with_margin, _ = speaker_id_loss(cos, labels, 0.2, 30.0)
  assert float(with_margin) > float(base)
  # By definition: s * (cos - m on the true class).
  shifted = 30.0 * (np.asarray(cos, np.float64) - 0.2 * np.eye(5)[np.asarray(labels)])
  expected = np.mean(_log_sum_exp(shifted) - shifted[np.arange(10), np.asarray(labels)])
  np.testing.assert_allclose(with_margin, expected, **TOL)
  bigger, _ = speaker_id_loss(cos, labels, 0.35, 30.0)
  assert float(bigger) > float(with_margin)


def test_speaker_id_masks_unknown_rows():
  rng = np.random.default_rng(5)
  logits = rng.normal(size=(6, 4)).astype(np.float32)
  labels = np.array([0, -1, 2, 3, -1, 1])
  valid = labels >= 0
  loss, _ = speaker_id_loss(jnp.asarray(logits), labels)
  lg = logits[valid].astype(np.float64)
  expected = np.mean(_log_sum_exp(lg) - lg[np.arange(4), labels[valid]])
  np.testing.assert_allclose(loss, expected, **TOL)
  changed = logits.copy()
  changed[~valid] = rng.normal(size=(2, 4)) * 50
  np.testing.assert_allclose(speaker_id_loss(jnp.asarray(changed), labels)[0], loss, **TOL)
  grad = jax.jit(jax.grad(lambda z: losses.speaker_id_loss(z, labels, 0.1, 5.0)[0]))(logits)
  assert np.all(np.asarray(grad)[~valid] == 0)
  assert np.all(np.abs(np.asarray(grad)[valid]).sum(axis=1) > 0)
  # All unknown: zero loss, no NaN.
  loss, mets = speaker_id_loss(jnp.asarray(logits), np.full((6,), -1))
  assert float(loss) == 0.0 and float(mets["speaker_id_accuracy"]) == 0.0


def test_speaker_id_accuracy():
  logits = jnp.array([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0], [3.0, 0.0, 0.0],
                      [0.0, 3.0, 0.0]])
  labels = jnp.array([0, 1, 0, -1, 2])  # rows 0, 1 right, 2 and 4 wrong, 3 unknown
  _, mets = speaker_id_loss(logits, labels)
  np.testing.assert_allclose(mets["speaker_id_accuracy"], 0.5, **TOL)


# ---------------------------------------------------------------- gender


def test_gender_loss_by_hand():
  logits = jnp.array([2.0, -1.0, 0.5, -3.0])
  labels = jnp.array([1, 0, -1, 1])
  # BCE(z, y) = -y log sigmoid(z) - (1 - y) log(1 - sigmoid(z)):
  #   (2, 1):  log(1 + e^-2);   (-1, 0): log(1 + e^-1);   (-3, 1): log(1 + e^3)
  expected = (math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)) + math.log1p(math.exp(3))) / 3
  loss, mets = gender_loss(logits, labels)
  np.testing.assert_allclose(loss, expected, **TOL)
  np.testing.assert_allclose(mets["gender_accuracy"], 2 / 3, **TOL)  # row 3 wrong


def test_gender_loss_ignores_unknown():
  labels = jnp.array([1, -1, 0, -1])
  logits = jnp.array([0.3, -2.0, 1.5, 4.0])
  loss, _ = gender_loss(logits, labels)
  other = gender_loss(jnp.array([0.3, 40.0, 1.5, -9.0]), labels)[0]
  np.testing.assert_allclose(loss, other, **TOL)
  grad = np.asarray(jax.jit(jax.grad(lambda z: losses.gender_loss(z, labels)[0]))(logits))
  assert grad[1] == 0 and grad[3] == 0 and grad[0] != 0 and grad[2] != 0
  unknown = np.full((4,), -1)
  loss, mets = gender_loss(logits, unknown)
  grad = np.asarray(jax.jit(jax.grad(lambda z: losses.gender_loss(z, unknown)[0]))(logits))
  assert float(loss) == 0.0 and float(mets["gender_accuracy"]) == 0.0
  assert np.all(np.isfinite(grad)) and np.all(grad == 0)


# ---------------------------------------------------------------- multitask


def _multitask_inputs(n=3, m=4, d=8, speakers=5):
  rng = np.random.default_rng(11)
  outputs = {"embedding": jnp.asarray(_random_grid(rng, n, m, d).reshape(n * m, d)),
             "speaker_logits": jnp.asarray(rng.normal(size=(n * m, speakers)).astype(np.float32)),
             "gender_logit": jnp.asarray(rng.normal(size=(n * m,)).astype(np.float32))}
  batch = {"speaker": np.repeat(np.array([0, 3, -1]), m),
           "gender": np.repeat(np.array([1, -1, 0]), m)}
  config = types.SimpleNamespace(n_utterances=m, ge2e_kind="contrast", triplet_margin=0.25,
                                 triplet_mining="semi_hard", triplet_group=2,
                                 speaker_margin=0.1, speaker_scale=4.0)
  params = {"w": jnp.asarray(8.0), "b": jnp.asarray(-3.0)}
  return outputs, batch, params, config


def _multitask(outputs, batch, params, weights, config):
  return jax.jit(lambda o, b, p: losses.multitask_loss(o, b, p, weights, config))(
      outputs, batch, params)


_TERMS = {}


def _terms(outputs, batch, params, config):
  """Each term on its own, computed once for the module."""
  if not _TERMS:
    terms = jax.jit(lambda o, b, p: _terms_eager(o, b, p, config))(outputs, batch, params)
    _TERMS.update({k: float(v) for k, v in terms.items()})
  return _TERMS


def _terms_eager(outputs, batch, params, config):
  m = config.n_utterances
  grid = outputs["embedding"].reshape(-1, m, outputs["embedding"].shape[-1])
  return {
      "ge2e": losses.ge2e_loss(grid, params["w"], params["b"], config.ge2e_kind)[0],
      "triplet": losses.triplet_loss(grid, config.triplet_margin, config.triplet_mining,
                                     config.triplet_group)[0],
      "speaker_id": losses.speaker_id_loss(outputs["speaker_logits"], batch["speaker"],
                                           config.speaker_margin, config.speaker_scale)[0],
      "gender": losses.gender_loss(outputs["gender_logit"], batch["gender"])[0],
  }


def test_multitask_is_weighted_sum_and_reports_terms():
  outputs, batch, params, config = _multitask_inputs()
  terms = _terms(outputs, batch, params, config)
  weights = {"ge2e": 1.0, "triplet": 0.5, "speaker_id": 2.0, "gender": 0.25}
  total, mets = _multitask(outputs, batch, params, weights, config)
  expected = sum(weights[k] * float(terms[k]) for k in terms)
  np.testing.assert_allclose(total, expected, **TOL)
  np.testing.assert_allclose(mets["loss"], expected, **TOL)
  for k in terms:
    np.testing.assert_allclose(mets[k], terms[k], **TOL)
    assert float(terms[k]) > 0
  for k in ("ge2e_accuracy", "triplet_active", "speaker_id_accuracy", "gender_accuracy"):
    assert k in mets


def test_multitask_zero_weight_disables_a_term():
  outputs, batch, params, config = _multitask_inputs()
  terms = _terms(outputs, batch, params, config)
  names = list(terms)
  for off in names:
    weights = {k: (0.0 if k == off else 1.5) for k in names}
    total, mets = _multitask(outputs, batch, params, weights, config)
    np.testing.assert_allclose(total, sum(1.5 * float(terms[k]) for k in names if k != off), **TOL)
    assert off not in mets
    assert all(k in mets for k in names if k != off)
  # A missing key is the same as weight 0.
  total, mets = _multitask(outputs, batch, params, {"gender": 1.0}, config)
  np.testing.assert_allclose(total, terms["gender"], **TOL)
  assert set(mets) == {"gender", "gender_accuracy", "loss"}


# ---------------------------------------------------------------- invariances


def _loss_fns():
  return {
      "ge2e_softmax": lambda x: ge2e_loss(x, 10.0, -5.0, "softmax")[0],
      "ge2e_contrast": lambda x: ge2e_loss(x, 10.0, -5.0, "contrast")[0],
      "triplet_batch_hard": lambda x: triplet_loss(x, 0.3, "batch_hard")[0],
      "triplet_semi_hard": lambda x: triplet_loss(x, 0.3, "semi_hard")[0],
      "triplet_grouped": lambda x: triplet_loss(x, 0.3, "batch_hard", group_size=2)[0],
  }


@pytest.mark.parametrize("name", list(_loss_fns()))
def test_scale_invariance(name):
  fn = _loss_fns()[name]
  rng = np.random.default_rng(21)
  x = _random_grid(rng, 4, 4, 6)
  base = fn(jnp.asarray(x))
  np.testing.assert_allclose(fn(jnp.asarray(3.7 * x)), base, **TOL)
  np.testing.assert_allclose(fn(jnp.asarray(0.2 * x)), base, **TOL)
  if name != "triplet_grouped":  # Group means average raw vectors: only a global scale is free.
    per_vector = x * rng.uniform(0.1, 10.0, size=(4, 4, 1)).astype(np.float32)
    np.testing.assert_allclose(fn(jnp.asarray(per_vector)), base, **TOL)


@pytest.mark.parametrize("name", list(_loss_fns()))
def test_permutation_invariance(name):
  fn = _loss_fns()[name]
  rng = np.random.default_rng(22)
  x = _random_grid(rng, 4, 4, 6)
  base = fn(jnp.asarray(x))
  speakers = rng.permutation(4)
  np.testing.assert_allclose(fn(jnp.asarray(x[speakers])), base, **TOL)
  if name == "triplet_grouped":
    # Only permutations that keep the groups {0,1}, {2,3} are free: swap within and across.
    utterances = [3, 2, 1, 0]
  else:
    utterances = rng.permutation(4)
  np.testing.assert_allclose(fn(jnp.asarray(x[:, utterances])), base, **TOL)
  # A different within-speaker order for every speaker.
  shuffled = np.stack([x[j, rng.permutation(4) if name != "triplet_grouped" else
                         [[1, 0, 2, 3], [0, 1, 3, 2], [2, 3, 0, 1], [3, 2, 1, 0]][j]]
                       for j in range(4)])
  np.testing.assert_allclose(fn(jnp.asarray(shuffled)), base, **TOL)
