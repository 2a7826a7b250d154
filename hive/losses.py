"""Losses: pure functions of embeddings shaped [N speakers, M utterances, D].

Every loss returns (scalar, {name: scalar metric}). Embeddings are expected
L2-normalised; similarities are cosines.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

_EPS = 1e-8
W_MIN = 1e-6  # GE2E keeps its scale w positive (Wan et al. 2018, Sec. 2.1).


def _normalise(x, axis=-1):
  return x / jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=True) + _EPS)


def ge2e_similarity(embeddings, w, b):
  """Scaled cosine similarity of each utterance to each speaker centroid: [N, M, N].

  An utterance is compared with its own speaker's centroid computed *without*
  it (the exclusive, leave-one-out centroid), which keeps the loss from being
  trivially minimised and stabilises training (GE2E, Eq. 8).
  """
  n, m, _ = embeddings.shape
  e = _normalise(embeddings)
  total = jnp.sum(e, axis=1)  # [N, D]
  centroids = _normalise(total / m)
  exclusive = _normalise((total[:, None, :] - e) / (m - 1))  # [N, M, D]
  cos = jnp.einsum("jid,kd->jik", e, centroids)  # [N, M, N]
  cos_own = jnp.sum(e * exclusive, axis=-1)  # [N, M]
  own = jnp.eye(n, dtype=bool)[:, None, :]  # [N, 1, N]
  cos = jnp.where(own, cos_own[:, :, None], cos)
  return jnp.maximum(w, W_MIN) * cos + b


def ge2e_loss(embeddings, w, b, kind: str = "softmax"):
  """GE2E loss, "softmax" or "contrast" (GE2E, Eqs. 6 and 7), mean over utterances."""
  n, m, _ = embeddings.shape
  if m < 2:
    raise ValueError("GE2E needs at least 2 utterances per speaker")
  s = ge2e_similarity(embeddings, w, b)  # [N, M, N]
  own = jnp.eye(n, dtype=bool)[:, None, :]
  s_own = jnp.sum(jnp.where(own, s, 0.0), axis=-1)  # [N, M]
  if kind == "softmax":
    per_utt = jax.nn.logsumexp(s, axis=-1) - s_own
  elif kind == "contrast":
    sig = jax.nn.sigmoid(s)
    hardest_other = jnp.max(jnp.where(own, -jnp.inf, sig), axis=-1)
    per_utt = 1.0 - jax.nn.sigmoid(s_own) + hardest_other
  else:
    raise ValueError(f"unknown GE2E kind {kind!r}: 'softmax' or 'contrast'")
  accuracy = jnp.mean(jnp.argmax(s, axis=-1) == jnp.arange(n)[:, None])
  loss = jnp.mean(per_utt)
  return loss, {"ge2e": loss, "ge2e_accuracy": accuracy, "ge2e_w": w, "ge2e_b": b}


def group_means(embeddings, group_size: int):
  """[N, M, D] -> [N, M // group_size, D]: normalised means of consecutive groups.

  The one-shot seed's triplets compare averages of several utterances of a
  speaker rather than single utterances; this makes those averages.
  """
  n, m, d = embeddings.shape
  if group_size < 1 or m // group_size < 2:
    raise ValueError(f"group_size={group_size} leaves fewer than 2 groups of {m} utterances")
  groups = m // group_size
  e = embeddings[:, :groups * group_size].reshape(n, groups, group_size, d)
  return _normalise(jnp.mean(e, axis=2))


def triplet_loss(embeddings, margin: float = 0.3, mining: str = "batch_hard",
                 group_size: int = 1):
  """Triplet loss on cosine similarity, triplets mined from the N x M grid.

  loss = relu(cos(a, n) - cos(a, p) + margin). Mining:
    * "batch_hard": per anchor, the least similar positive and most similar negative;
    * "semi_hard": per (anchor, positive), the most similar negative that is still
      less similar than the positive (FaceNet); if there is none, the least
      similar negative (as TensorFlow Addons does).
  With group_size > 1, anchors, positives and negatives are averages of groups
  of `group_size` utterances of a speaker.
  """
  if group_size > 1:
    embeddings = group_means(embeddings, group_size)
  n, m, d = embeddings.shape
  e = _normalise(embeddings.reshape(n * m, d))
  labels = jnp.repeat(jnp.arange(n), m)
  sim = e @ e.T
  same = labels[:, None] == labels[None, :]
  positive = same & ~jnp.eye(n * m, dtype=bool)
  negative = ~same
  if mining == "batch_hard":
    hardest_pos = jnp.min(jnp.where(positive, sim, jnp.inf), axis=1)
    hardest_neg = jnp.max(jnp.where(negative, sim, -jnp.inf), axis=1)
    losses = jax.nn.relu(hardest_neg - hardest_pos + margin)
    loss = jnp.mean(losses)
    active = jnp.mean(losses > 0)
  elif mining == "semi_hard":
    sim_ap = sim[:, :, None]  # [a, p, 1]
    sim_an = sim[:, None, :]  # [a, 1, n]
    candidate = negative[:, None, :] & (sim_an < sim_ap)
    semi = jnp.max(jnp.where(candidate, sim_an, -jnp.inf), axis=2)  # [a, p]
    easiest = jnp.min(jnp.where(negative, sim, jnp.inf), axis=1)[:, None]
    chosen = jnp.where(jnp.isfinite(semi), semi, easiest)
    losses = jax.nn.relu(chosen - sim + margin)
    loss = jnp.sum(jnp.where(positive, losses, 0.0)) / jnp.sum(positive)
    active = jnp.sum(positive & (losses > 0)) / jnp.sum(positive)
  else:
    raise ValueError(f"unknown triplet mining {mining!r}: 'batch_hard' or 'semi_hard'")
  return loss, {"triplet": loss, "triplet_active": active}


def speaker_id_loss(logits, labels, margin: float = 0.0, scale: float = 1.0):
  """Cross-entropy over training speakers; rows with label < 0 are ignored.

  For a cosine head (logits are cosines) margin/scale give the additive-margin
  softmax (AM-softmax): scale * (cos - margin on the true class).
  """
  valid = labels >= 0
  safe = jnp.where(valid, labels, 0)
  onehot = jax.nn.one_hot(safe, logits.shape[-1], dtype=logits.dtype)
  scaled = scale * (logits - margin * onehot)
  per_row = optax.softmax_cross_entropy(scaled, onehot)
  count = jnp.maximum(jnp.sum(valid), 1)
  loss = jnp.sum(jnp.where(valid, per_row, 0.0)) / count
  correct = (jnp.argmax(logits, axis=-1) == labels) & valid
  return loss, {"speaker_id": loss, "speaker_id_accuracy": jnp.sum(correct) / count}


def gender_loss(logits, labels):
  """Binary cross-entropy of the gender logit (1 = female); label -1 (unknown) ignored."""
  valid = labels >= 0
  target = jnp.where(valid, labels, 0).astype(logits.dtype)
  per_row = optax.sigmoid_binary_cross_entropy(logits, target)
  count = jnp.maximum(jnp.sum(valid), 1)
  loss = jnp.sum(jnp.where(valid, per_row, 0.0)) / count
  correct = ((logits > 0).astype(jnp.int32) == labels) & valid
  return loss, {"gender": loss, "gender_accuracy": jnp.sum(correct) / count}


def multitask_loss(outputs, batch, loss_params, weights, config):
  """Config-weighted sum of the enabled losses; each term is also reported.

  outputs: {"embedding": [N*M, D], "speaker_logits": [N*M, S], "gender_logit": [N*M]}
  batch: {"speaker": [N*M], "gender": [N*M]} grouped speaker-major.
  weights: {"ge2e", "triplet", "speaker_id", "gender"} -> float (0 disables a term).
  config: n_utterances, ge2e_kind, triplet_margin, triplet_mining, triplet_group,
          speaker_margin, speaker_scale.
  """
  m = config.n_utterances
  grid = outputs["embedding"].reshape(-1, m, outputs["embedding"].shape[-1])
  grid = grid.astype(jnp.float32)
  total = 0.0
  metrics = {}
  if weights.get("ge2e", 0.0):
    loss, mets = ge2e_loss(grid, loss_params["w"], loss_params["b"], config.ge2e_kind)
    total += weights["ge2e"] * loss
    metrics.update(mets)
  if weights.get("triplet", 0.0):
    loss, mets = triplet_loss(grid, config.triplet_margin, config.triplet_mining,
                              config.triplet_group)
    total += weights["triplet"] * loss
    metrics.update(mets)
  if weights.get("speaker_id", 0.0):
    loss, mets = speaker_id_loss(outputs["speaker_logits"].astype(jnp.float32), batch["speaker"],
                                 config.speaker_margin, config.speaker_scale)
    total += weights["speaker_id"] * loss
    metrics.update(mets)
  if weights.get("gender", 0.0):
    loss, mets = gender_loss(outputs["gender_logit"].astype(jnp.float32), batch["gender"])
    total += weights["gender"] * loss
    metrics.update(mets)
  metrics["loss"] = total
  return total, metrics
