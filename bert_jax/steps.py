"""Pure train and eval steps for MLM(+NSP) pretraining and sequence classification.

Every step is `step(state, batch, rng) -> (state, metrics)` once the model, optimizer and
masking settings are bound with `functools.partial`; the same function runs under `jax.jit`
on any mesh and under `jax.pmap` (pass `axis_name`). Metrics are sums plus denominators
(`summarize` divides once on the host), so they are exact under padding and sharding.

Batch keys: input_ids, attention_mask, token_type_ids [batch, length] int32, and
  pretraining:    special_tokens_mask, word_starts (whole-word masking) [batch, length],
                  next_sentence_label [batch] (NSP), example_mask [batch] (optional)
  classification: label [batch], example_mask [batch] (optional; 0 marks padding rows)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bert_jax.masking import MaskedBatch, mask_tokens

Array = jax.Array
Batch = dict[str, Array]
Metrics = dict[str, Array]

# Metrics that add up across batches, steps and devices; all others are per-step scalars.
SUM_KEYS = ("mlm_loss", "mlm_correct", "mlm_count", "nsp_loss", "nsp_correct", "nsp_count",
            "loss_sum", "correct", "count", "tokens")
PRETRAINING_KEYS = ("input_ids", "attention_mask", "token_type_ids", "special_tokens_mask")
CLASSIFICATION_KEYS = ("input_ids", "attention_mask", "token_type_ids", "label")


@flax.struct.dataclass
class TrainState:
  step: Array      # int32 scalar: optimizer updates applied so far
  params: Any
  opt_state: Any


def create_train_state(params, tx: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
  """BERT's corruption: `mask_prob` of eligible tokens, at most `max_predictions` per row."""

  vocab_size: int
  mask_token_id: int
  mask_prob: float = 0.15
  max_predictions: int = 20
  whole_word: bool = False


# --- helpers -------------------------------------------------------------------------------


def _psum(x, axis_name):
  return jax.lax.psum(x, axis_name) if axis_name else x


def _row_ids(batch_size: int, axis_name: str | None) -> Array:
  """Global row index of each local row: masking depends on it, never on the layout."""
  offset = jax.lax.axis_index(axis_name) * batch_size if axis_name else 0
  return offset + jnp.arange(batch_size, dtype=jnp.int32)


def _require(batch: Batch, keys: tuple[str, ...], what: str):
  missing = [k for k in keys if k not in batch]
  if missing:
    raise KeyError(f"{what} needs batch keys {missing}; the batch has {sorted(batch)}")


def _example_mask(batch: Batch) -> Array:
  mask = batch.get("example_mask")
  if mask is None:
    return jnp.ones(batch["input_ids"].shape[:1], jnp.float32)
  return mask.astype(jnp.float32)


def apply_masking(rng: Array, batch: Batch, masking: MaskingConfig,
                  axis_name: str | None = None) -> MaskedBatch:
  """Runs `mask_tokens` on a batch; rows are keyed by their global index."""
  ids = batch["input_ids"]
  masked = mask_tokens(
      rng, ids, batch["special_tokens_mask"], vocab_size=masking.vocab_size,
      mask_token_id=masking.mask_token_id, mask_prob=masking.mask_prob,
      max_predictions=masking.max_predictions,
      word_starts=batch.get("word_starts") if masking.whole_word else None,
      attention_mask=batch["attention_mask"], row_ids=_row_ids(ids.shape[0], axis_name))
  weights = masked.masked_weights * _example_mask(batch)[:, None]
  return masked.replace(masked_weights=weights)


