"""Checkpoints with orbax: `WORKDIR/checkpoints/<step>/`, and the config beside them.

The whole `TrainState` is saved (parameters, optimiser state, step, RNG). The
data pipeline needs no state of its own: batch k is a function of the seed and
k, so restoring the step restores the data position. Orbax writes each
checkpoint to a temporary directory and renames it when complete, so a run
killed at any moment (even SIGKILL) restarts from the last complete one.

The other files of a workdir (config, speakers, centring mean, threshold) and their names
belong to hive/workdir.py.
"""

from __future__ import annotations

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from hive import workdir as workdir_lib
from hive.workdir import checkpoint_dir

COMMIT_MARKER = "commit_success.txt"  # orbax's, see orbax.checkpoint path atomicity.


def make_manager(workdir, max_to_keep: int = 3, create: bool = True) -> ocp.CheckpointManager:
  """`create=False` for readers: loading a model must not leave directories behind."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager: ocp.CheckpointManager, state) -> None:
  step = int(np.asarray(state.step.addressable_data(0)))  # Same on every process.
  manager.save(step, args=ocp.args.StandardSave(state), force=True)


def restore_latest(manager: ocp.CheckpointManager, target, step: int | None = None):
  """Restores `step` (default: the latest) into the structure/shardings of `target`.

  Returns `target` unchanged when there is no checkpoint yet.
  """
  step = manager.latest_step() if step is None else step
  if step is None:
    return target
  return manager.restore(step, args=ocp.args.StandardRestore(target))


def _stored_shapes(manager: ocp.CheckpointManager, step: int) -> dict:
  """{path: shape} of the model parameters stored at `step`, read from its metadata."""
  # The handler reads the item's own metadata; PyTreeCheckpointer().metadata would also look
  # for a step-level file inside the item and log a spurious warning on every load.
  tree = ocp.PyTreeCheckpointHandler().metadata(
      epath.Path(manager.directory) / str(step) / "default").tree
  model = tree.get("params", {}).get("model", {})
  return {jax.tree_util.keystr(path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(model)}


def restore_model_params(manager: ocp.CheckpointManager, step: int, abstract_params):
  """Only the model parameters of checkpoint `step`, as numpy-backed host arrays.

  Works on a full training checkpoint (TrainState) and on an exported one
  (`{"params": {"model": ...}}`, see `export`): orbax reads just this subtree.
  Raises ValueError naming the checkpoint when it holds another model (other
  names or shapes) than `abstract_params` describes.
  """
  stored = _stored_shapes(manager, step)
  wrong = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_params):
    name = jax.tree_util.keystr(path)
    if stored.get(name) != tuple(leaf.shape):
      wrong.append(f"{name} {'missing' if name not in stored else stored[name]}, "
                   f"expected {tuple(leaf.shape)}")
  if wrong:
    raise workdir_lib.ModelMismatch(
        f"{manager.directory}/{step} holds another model: {'; '.join(wrong[:3])}"
        f"{' ...' if len(wrong) > 3 else ''}")
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  item = {"params": {"model": jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract_params)}}
  restored = manager.restore(step, args=ocp.args.PyTreeRestore(
      item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
      partial_restore=True))
  return jax.device_get(restored["params"]["model"])


def latest_model_params(workdir, abstract_params):
  """The model parameters of `workdir`'s latest checkpoint (training run or export)."""
  manager = make_manager(workdir, create=False) if checkpoint_dir(workdir).is_dir() else None
  step = manager.latest_step() if manager else None
  if step is None:
    raise FileNotFoundError(f"{checkpoint_dir(workdir)}: no checkpoint to start from")
  try:
    return restore_model_params(manager, step, abstract_params), step
  except workdir_lib.ModelMismatch as e:
    raise workdir_lib.ModelMismatch(f"{workdir}: its model does not fit this config's model "
                                    f"settings (encoder, sizes): {e}") from None


def _calibrated_step(workdir) -> int | None:
  try:
    record = workdir_lib.read_threshold(workdir)
  except workdir_lib.BadWorkdirFile:
    return None  # Unreadable: not copied; hive.voiceid reports it where it is.
  return None if record is None else record.get("checkpoint_step")


def _mean_step(workdir) -> int | None:
  found = workdir_lib.read_mean(workdir)
  return None if found is None else found[1]


def export(workdir, out, step: int, model_params) -> epath.Path:
  """Writes an inference-only copy of a workdir: config, speakers, model parameters
  (and the training mean embedding, hive/centring.py, and the calibrated threshold,
  hive/voiceid.py, when they were made for `step`).

  No optimiser state, so it is a third of the training checkpoint's size; every
  command that takes `--workdir` loads it, but training cannot resume from it.
  """
  out, workdir = workdir_lib.path(out), workdir_lib.path(workdir)
  if out.exists() and any(out.iterdir()):
    raise FileExistsError(f"{out} is not empty; export into a new or empty directory")
  out.mkdir(parents=True, exist_ok=True)
  names = [workdir_lib.CONFIG_FILE, workdir_lib.SPEAKERS_FILE]
  if _mean_step(workdir) == step:  # A mean fitted for another step stays behind.
    names.append(workdir_lib.MEAN_FILE)
  if _calibrated_step(workdir) == step:  # Likewise.
    names.append(workdir_lib.THRESHOLD_FILE)
  for name in names:
    workdir_lib.write_atomically(out / name, (workdir / name).read_bytes())
  manager = make_manager(out, max_to_keep=1)
  manager.save(step, args=ocp.args.StandardSave({"params": {"model": model_params}}), force=True)
  manager.wait_until_finished()
  path = checkpoint_dir(out) / str(step)
  # Orbax's commit markers name the absolute path they were written to; an export is
  # meant to be shipped, so keep the markers (their presence is what counts) without it.
  for marker in [*path.glob(COMMIT_MARKER), *path.glob(f"*/{COMMIT_MARKER}")]:
    marker.write_text("Checkpoint commit was successful.\n")
  return path
