"""The pure train and eval steps, one of each for every task (`bert_jax/tasks/`).

`train_step(state, batch, rng) -> (state, metrics)` once the task, model and optimizer are
bound with `functools.partial`; the same function runs under `jax.jit` on any mesh and under
`jax.pmap` (pass `axis_name`). The step never asks which task it runs:

  prepare (e.g. MLM masking) -> global denominators -> micro-batches -> accumulate -> apply

With `config.budget_minutes` the learning rate is an input, not a function of the step: the
host computes it from the elapsed time and sends it as the batch's `learning_rate` [batch]
(the same value in every row, so it travels with the batch under jit, pmap and several
processes); the step multiplies the optimizer's updates (built with learning rate 1) by it.

Metrics are sums plus denominators (`*_sum`, `*_count`; the task's `summarize` divides once on
the host), so they are exact under padding, sharding and gradient accumulation.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from bert_jax.losses import psum
from bert_jax.tasks.base import Task, is_sum

Array = jax.Array
Batch = dict[str, Array]
Metrics = dict[str, Array]

LEARNING_RATE = "learning_rate"  # the optional batch key [batch] float32 (budget_minutes)


@flax.struct.dataclass
class TrainState:
  step: Array      # int32 scalar: optimizer updates applied so far
  params: Any
  opt_state: Any


def create_train_state(params, tx: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def _split_micro(tree, k: int):
  """[batch, ...] -> [k, batch // k, ...] for gradient accumulation."""
  def split(x):
    if x.shape[0] % k:
      raise ValueError(f"batch of {x.shape[0]} rows does not split into grad_accum_steps={k}")
    return x.reshape((k, x.shape[0] // k) + x.shape[1:])
  return jax.tree_util.tree_map(split, tree)


def _accumulate(loss_fn: Callable, params, micro_batches, k: int):
  """Sums (grads, aux) of `loss_fn(params, micro, index)` over k micro-batches with lax.scan."""
  grad_fn = jax.grad(loss_fn, has_aux=True)
  if k == 1:
    return grad_fn(params, jax.tree_util.tree_map(lambda x: x[0], micro_batches), 0)

  def body(carry, xs):
    micro, index = xs
    grads, aux = grad_fn(params, micro, index)
    return jax.tree_util.tree_map(jnp.add, carry, (grads, aux)), None

  first = jax.tree_util.tree_map(lambda x: x[0], micro_batches)
  zeros = jax.tree_util.tree_map(jnp.zeros_like, jax.eval_shape(grad_fn, params, first, 0))
  (grads, aux), _ = jax.lax.scan(body, zeros, (micro_batches, jnp.arange(k)))
  return grads, aux


def _apply_gradients(state: TrainState, grads, tx: optax.GradientTransformation,
                     schedule: optax.Schedule | None, learning_rate: Array | None = None
                     ) -> tuple[TrainState, Metrics]:
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  if learning_rate is not None:  # tx was built with learning rate 1 (budget_minutes)
    updates = jax.tree_util.tree_map(lambda u: (u * learning_rate).astype(u.dtype), updates)
  params = optax.apply_updates(state.params, updates)
  scalars = {"grad_norm": optax.global_norm(grads), "param_norm": optax.global_norm(params)}
  if learning_rate is not None:
    scalars["learning_rate"] = learning_rate
  elif schedule is not None:
    scalars["learning_rate"] = jnp.asarray(schedule(state.step), jnp.float32)
  return TrainState(state.step + 1, params, opt_state), scalars


def step_rngs(rng: Array, step: Array, axis_name: str | None) -> tuple[Array, Array]:
  """(preparation key shared by all devices, dropout key distinct per device)."""
  step_rng = jax.random.fold_in(rng, step)
  prepare_rng, dropout_rng = jax.random.split(step_rng)
  if axis_name:
    dropout_rng = jax.random.fold_in(dropout_rng, jax.lax.axis_index(axis_name))
  return prepare_rng, dropout_rng


def _require(batch: Batch, task: Task):
  missing = [k for k in task.required_keys if k not in batch]
  if missing:
    raise KeyError(f"task {task.name!r} needs batch keys {missing}; the batch has "
                   f"{sorted(batch)}")


def train_step(state: TrainState, batch: Batch, rng: Array, *, task: Task, model,
               tx: optax.GradientTransformation, schedule: optax.Schedule | None = None,
               grad_accum_steps: int = 1, axis_name: str | None = None
               ) -> tuple[TrainState, Metrics]:
  """One optimizer update of `task`'s loss on `batch` (at the batch's `learning_rate` when it
  has one, else at `schedule(state.step)`)."""
  _require(batch, task)
  batch = dict(batch)
  learning_rate = batch.pop(LEARNING_RATE, None)
  if learning_rate is not None:  # [batch] -> scalar; max: exact, and local under pmap
    learning_rate = jnp.max(learning_rate).astype(jnp.float32)
  prepare_rng, dropout_rng = step_rngs(rng, state.step, axis_name)
  batch = task.prepare(prepare_rng, batch, axis_name)
  # Global denominators first, so each device's and each micro-batch's share adds up exactly.
  denominators = psum(task.denominators(batch), axis_name)

  def loss_fn(params, micro, index):
    sums, _ = task.forward(model, params, micro, deterministic=False,
                           dropout_rng=jax.random.fold_in(dropout_rng, index))
    return task.loss(sums, denominators), sums

  micro = _split_micro(batch, grad_accum_steps)
  grads, sums = _accumulate(loss_fn, state.params, micro, grad_accum_steps)
  grads, sums = psum((grads, sums), axis_name)
  state, scalars = _apply_gradients(state, grads, tx, schedule, learning_rate)
  return state, {**sums, **scalars}


def eval_step(params, batch: Batch, rng: Array, *, task: Task, model,
              axis_name: str | None = None) -> tuple[Metrics, dict[str, Array]]:
  """(metric sums, per-row outputs) of `task` on a batch, prepared with `rng`, dropout off."""
  _require(batch, task)
  batch = task.prepare(rng, batch, axis_name)
  sums, outputs = task.forward(model, params, batch, deterministic=True, dropout_rng=None)
  return psum(sums, axis_name), outputs


def accumulate_metrics(history: list[Metrics]) -> dict[str, float]:
  """Adds `*_sum`/`*_count` over steps; keeps the last value of per-step scalars."""
  total: dict[str, float] = {}
  for metrics in history:
    for k, v in metrics.items():
      v = float(v)
      total[k] = total.get(k, 0.0) + v if is_sum(k) else v
  return total
