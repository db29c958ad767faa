"""BERT's optimizer: AdamW (or LAMB) with decoupled weight decay, clipping and a linear schedule."""

from __future__ import annotations

import jax
import optax


def linear_schedule(learning_rate: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to `learning_rate`, then linear decay to 0 at `total_steps`."""
  warmup_steps = max(0, min(warmup_steps, total_steps))
  decay = optax.linear_schedule(learning_rate, 0.0, max(1, total_steps - warmup_steps))
  if warmup_steps == 0:
    return decay
  warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
  return optax.join_schedules([warmup, decay], [warmup_steps])


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
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns (optimizer, schedule). Defaults are BERT's: AdamW β=(0.9, 0.999), ε=1e-6, wd 0.01."""
  if learning_rate <= 0:
    raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
  if total_steps <= 0:
    raise ValueError(f"total_steps must be positive, got {total_steps!r}")
  schedule = linear_schedule(learning_rate, warmup_steps, total_steps)
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
  return opt, schedule