def _cross_entropy(logits: Array, labels: Array) -> Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def _top1_correct(logits: Array, labels: Array) -> Array:
  """argmax(logits) == labels as `label logit >= max logit` (ties count as correct).

  A max-reduce that XLA shares with the softmax's, instead of argmax's variadic (value, index)
  reduce: on CPU that reduce alone took ~15% of the tiny MLM step ([640, 30522] logits).
  """
  logits = logits.astype(jnp.float32)
  label_logit = jnp.take_along_axis(logits, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return label_logit >= jnp.max(logits, axis=-1)


def pretraining_sums(model: nn.Module, params, batch: Batch, masked: MaskedBatch, *,
                     nsp: bool, deterministic: bool, dropout_rng: Array | None) -> Metrics:
  """Forward pass on a masked batch; returns unnormalized loss and accuracy sums."""
  rngs = None if deterministic else {"dropout": dropout_rng}
  out = model.apply({"params": params}, masked.input_ids, batch["attention_mask"],
                    batch["token_type_ids"], masked.masked_positions,
                    deterministic=deterministic, rngs=rngs)
  mlm_logits, nsp_logits = out if nsp else (out, None)  # [batch, P, vocab], [batch, 2]
  w = masked.masked_weights
  sums = {
      "mlm_loss": jnp.sum(_cross_entropy(mlm_logits, masked.masked_labels) * w),
      "mlm_correct": jnp.sum(_top1_correct(mlm_logits, masked.masked_labels) * w),
      "mlm_count": jnp.sum(w),
      "tokens": jnp.sum(batch["attention_mask"]).astype(jnp.float32),
  }
  if nsp:
    ex, labels = _example_mask(batch), batch["next_sentence_label"]
    sums["nsp_loss"] = jnp.sum(_cross_entropy(nsp_logits, labels) * ex)
    sums["nsp_correct"] = jnp.sum(_top1_correct(nsp_logits, labels) * ex)
    sums["nsp_count"] = jnp.sum(ex)
  return sums


def _pretraining_loss(sums: Metrics, denominators: Metrics) -> Array:
  loss = sums["mlm_loss"] / jnp.maximum(denominators["mlm_count"], 1.0)
  if "nsp_loss" in sums:
    loss += sums["nsp_loss"] / jnp.maximum(denominators["nsp_count"], 1.0)
  return loss


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
                     schedule: optax.Schedule | None) -> tuple[TrainState, Metrics]:
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  scalars = {"grad_norm": optax.global_norm(grads), "param_norm": optax.global_norm(params)}
  if schedule is not None:
    scalars["learning_rate"] = jnp.asarray(schedule(state.step), jnp.float32)
  return TrainState(state.step + 1, params, opt_state), scalars


def _step_rngs(rng: Array, step: Array, axis_name: str | None) -> tuple[Array, Array]:
  """(masking key shared by all devices, dropout key distinct per device)."""
  step_rng = jax.random.fold_in(rng, step)
  mask_rng, dropout_rng = jax.random.split(step_rng)
  if axis_name:
    dropout_rng = jax.random.fold_in(dropout_rng, jax.lax.axis_index(axis_name))
  return mask_rng, dropout_rng


# --- pretraining ---------------------------------------------------------------------------


def pretrain_step(state: TrainState, batch: Batch, rng: Array, *, model: nn.Module,
                  tx: optax.GradientTransformation, masking: MaskingConfig, nsp: bool = False,
                  schedule: optax.Schedule | None = None, grad_accum_steps: int = 1,
                  axis_name: str | None = None) -> tuple[TrainState, Metrics]:
  """One MLM(+NSP) update: mask in-graph, mean cross-entropy over masked tokens, AdamW."""
  _require(batch, PRETRAINING_KEYS + (("next_sentence_label",) if nsp else ()), "pretrain_step")
  mask_rng, dropout_rng = _step_rngs(rng, state.step, axis_name)
  masked = apply_masking(mask_rng, batch, masking, axis_name)
  # Global denominators first, so each device's and each micro-batch's share adds up exactly.
  denominators = {"mlm_count": _psum(jnp.sum(masked.masked_weights), axis_name)}
  if nsp:
    denominators["nsp_count"] = _psum(jnp.sum(_example_mask(batch)), axis_name)

  def loss_fn(params, micro, index):
    b, m = micro
    sums = pretraining_sums(model, params, b, m, nsp=nsp, deterministic=False,
                            dropout_rng=jax.random.fold_in(dropout_rng, index))
    return _pretraining_loss(sums, denominators), sums

  micro = _split_micro((batch, masked), grad_accum_steps)
  grads, sums = _accumulate(loss_fn, state.params, micro, grad_accum_steps)
  grads, sums = _psum((grads, sums), axis_name)
  state, scalars = _apply_gradients(state, grads, tx, schedule)
  return state, {**sums, **scalars}


