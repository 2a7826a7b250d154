"""The one place that knows about devices: mesh, shardings, global batches.

Data parallelism over a 1-D mesh axis "data" spanning every device of every
process. Parameters are replicated; the batch is split along its first axis.
Because the step is jitted over global arrays, GE2E's centroids and similarity
matrix are computed over the whole global N x M grid, not per device.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Joins a multi-process job when flags or the environment describe one.

  Explicit arguments win; otherwise JAX's own auto-detection (SLURM, Cloud TPU,
  Open MPI, Kubernetes) is used when it recognises the environment, and
  HIVE_COORDINATOR / HIVE_NUM_PROCESSES / HIVE_PROCESS_ID are honoured.
  """
  coordinator = coordinator or os.environ.get("HIVE_COORDINATOR")
  if num_processes is None and "HIVE_NUM_PROCESSES" in os.environ:
    num_processes = int(os.environ["HIVE_NUM_PROCESSES"])
  if process_id is None and "HIVE_PROCESS_ID" in os.environ:
    process_id = int(os.environ["HIVE_PROCESS_ID"])
  if coordinator or num_processes:
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
  elif any(k in os.environ for k in ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES",
                                     "OMPI_COMM_WORLD_SIZE")):
    jax.distributed.initialize()  # JAX detects the cluster itself.
  else:
    return
  logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def make_mesh(devices=None) -> Mesh:
  devices = np.asarray(devices if devices is not None else jax.devices())
  return Mesh(devices.reshape(-1), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """This process's rows -> global arrays sharded along the data axis."""
  sharding = data_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      local_batch)


def replicate(x, mesh: Mesh):
  """Host data every process holds identically -> a replicated global array."""
  return jax.make_array_from_process_local_data(replicated(mesh), np.asarray(x))


def fetch(tree):
  """Replicated (or single-process) arrays -> numpy, also where other processes hold shards."""
  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(x.addressable_data(0))
    return np.asarray(jax.device_get(x))
  return jax.tree.map(get, tree)


def check_divisible(global_rows: int, mesh: Mesh) -> None:
  if global_rows % mesh.size:
    raise ValueError(f"a batch of {global_rows} rows cannot be split over {mesh.size} devices; "
                     "choose n_speakers * n_utterances divisible by the device count")
