"""BERT's optimizer: AdamW (or LAMB) with decoupled weight decay, clipping and a schedule.

Schedules (`config.optimizer.schedule`), as fractions of the peak learning rate over the
budget's progress p in [0, 1] (steps / num_train_steps, or elapsed / budget_minutes):

  linear     BERT's: linear warmup to the peak, then linear decay to 0 at the end (default).
  one_cycle  crammed BERT's triangle ("budget-triangle2"): from `cycle_start` (0.25) of the
             peak linearly up to the peak at p = `cycle_peak` (0.75), then linearly down to 0
             at the end; warmup_ratio / warmup_steps are not read.
  wsd        warmup-stable-decay: linear warmup, the peak, then a 1 - sqrt decay to 0 over the
             last `decay_ratio` (0.2) of the budget (Hägele et al. 2024's cooldown).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

SCHEDULES = ("linear", "one_cycle", "wsd")


def linear_schedule(learning_rate: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to `learning_rate`, then linear decay to 0 at `total_steps`."""
  warmup_steps = max(0, min(warmup_steps, total_steps))
  decay = optax.linear_schedule(learning_rate, 0.0, max(1, total_steps - warmup_steps))
  if warmup_steps == 0:
    return decay
  warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
  return optax.join_schedules([warmup, decay], [warmup_steps])


def schedule_factor(name: str, progress, *, warmup: float = 0.0, decay_ratio: float = 0.2,
                    cycle_start: float = 0.25, cycle_peak: float = 0.75, xp=np):
  """The schedule's fraction of the peak at `progress` (fraction of the budget, clipped to
  [0, 1]); `warmup` is a fraction of the budget too. `xp`: numpy on the host, jax.numpy in jit.
  """
  check_schedule(name, decay_ratio=decay_ratio, cycle_start=cycle_start, cycle_peak=cycle_peak)
  p = xp.clip(xp.asarray(progress, xp.float32), 0.0, 1.0)
  up = xp.minimum(p / warmup, 1.0) if warmup > 0 else xp.ones_like(p)
  if name == "linear":
    return xp.where(p < warmup, up, (1.0 - p) / max(1.0 - warmup, 1e-12))
  if name == "one_cycle":
    return xp.minimum(cycle_start + (1.0 - cycle_start) * p / cycle_peak,
                      (1.0 - p) / (1.0 - cycle_peak))
  # 1 - sqrt(fraction of the decay done); exactly 1 where it starts and 0 at the end.
  decay = 1.0 - xp.sqrt(xp.clip((p - (1.0 - decay_ratio)) / decay_ratio, 0.0, 1.0))
  return xp.where(p >= 1.0, 0.0, xp.minimum(up, decay))


def check_schedule(name: str, *, decay_ratio: float = 0.2, cycle_start: float = 0.25,
                   cycle_peak: float = 0.75) -> None:
  """ValueError naming a schedule that is not one of SCHEDULES, or its bad shape value."""
  if name not in SCHEDULES:
    raise ValueError(f"schedule={name!r} is not one of {', '.join(SCHEDULES)}")
  if name == "wsd" and not 0.0 < decay_ratio <= 1.0:
    raise ValueError(f"decay_ratio must be in (0, 1] for schedule='wsd', got {decay_ratio!r}")
  if name == "one_cycle":
    if not 0.0 < cycle_peak < 1.0:
      raise ValueError(f"cycle_peak must be in (0, 1), got {cycle_peak!r}")
    if not 0.0 <= cycle_start <= 1.0:
      raise ValueError(f"cycle_start must be in [0, 1], got {cycle_start!r}")


def make_schedule(name: str, learning_rate: float, warmup_steps: int, total_steps: int,
                  **shape) -> optax.Schedule:
  """The step -> learning-rate schedule `name` over `total_steps` (`linear_schedule` for
  "linear", bit for bit); `shape`: decay_ratio, cycle_start, cycle_peak (schedule_factor)."""
  check_schedule(name, **shape)
  if name == "linear":
    return linear_schedule(learning_rate, warmup_steps, total_steps)
  warmup = max(0, min(warmup_steps, total_steps)) / total_steps

  def schedule(count):
    return learning_rate * schedule_factor(name, jnp.asarray(count, jnp.float32) / total_steps,
                                           warmup=warmup, xp=jnp, **shape)
  return schedule