def pretrain_eval_step(params, batch: Batch, rng: Array, *, model: nn.Module,
                       masking: MaskingConfig, nsp: bool = False,
                       axis_name: str | None = None) -> Metrics:
  """MLM(+NSP) loss and accuracy sums on a batch, masked with `rng`, dropout off."""
  masked = apply_masking(rng, batch, masking, axis_name)
  sums = pretraining_sums(model, params, batch, masked, nsp=nsp, deterministic=True,
                          dropout_rng=None)
  return _psum(sums, axis_name)


# --- classification ------------------------------------------------------------------------


def classification_sums(model: nn.Module, params, batch: Batch, *, deterministic: bool,
                        dropout_rng: Array | None) -> Metrics:
  rngs = None if deterministic else {"dropout": dropout_rng}
  logits = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                       batch["token_type_ids"], deterministic=deterministic, rngs=rngs)
  ex = _example_mask(batch)  # [batch]
  return {
      "loss_sum": jnp.sum(_cross_entropy(logits, batch["label"]) * ex),
      "correct": jnp.sum(_top1_correct(logits, batch["label"]) * ex),
      "count": jnp.sum(ex),
      "tokens": jnp.sum(batch["attention_mask"]).astype(jnp.float32),
  }


def classification_step(state: TrainState, batch: Batch, rng: Array, *, model: nn.Module,
                        tx: optax.GradientTransformation,
                        schedule: optax.Schedule | None = None, grad_accum_steps: int = 1,
                        axis_name: str | None = None) -> tuple[TrainState, Metrics]:
  """One fine-tuning update: mean cross-entropy over the real (unpadded) examples."""
  _require(batch, CLASSIFICATION_KEYS, "classification_step")
  _, dropout_rng = _step_rngs(rng, state.step, axis_name)
  count = _psum(jnp.sum(_example_mask(batch)), axis_name)

  def loss_fn(params, micro, index):
    sums = classification_sums(model, params, micro, deterministic=False,
                               dropout_rng=jax.random.fold_in(dropout_rng, index))
    return sums["loss_sum"] / jnp.maximum(count, 1.0), sums

  micro = _split_micro(batch, grad_accum_steps)
  grads, sums = _accumulate(loss_fn, state.params, micro, grad_accum_steps)
  grads, sums = _psum((grads, sums), axis_name)
  state, scalars = _apply_gradients(state, grads, tx, schedule)
  return state, {**sums, **scalars}


def classification_eval_step(params, batch: Batch, *, model: nn.Module,
                             axis_name: str | None = None) -> Metrics:
  """Classification loss and accuracy sums on a batch, dropout off; also the logits."""
  return _psum(classification_sums(model, params, batch, deterministic=True, dropout_rng=None),
               axis_name)


# --- host side -----------------------------------------------------------------------------


def accumulate_metrics(history: list[Metrics]) -> dict[str, float]:
  """Adds sums over steps; keeps the last value of per-step scalars (norms, learning rate)."""
  total: dict[str, float] = {}
  for metrics in history:
    for k, v in metrics.items():
      v = float(v)
      total[k] = total.get(k, 0.0) + v if k in SUM_KEYS else v
  return total


def summarize(sums: dict[str, float]) -> dict[str, float]:
  """Sums and denominators -> losses and accuracies, normalized once."""
  out = {k: v for k, v in sums.items() if k not in SUM_KEYS}
  if "mlm_count" in sums:
    n = max(sums["mlm_count"], 1.0)
    out["mlm_loss"] = sums["mlm_loss"] / n
    out["mlm_accuracy"] = sums["mlm_correct"] / n
    out["loss"] = out["mlm_loss"]
  if "nsp_count" in sums:
    n = max(sums["nsp_count"], 1.0)
    out["nsp_loss"] = sums["nsp_loss"] / n
    out["nsp_accuracy"] = sums["nsp_correct"] / n
    out["loss"] += out["nsp_loss"]
  if "count" in sums:
    n = max(sums["count"], 1.0)
    out["loss"] = sums["loss_sum"] / n
    out["accuracy"] = sums["correct"] / n
    out["num_examples"] = sums["count"]
  if "tokens" in sums:
    out["tokens"] = sums["tokens"]
  return out
