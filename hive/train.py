"""Training: the state, the jitted multi-task step over a device mesh, the loop.

`train_and_evaluate(config, workdir)` is what `python -m hive.main` runs. It
resumes from the latest checkpoint in `workdir` when there is one; a new run
with `train.init_from` starts from another run's model parameters instead.
Every `train.eval_every` steps the dev speakers are scored by the evaluator that
`hive.evaluate` uses (hive/evaluator.py).
"""

from __future__ import annotations

import functools
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers
from flax.training import train_state
from tqdm import tqdm

from hive import augment, checkpoint, evaluator as evaluator_lib, losses, parallel
from hive import workdir as workdir_lib
from hive.data import input_pipeline
from hive.encoder import Embedder
from hive.models import carried_over, create_model, init_params

LOSS_TERMS = ("ge2e", "triplet", "speaker_id", "gender")


class TrainState(train_state.TrainState):
  rng: jax.Array


class NonFiniteLoss(FloatingPointError):
  pass


def learning_rate_schedule(config) -> optax.Schedule:
  """Linear warm-up, then cosine decay to `final_lr_fraction` of the peak."""
  if config.schedule == "constant":
    return optax.constant_schedule(config.learning_rate)
  if config.schedule != "cosine":
    raise ValueError(f"unknown schedule {config.schedule!r}: 'cosine' or 'constant'")
  # At least one step of cosine after the warm-up, also for runs of a step or two.
  warmup = max(0, min(config.warmup_steps, config.steps - 1))
  return optax.warmup_cosine_decay_schedule(
      0.0, config.learning_rate, warmup, max(config.steps, warmup + 1),
      config.learning_rate * config.final_lr_fraction)