def warmup_steps(total_steps: int, warmup_ratio: float = 0.0,
                 warmup_steps: int | None = -1) -> int:
  """Warmup length: `warmup_steps` when >= 0 (an absolute override), else
  round(warmup_ratio * total_steps), at least 1 for a positive ratio (None or -1: the ratio).

  Rounding (not transformers' ceil) keeps ratios like 0.1 of 493 at the published 49 steps.
  """
  if warmup_steps is not None and int(warmup_steps) >= 0:
    return int(warmup_steps)
  if not 0.0 <= float(warmup_ratio) <= 1.0:
    raise ValueError(f"warmup_ratio must be in [0, 1], got {warmup_ratio!r}")
  if float(warmup_ratio) == 0.0:
    return 0
  return max(1, int(round(float(warmup_ratio) * total_steps)))


def decay_mask(params):
  """True for weight matrices and embeddings; False for biases and LayerNorm scales (as BERT)."""
  def is_decayed(path, _):
    name = getattr(path[-1], "key", str(path[-1]))
    return name in ("kernel", "embedding")
  return jax.tree_util.tree_map_with_path(is_decayed, params)


def make_optimizer(*, learning_rate: float, total_steps: int, warmup_steps: int = 0,
                   name: str = "adamw", weight_decay: float = 0.01, b1: float = 0.9,
                   b2: float = 0.999, eps: float = 1e-6, clip_norm: float | None = 1.0,
                   schedule: str = "linear", external_learning_rate: bool = False,
                   warmup_ratio: float = 0.0, **shape
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns (optimizer, schedule). Defaults are BERT's: AdamW β=(0.9, 0.999), ε=1e-6, wd 0.01.

  `external_learning_rate` (budget_minutes): the optimizer's own learning rate is 1.0 (a
  schedule, so the state has the same structure) and the train step multiplies the updates by
  the learning rate it is given (`steps.LEARNING_RATE`); the schedule returned is then the
  host's progress -> learning rate (`budget_schedule`, warming up for `warmup_ratio` of it).
  `shape`: decay_ratio, cycle_start, cycle_peak (`schedule_factor`).
  """
  if learning_rate <= 0:
    raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
  if total_steps <= 0:
    raise ValueError(f"total_steps must be positive, got {total_steps!r}")
  if external_learning_rate:
    returned = budget_schedule(schedule, learning_rate, warmup_ratio, **shape)
    schedule = _one
  else:
    schedule = returned = make_schedule(schedule, learning_rate, warmup_steps, total_steps,
                                        **shape)
  if name == "adamw":
    opt = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                      mask=decay_mask)
  elif name == "lamb":
    opt = optax.lamb(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                     mask=decay_mask)
  else:
    raise ValueError(f"optimizer name={name!r} is not one of adamw, lamb")
  if clip_norm:
    opt = optax.chain(optax.clip_by_global_norm(clip_norm), opt)
  return opt, returned


def _one(count):
  del count
  return jnp.ones((), jnp.float32)


def budget_schedule(name: str, learning_rate: float, warmup_ratio: float = 0.0,
                    **shape) -> Callable[[float], float]:
  """progress (elapsed / budget, a float) -> learning rate (a float), computed on the host."""
  check_schedule(name, **shape)
  if not 0.0 <= warmup_ratio <= 1.0:
    raise ValueError(f"warmup_ratio must be in [0, 1], got {warmup_ratio!r}")

  def schedule(progress: float) -> float:
    factor = schedule_factor(name, progress, warmup=warmup_ratio, xp=np, **shape)
    return float(np.float32(learning_rate) * factor)
  return schedule
