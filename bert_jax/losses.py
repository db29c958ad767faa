"""Loss and metric primitives the tasks share: cross-entropy, top-1 hits, real-example masks.

Pure jax; each returns per-example (or per-token) values that a task weights and sums.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def cross_entropy(logits: Array, labels: Array) -> Array:
  """[..., classes] float logits, [...] int labels -> [...] float32 cross-entropy."""
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def top1_correct(logits: Array, labels: Array) -> Array:
  """argmax(logits) == labels as `label logit >= max logit` (ties count as correct).

  A max-reduce that XLA shares with the softmax's, instead of argmax's variadic (value, index)
  reduce: on CPU that reduce alone took ~15% of the tiny MLM step ([640, 30522] logits).
  """
  logits = logits.astype(jnp.float32)
  label_logit = jnp.take_along_axis(logits, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return label_logit >= jnp.max(logits, axis=-1)


def example_mask(batch: dict[str, Array]) -> Array:
  """[batch] float32: 1 for real examples, 0 for the padding rows of a finite eval split
  ([batch, examples] for packed rows: 1 on the filled slots)."""
  mask = batch.get("example_mask")
  if mask is None:
    return jnp.ones(batch["input_ids"].shape[:1], jnp.float32)
  return mask.astype(jnp.float32)


def token_mask(batch: dict[str, Array]) -> Array:
  """[batch, length] float32: 1 on the tokens of real examples (every token of a real row,
  padding included, for unpacked batches; the tokens of some example for packed ones)."""
  if "segment_ids" in batch:
    return (batch["segment_ids"] > 0).astype(jnp.float32)
  return jnp.broadcast_to(example_mask(batch)[:, None], batch["input_ids"].shape)


def per_example_positions(logits: Array, segment_ids: Array, num_examples: int) -> Array:
  """Position logits of packed rows [batch, length] -> [batch, examples, length], each example
  seeing only its own positions (the rest at the float32 minimum)."""
  numbers = jnp.arange(1, num_examples + 1, dtype=segment_ids.dtype)
  own = segment_ids[:, None, :] == numbers[None, :, None]  # [batch, examples, length]
  return jnp.where(own, logits.astype(jnp.float32)[:, None, :], jnp.finfo(jnp.float32).min)


def psum(x, axis_name: str | None):
  """Sum over the pmap axis when there is one (the jit path sums through sharding)."""
  return jax.lax.psum(x, axis_name) if axis_name else x


def row_ids(batch_size: int, axis_name: str | None) -> Array:
  """Global row index of each local row: in-step randomness keys on it, never on the layout."""
  offset = jax.lax.axis_index(axis_name) * batch_size if axis_name else 0
  return offset + jnp.arange(batch_size, dtype=jnp.int32)


def binary_cross_entropy(logits: Array, targets: Array) -> Array:
  """[..., labels] logits and {0, 1} float targets -> [...] float32 sigmoid cross-entropy,
  the mean over the labels (torch's BCEWithLogitsLoss per example)."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32),
                                                     targets.astype(jnp.float32)), axis=-1)


def squared_error(scores: Array, targets: Array) -> Array:
  """[...] float scores and targets -> [...] float32 (scores - targets)²."""
  return jnp.square(scores.astype(jnp.float32) - targets.astype(jnp.float32))