def make_optimizer(config) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW for the model and slower Adam for GE2E's w, b.

  GE2E scales the gradients of w and b by 0.01; Adam is invariant to gradient
  scale, so the same intent is expressed as a smaller learning rate.
  """
  schedule = learning_rate_schedule(config)
  loss_schedule = lambda step: schedule(step) * config.loss_params_lr_scale
  labels = lambda params: {k: jax.tree.map(lambda _: k, v) for k, v in params.items()}
  return optax.chain(
      optax.clip_by_global_norm(config.grad_clip),
      optax.multi_transform({"model": optax.adamw(schedule, weight_decay=config.weight_decay),
                             "loss": optax.adam(loss_schedule)}, labels))


def create_train_state(config, num_speakers: int, rng) -> TrainState:
  model = create_model(config.model, num_speakers)
  init_rng, state_rng = jax.random.split(rng)
  params = {
      "model": init_params(config, num_speakers, init_rng),
      "loss": {"w": jnp.asarray(config.loss.ge2e_w_init, jnp.float32),
               "b": jnp.asarray(config.loss.ge2e_b_init, jnp.float32)},
  }
  return TrainState.create(apply_fn=model.apply, params=params, tx=make_optimizer(config.train),
                           rng=state_rng)


def loss_weights(config) -> dict:
  return {k: float(config.loss.weights.get(k, 0.0)) for k in LOSS_TERMS}


def train_step(state: TrainState, batch, config) -> tuple[TrainState, dict]:
  """One optimisation step on a global batch; pure: (state, batch) -> (state, metrics)."""
  step_rng = jax.random.fold_in(state.rng, state.step)
  features = augment.augment(step_rng, batch["features"], config.augment)
  loss_config = ml_collections.ConfigDict(dict(config.loss, n_utterances=config.data.n_utterances))
  weights = loss_weights(config)

  def loss_fn(params):
    outputs = state.apply_fn({"params": params["model"]}, features)
    return losses.multitask_loss(outputs, batch, params["loss"], weights, loss_config)

  (_, step_metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  step_metrics["grad_norm"] = optax.global_norm(grads)
  step_metrics["learning_rate"] = learning_rate_schedule(config.train)(state.step)
  return state.apply_gradients(grads=grads), step_metrics


def make_train_step(config, mesh):
  """The jitted step: batch sharded on the data axis, state replicated and donated."""
  return jax.jit(functools.partial(train_step, config=config),
                 in_shardings=(parallel.replicated(mesh), parallel.data_sharded(mesh)),
                 out_shardings=(parallel.replicated(mesh), parallel.replicated(mesh)),
                 donate_argnums=0)


DEV_METRICS = ("eer", "min_dcf", "identification_accuracy", "gender_accuracy")


def evaluate_dev(evaluator: evaluator_lib.VerificationEvaluator, state: TrainState,
                 prefix: str = "dev") -> dict:
  """The evaluator's numbers for the state's model, as `<prefix>_<name>` scalars. Every
  process scores the same dev set with the same (replicated) parameters, on its own host."""
  report = evaluator.run(parallel.fetch(state.params["model"]))
  return {f"{prefix}_{k}": float(report[k]) for k in DEV_METRICS if report.get(k) is not None}


def _init_state(config, num_speakers, mesh) -> TrainState:
  """Initialises the state directly into its replicated sharding (works multi-host)."""
  rng = jax.random.PRNGKey(config.seed)
  return jax.jit(lambda r: create_train_state(config, num_speakers, r),
                 out_shardings=parallel.replicated(mesh))(rng)


def start_from(state: TrainState, workdir, train_speakers, mesh) -> TrainState:
  """`state` with the model parameters of `workdir`'s latest checkpoint (fine-tuning).

  The speaker-ID head's rows are that run's speakers: it is kept when this run
  trains the same speakers in the same order, and starts afresh otherwise (e.g.
  adapting to another corpus). GE2E's w, b and the optimiser always start afresh.
  """
  same_speakers = workdir_lib.load_speakers(workdir)["train"] == list(train_speakers)
  wanted = carried_over(state.params["model"], same_speakers)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), wanted)
  params, step = checkpoint.latest_model_params(workdir, abstract)
  logging.info("Starting from the model parameters of %s, step %d%s", workdir, step,
               "" if same_speakers else " (other speakers: a new speaker-ID head)")
  params = jax.tree.map(lambda x: parallel.replicate(x, mesh), params)
  return state.replace(params={**state.params, "model": {**state.params["model"], **params}})


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) the run in `workdir`. One run at a time: a second process started
  on the same workdir is refused (workdir.training_lock) before it writes anything."""
  lock = workdir_lib.training_lock(workdir) if jax.process_index() == 0 else None
  try:
    return _train_and_evaluate(config, workdir)
  finally:
    if lock is not None:
      lock.release()


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  started = time.time()
  is_main = jax.process_index() == 0
  mesh = parallel.make_mesh()
  data = config.data
  parallel.check_divisible(data.n_speakers * data.n_utterances, mesh)
  fine_tune = (config.train.get("init_from") and
               checkpoint.make_manager(workdir, create=False).latest_step() is None)
  if fine_tune:  # Before this run writes anything.
    workdir_lib.check_same_settings(config.train.init_from, config)

  inputs = input_pipeline.load_inputs(config)
  state = _init_state(config, inputs.table.num_speakers, mesh)
  manager = checkpoint.make_manager(workdir, config.train.keep_checkpoints)
  state = checkpoint.restore_latest(manager, state)
  start_step = int(parallel.fetch(state.step))
  if fine_tune:
    state = start_from(state, config.train.init_from, inputs.table.speakers, mesh)
  if is_main:
    workdir_lib.save_config(workdir, config)
    workdir_lib.save_speakers(workdir, inputs.table.speakers, inputs.dev_speakers)
    if start_step:
      logging.info("Resuming from step %d in %s", start_step, workdir)

  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
  step_fn = make_train_step(config, mesh)
  evaluators = {}  # Logged as dev_<metric> and dev_degraded_<metric>.
  if inputs.dev is not None:
    embedder = Embedder(config, inputs.table.num_speakers)
    for name, dev_set in (("dev", inputs.dev), ("dev_degraded", inputs.dev_degraded)):
      if dev_set is not None:
        evaluators[name] = evaluator_lib.training_evaluator(embedder, dev_set, inputs.centring,
                                                            config.eval)
    evaluators = {k: v for k, v in evaluators.items() if v is not None}
  batches = input_pipeline.train_batches(inputs, config, start_step)
  rows = data.n_speakers * data.n_utterances

  last, dev, window_start, window_steps = {}, {}, time.time(), 0
  steps = config.train.steps
  bar = tqdm(range(start_step, steps), initial=start_step, total=steps, disable=not is_main,
             desc="train", unit="step", dynamic_ncols=True)
  try:
    for step in bar:
      batch = parallel.global_batch(next(batches), mesh)
      state, step_metrics = step_fn(state, batch)
      step_metrics = parallel.fetch(step_metrics)
      if not np.isfinite(step_metrics["loss"]):
        manager.wait_until_finished()
        raise NonFiniteLoss(
            f"loss became {step_metrics['loss']} at step {step + 1}; stopping without saving "
            f"(last good checkpoint: {manager.latest_step()}). Lower train.learning_rate or "
            "check the data.")
      last = {k: float(v) for k, v in step_metrics.items()}
      window_steps += 1
      done = step + 1
      if done % config.train.log_every == 0 or done == steps:
        seconds = time.time() - window_start
        last["steps_per_second"] = window_steps / seconds
        last["utterances_per_second"] = window_steps * rows / seconds
        writer.write_scalars(done, last)
        bar.set_postfix({k: f"{last[k]:.3g}" for k in ("loss", "ge2e", "speaker_id_accuracy")
                         if k in last})
        window_start, window_steps = time.time(), 0
      if evaluators and (done % config.train.eval_every == 0 or done == steps):
        dev = {k: v for name, e in evaluators.items() for k, v in evaluate_dev(e, state, name).items()}
        writer.write_scalars(done, dev)
        if is_main:
          tqdm.write(f"step {done}: " + ", ".join(
              f"{name} EER {dev[name + '_eer']:.2%} (one-shot ID "
              f"{dev[name + '_identification_accuracy']:.1%})" for name in evaluators)
              + f", loss {last['loss']:.4f}")
      if done % config.train.checkpoint_every == 0 or done == steps:
        checkpoint.save(manager, state)
  finally:
    # Also on Ctrl-C or an error: finish the checkpoint being written, so the
    # next run resumes from it.
    bar.close()
    manager.wait_until_finished()
    writer.flush()

  summary = {
      "steps": int(parallel.fetch(state.step)),
      **{f"dev_{k}": dev.get(f"dev_{k}") for k in DEV_METRICS},
      **{k: v for k, v in dev.items() if k.startswith("dev_degraded_")},
      **{k: last.get(k) for k in LOSS_TERMS + ("loss", "steps_per_second") if k in last},
      "checkpoint": str(workdir_lib.checkpoint_dir(workdir) / str(manager.latest_step())),
      "seconds": round(time.time() - started, 1),
  }
  return summary
