"""Checkpoints with orbax: `WORKDIR/checkpoints/<step>/`, and the config beside them.

The whole `TrainState` is saved (parameters, optimiser state, step, RNG). The
data pipeline needs no state of its own: batch k is a function of the seed and
k, so restoring the step restores the data position. Orbax writes each
checkpoint to a temporary directory and renames it when complete, so a run
killed at any moment (even SIGKILL) restarts from the last complete one.

What can still go wrong is handled here, loudly and in one line each:
  * a checkpoint damaged on disk (a truncated or missing data file): training resumes from
    the newest intact one, with a warning naming both, and sets the damaged one aside as
    `<step>.damaged` (its step is written again); loading a model for inference takes the
    newest intact one likewise (`load_model_params`), or, for a step asked for by number,
    says which one is damaged and which is intact (`DamagedCheckpoint`). None intact: a
    one-line error, never a silent start from step 0.
  * a write the disk refuses (full, over quota, read-only): `cli.StorageError` naming the
    checkpoint, the disk, its free space and the size of a checkpoint; the unfinished
    checkpoint's temporary directory is removed and earlier checkpoints are untouched, so
    the same command resumes once there is room.

The other files of a workdir (config, speakers, centring mean, threshold) and their names
belong to hive/workdir.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from hive import cli, workdir as workdir_lib
from hive.workdir import checkpoint_dir

COMMIT_MARKER = "commit_success.txt"  # orbax's, see orbax.checkpoint path atomicity.
TMP_MARKER = ".orbax-checkpoint-tmp"  # orbax's suffix for a checkpoint being written.
DAMAGED_SUFFIX = ".damaged"


class DamagedCheckpoint(cli.UserError):
  """A checkpoint that cannot be read; the message names it and what to do."""


def _local(path) -> bool:
  return "://" not in str(path)


def _disk_usage(folder) -> int:
  """Bytes the files under a local folder take on disk (whole blocks, as `du` counts: a
  checkpoint is many small files)."""
  total = 0
  for root, _, names in os.walk(str(folder)):
    for name in names:
      stat = os.stat(os.path.join(root, name))
      total += max(stat.st_size, getattr(stat, "st_blocks", 0) * 512)
  return total


class _Manager(ocp.CheckpointManager):
  """orbax's CheckpointManager whose refused writes end as one `cli.StorageError`."""

  def save(self, step, *args, **kwargs):
    with self._reporting_write_errors():
      return super().save(step, *args, **kwargs)

  def wait_until_finished(self):
    with self._reporting_write_errors():
      return super().wait_until_finished()

  @contextlib.contextmanager
  def _reporting_write_errors(self):
    try:
      yield
    except cli.UserError:
      raise
    except Exception as e:  # noqa: BLE001 - re-raised unless the disk refused a write.
      cause = cli.environment_error(e)
      if cause is None:
        raise
      raise self._write_failed(cause) from None

  def _write_failed(self, cause: OSError) -> cli.StorageError:
    """Removes the unfinished checkpoints and words the error: which checkpoint, the disk,
    its free space (after the removal) and what the newest complete checkpoint takes."""
    directory = epath.Path(self.directory)
    unfinished = sorted(directory.glob(f"*{TMP_MARKER}*"))
    if jax.process_index() == 0:
      for tmp in unfinished:
        (shutil.rmtree if _local(tmp) else epath.Path.rmtree)(tmp)
    steps = self.all_steps()
    needed = (_disk_usage(directory / str(max(steps))) if steps and _local(directory) else None)
    where = (directory / unfinished[0].name.split(".")[0]) if unfinished else directory
    error = cli.storage_error(where, cause, needed)
    return cli.StorageError(f"{error}; earlier checkpoints are intact: run the same command "
                            "again to resume", cause=cause)


