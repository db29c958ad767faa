"""What the fine-tuning tasks share beyond the `Task` interface: reading a split from a local
file or a TFDS dataset, the model call on a batch, the loss and the reported means."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from bert_jax.tasks.base import is_sum, mean, packed_inputs, rngs


def read_file_or_tfds(source: str, read_file: Callable[[str], Any],
                      read_tfds: Callable[[str], Any]) -> Any:
  """The records of a split from `source`, a `base.split_file` answer: `read_tfds(name)` for
  "<TFDS name>:<split>" (when no such file exists), else `read_file(path)`; a missing file is
  a FileNotFoundError "<path>: no such file"."""
  if ":" in source and not os.path.exists(source):
    return read_tfds(source.rsplit(":", 1)[0])
  if not os.path.exists(source):
    raise FileNotFoundError(f"{source}: no such file")
  return read_file(source)


def apply(model, params, batch, *, deterministic: bool, dropout_rng, cls: bool = False):
  """`model.apply` on a batch's input_ids, attention_mask, token_type_ids [B, S] and packed-row
  keys (`base.packed_inputs`, with `cls` the [CLS] positions); dropout on unless
  `deterministic`. Returns what the model returns."""
  return model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                     batch["token_type_ids"], **packed_inputs(batch, cls=cls),
                     deterministic=deterministic, rngs=rngs(deterministic, dropout_rng))


def tokens_sum(batch) -> jax.Array:
  """float32 scalar: the real tokens of a batch (the `tokens_sum` metric)."""
  return jnp.sum(batch["attention_mask"]).astype(jnp.float32)


def mean_loss(sums, denominators, count: str) -> jax.Array:
  """`sums["loss_sum"]` over the global `denominators[count]` (at least 1)."""
  return sums["loss_sum"] / jnp.maximum(denominators[count], 1.0)


def summary(sums: dict[str, float], count: str, count_name: str, **means: str
            ) -> dict[str, float]:
  """The reported metrics of a task whose loss is `loss_sum / count`: the per-step scalars
  (keys that are not sums), loss, each `name=total` as `total / count`, `count_name` (the
  count itself) and num_tokens, in that order."""
  out = {k: v for k, v in sums.items() if not is_sum(k)}
  out["loss"] = mean(sums, "loss_sum", count)
  for name, total in means.items():
    out[name] = mean(sums, total, count)
  out[count_name] = sums[count]
  out["num_tokens"] = sums.get("tokens_sum", 0.0)
  return out
