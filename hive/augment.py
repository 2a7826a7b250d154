"""Training-time augmentation of log-mel batches: pure JAX, inside the jitted step.

  * additive noise at a random SNR, applied in the mel-power domain
    (log(exp(x) + noise)): the expected effect of adding stationary noise with
    the utterance's average spectral shape;
  * SpecAugment-style masking (Park et al. 2019): a few random frequency bands
    and time stretches replaced by the utterance mean.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def add_noise(rng, features, snr_db_range, probability):
  b = features.shape[0]
  k_apply, k_snr, k_tilt = jax.random.split(rng, 3)
  snr = jax.random.uniform(k_snr, (b, 1, 1), minval=snr_db_range[0], maxval=snr_db_range[1])
  # Noise level relative to the utterance's mean power in each band, with a random tilt.
  mean_power = jax.nn.logsumexp(features, axis=1, keepdims=True) - jnp.log(features.shape[1])
  tilt = jax.random.normal(k_tilt, (b, 1, 1)) * jnp.linspace(-1.0, 1.0, features.shape[2])
  noise = mean_power - snr * jnp.log(10.0) / 10.0 + tilt
  noisy = jnp.logaddexp(features, noise)
  apply = jax.random.bernoulli(k_apply, probability, (b, 1, 1))
  return jnp.where(apply, noisy, features)


def _mask(rng, features, axis, count, max_width):
  """Sets `count` random stretches (width <= max_width) along `axis` to the utterance mean."""
  b, size = features.shape[0], features.shape[axis]
  positions = jnp.arange(size)
  mask = jnp.zeros((b, size), bool)
  for key in jax.random.split(rng, count):
    k_width, k_start = jax.random.split(key)
    width = jax.random.randint(k_width, (b, 1), 0, max_width + 1)
    start = jax.random.randint(k_start, (b, 1), 0, jnp.maximum(size - width, 1))
    mask |= (positions[None] >= start) & (positions[None] < start + width)
  mask = mask[:, :, None] if axis == 1 else mask[:, None, :]
  mean = jnp.mean(features, axis=(1, 2), keepdims=True)
  return jnp.where(mask, mean, features)


def augment(rng, features, config):
  """Applies the augmentations enabled in `config` (an `augment` config block)."""
  if not config.get("enabled", False):
    return features
  k_noise, k_freq, k_time = jax.random.split(rng, 3)
  features = features.astype(jnp.float32)
  if config.noise_probability > 0:
    features = add_noise(k_noise, features, config.snr_db, config.noise_probability)
  if config.freq_masks > 0:
    features = _mask(k_freq, features, 2, config.freq_masks, config.freq_mask_width)
  if config.time_masks > 0:
    features = _mask(k_time, features, 1, config.time_masks, config.time_mask_width)
  return features