def make_manager(workdir, max_to_keep: int = 3, create: bool = True) -> ocp.CheckpointManager:
  """`create=False` for readers: loading a model must not leave directories behind. Writers
  remove the temporary directories of checkpoints a killed or failed run left unfinished."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create,
                                         cleanup_tmp_directories=create)
  return _Manager(checkpoint_dir(workdir), options=options)


def save(manager: ocp.CheckpointManager, state) -> None:
  step = int(np.asarray(state.step.addressable_data(0)))  # Same on every process.
  manager.save(step, args=ocp.args.StandardSave(state), force=True)


def _reason(e: BaseException) -> str:
  """The first line of the innermost error behind `e` (tensorstore's, for a damaged file),
  short enough for a one-line message."""
  inner = e
  while inner.__cause__ is not None or inner.__context__ is not None:
    inner = inner.__cause__ or inner.__context__
  text = (str(inner).strip().splitlines() or [type(inner).__name__])[0]
  return text if len(text) <= 240 else text[:237] + "..."


def _set_aside(manager: ocp.CheckpointManager, step: int) -> epath.Path:
  """Renames a damaged checkpoint to `<step>.damaged` (kept for inspection, out of orbax's
  sight) so the run can write that step again."""
  source = epath.Path(manager.directory) / str(step)
  target = source.parent / f"{step}{DAMAGED_SUFFIX}"
  n = 1
  while target.exists():
    n += 1
    target = source.parent / f"{step}{DAMAGED_SUFFIX}{n}"
  if jax.process_index() == 0:
    source.rename(target)
  ocp.multihost.sync_global_processes(f"hive_set_aside_{step}")
  return target


def restore_latest(manager: ocp.CheckpointManager, target, step: int | None = None):
  """Restores `step` (default: the newest intact checkpoint) into the structure/shardings
  of `target`.

  Returns `target` unchanged when there is no checkpoint yet. A newer checkpoint that
  cannot be read is set aside as `<step>.damaged`, with a warning naming it and the step
  resumed from; DamagedCheckpoint when none can be read (or `step` cannot).
  """
  steps = sorted(manager.all_steps(), reverse=True) if step is None else [step]
  if not steps:
    return target
  damaged = []
  for candidate in steps:
    try:
      restored = manager.restore(candidate, args=ocp.args.StandardRestore(target))
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint: try the one before.
      damaged.append((candidate, _reason(e)))
      logging.warning("Checkpoint %s/%d cannot be restored: %s", manager.directory, candidate,
                      damaged[-1][1])
      continue
    for bad, why in damaged:
      aside = _set_aside(manager, bad)
      logging.warning("Checkpoint %s/%d is damaged (%s); set aside as %s. Resuming from the "
                      "newest intact checkpoint, step %d.", manager.directory, bad, why,
                      aside.name, candidate)
    if damaged:
      manager.reload()
    return restored
  raise DamagedCheckpoint(
      f"{manager.directory}: no checkpoint can be restored ("
      f"{'; '.join(f'step {s}: {why}' for s, why in damaged)}); if they are damaged, move "
      f"{manager.directory} away to start afresh, or put back an intact copy")


def _stored_shapes(manager: ocp.CheckpointManager, step: int) -> dict:
  """{path: shape} of the model parameters stored at `step`, read from its metadata."""
  # The handler reads the item's own metadata; PyTreeCheckpointer().metadata would also look
  # for a step-level file inside the item and log a spurious warning on every load.
  tree = ocp.PyTreeCheckpointHandler().metadata(
      epath.Path(manager.directory) / str(step) / "default").tree
  model = tree.get("params", {}).get("model", {})
  return {jax.tree_util.keystr(path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(model)}


def _read_model_params(manager: ocp.CheckpointManager, step: int, abstract_params):
  """restore_model_params without the handling of damage."""
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


def _newest_readable(manager, steps, abstract_params):
  """(params, step, [(damaged step, reason)...]) for the first of `steps` that can be read;
  params and step are None when none can."""
  damaged = []
  for step in steps:
    try:
      return _read_model_params(manager, step, abstract_params), step, damaged
    except workdir_lib.ModelMismatch:
      raise  # The wrong model, not a damaged file: no other step will fit either.
    except Exception as e:  # noqa: BLE001 - an unreadable checkpoint: try the one before.
      damaged.append((step, _reason(e)))
  return None, None, damaged


def restore_model_params(manager: ocp.CheckpointManager, step: int, abstract_params):
  """Only the model parameters of checkpoint `step`, as numpy-backed host arrays.

  Works on a full training checkpoint (TrainState) and on an exported one
  (`{"params": {"model": ...}}`, see `export`): orbax reads just this subtree.
  Raises ValueError naming the checkpoint when it holds another model (other
  names or shapes) than `abstract_params` describes, and DamagedCheckpoint naming
  it (and the newest intact one) when it cannot be read.
  """
  params, _, damaged = _newest_readable(manager, [step], abstract_params)
  if damaged:
    older = [s for s in sorted(manager.all_steps(), reverse=True) if s < step]
    _, intact, _ = _newest_readable(manager, older, abstract_params)
    hint = (f"the newest intact checkpoint is step {intact}: load that one (--step={intact})"
            if intact is not None else "no older checkpoint is intact either")
    raise DamagedCheckpoint(f"{manager.directory}/{step} is damaged ({damaged[0][1]}); "
                            f"{hint}, or put back an intact copy")
  return params


def load_model_params(manager: ocp.CheckpointManager, step: int | None, abstract_params):
  """(model parameters, step) of checkpoint `step`, or of the newest intact checkpoint when
  `step` is None: a newer one that cannot be read is skipped with a warning naming it.
  FileNotFoundError when there is no such checkpoint, DamagedCheckpoint when it (or, for
  None, every one) cannot be read."""
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    raise FileNotFoundError(f"no checkpoint in {manager.directory}")
  if step is not None:
    if step not in steps:  # Orbax's own error for this is cryptic.
      raise FileNotFoundError(f"no checkpoint of step {step} in {manager.directory} "
                              f"(have {sorted(steps)})")
    return restore_model_params(manager, step, abstract_params), step
  params, chosen, damaged = _newest_readable(manager, steps, abstract_params)
  if chosen is None:
    raise DamagedCheckpoint(
        f"{manager.directory}: no checkpoint can be read ("
        f"{'; '.join(f'step {s}: {why}' for s, why in damaged)}); put back an intact copy")
  for bad, why in damaged:
    logging.warning("Checkpoint %s/%d is damaged (%s); using the newest intact one, step %d",
                    manager.directory, bad, why, chosen)
  return params, chosen


def latest_model_params(workdir, abstract_params):
  """The model parameters of `workdir`'s newest intact checkpoint (training run or export)."""
  manager = make_manager(workdir, create=False) if checkpoint_dir(workdir).is_dir() else None
  if manager is None or manager.latest_step() is None:
    raise FileNotFoundError(f"{checkpoint_dir(workdir)}: no checkpoint to start from")
  try:
    return load_model_params(manager, None, abstract_params)
  except workdir_lib.ModelMismatch as e:
    raise workdir_lib.ModelMismatch(f"{workdir}: its model does not fit this config's model "
                                    f"settings (encoder, sizes): {e}") from None


def _calibrated_step(workdir) -> int | None:
  try:
    record = workdir_lib.read_threshold(workdir)
  except workdir_lib.BadWorkdirFile:
    return None  # Unreadable: not copied; hive.voiceid reports it where it is.
  return None if record is None else record.get("checkpoint_step")


def _calibration_step(workdir) -> int | None:
  try:
    record = workdir_lib.read_calibration(workdir)
  except workdir_lib.BadWorkdirFile:
    return None  # Unreadable: not copied; the commands report it where it is.
  return None if record is None else record.get("checkpoint_step")


def _cohort_step(workdir) -> int | None:
  try:
    cohort = workdir_lib.read_cohort(workdir)
  except workdir_lib.BadWorkdirFile:
    return None
  return None if cohort is None else cohort["step"]


def _mean_step(workdir) -> int | None:
  found = workdir_lib.read_mean(workdir)
  return None if found is None else found[1]


def export(workdir, out, step: int, model_params) -> epath.Path:
  """Writes an inference-only copy of a workdir: config, speakers, model parameters
  (and the training mean embedding, hive/centring.py, the calibrated threshold and score
  calibration, hive/voiceid, and the AS-Norm cohort, hive/evaluate.py, when they were made
  for `step`).

  No optimiser state, so it is a third of the training checkpoint's size; every
  command that takes `--workdir` loads it, but training cannot resume from it.
  A local export is written into a staging folder beside `out` (`.OUT.export-PID.tmp`)
  and renamed into place when complete: a failed or killed export leaves no `out` behind,
  so the same command runs again (a killed one's staging folder is removed by the next).
  """
  out, workdir = workdir_lib.path(out), workdir_lib.path(workdir)
  needed = sum(np.asarray(x).nbytes for x in jax.tree.leaves(model_params))
  with workdir_lib.staged_directory(out, needed) as staging:
    names = [workdir_lib.CONFIG_FILE, workdir_lib.SPEAKERS_FILE]
    if _mean_step(workdir) == step:  # A mean fitted for another step stays behind.
      names.append(workdir_lib.MEAN_FILE)
    if _calibrated_step(workdir) == step:  # Likewise.
      names.append(workdir_lib.THRESHOLD_FILE)
    names += [name for name, made_for in ((workdir_lib.CALIBRATION_FILE, _calibration_step),
                                          (workdir_lib.COHORT_FILE, _cohort_step))
              if made_for(workdir) == step]
    for name in names:
      workdir_lib.write_atomically(staging / name, (workdir / name).read_bytes())
    manager = make_manager(staging, max_to_keep=1)
    manager.save(step, args=ocp.args.StandardSave({"params": {"model": model_params}}),
                 force=True)
    manager.wait_until_finished()
    # Orbax's commit markers name the absolute path they were written to; an export is
    # meant to be shipped, so keep the markers (their presence is what counts) without it.
    written = checkpoint_dir(staging) / str(step)
    for marker in [*written.glob(COMMIT_MARKER), *written.glob(f"*/{COMMIT_MARKER}")]:
      marker.write_text("Checkpoint commit was successful.\n")
  return checkpoint_dir(out) / str(step)
