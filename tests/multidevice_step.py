"""One MTL training step on 1 device and on all devices of this process; prints JSON.

Run with XLA_FLAGS=--xla_force_host_platform_device_count=8 (tests/test_parallel.py does).
"""

import json

import jax
import numpy as np

from hive import config as config_lib, parallel, train


def tiny_config():
  c = config_lib.base_config()
  c.data.n_speakers, c.data.n_utterances, c.data.crop_frames = 8, 4, 40
  c.model.embed_dim = 16
  c.model.lstm.hidden, c.model.lstm.layers = 32, 2
  c.augment.enabled = True
  c.train.warmup_steps = 1
  return c


def batch(c, seed=0):
  rng = np.random.default_rng(seed)
  n, m = c.data.n_speakers, c.data.n_utterances
  return {"features": rng.normal(size=(n * m, c.data.crop_frames, 40)).astype(np.float32),
          "speaker": np.repeat(np.arange(n), m).astype(np.int32),
          "gender": np.repeat(np.arange(n) % 3 - 1, m).astype(np.int32)}


def run(devices, c, steps=2):
  mesh = parallel.make_mesh(devices)
  state = train._init_state(c, c.data.n_speakers, mesh)
  step = train.make_train_step(c, mesh)
  for i in range(steps):
    global_batch = parallel.global_batch(batch(c, i), mesh)
    state, metrics = step(state, global_batch)
  shards = len(global_batch["features"].addressable_shards)
  return parallel.fetch(state.params), parallel.fetch(metrics), shards


def main():
  c = tiny_config()
  one_params, one_metrics, one_shards = run(jax.devices()[:1], c)
  all_params, all_metrics, all_shards = run(jax.devices(), c)
  diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))),
                                       one_params, all_params))
  print(json.dumps({
      "devices": jax.device_count(), "shards": [one_shards, all_shards],
      "max_param_diff": max(diffs),
      "metrics_one": {k: float(v) for k, v in one_metrics.items()},
      "metrics_all": {k: float(v) for k, v in all_metrics.items()},
  }))


if __name__ == "__main__":
  main()
