"""mask_tokens: BERT's masked-LM corruption (15% selection, 80/10/10), whole-word option.

Follows google-research/bert `create_pretraining_data.py`, computed on device inside the train
step instead of once offline:

* Budget. A row with n eligible tokens (not special, attended) gets
  `k = min(max_predictions, max(1, round(n * mask_prob)))` predictions, `round` being Python's
  (half to even, as google's `int(round(...))` under Python 3); k = 0 when n = 0. The budget is a
  static table over n, built on the host with Python's own `round`, so it matches exactly.
* Selection. Token level: a uniformly random k-subset of the eligible tokens. Whole-word: words
  in random order, each taken with all its pieces if it fits in the budget left, otherwise
  *skipped* (google's `continue`); the later, shorter words can still fill the budget.
* Corruption. Per selected position, independently (also within a word, as google):
  80% mask token, 10% a uniform id in [0, vocab_size) (possibly the original), 10% unchanged.
  The split is an option (`mask_token_prob`, `random_token_prob`; unchanged = the rest), e.g.
  crammed BERT's 80/20 without random tokens: `random_token_prob=0`. The default 0.8 / 0.1
  draws exactly the masks it always did.

The randomness of row i depends only on `fold_in(rng, row_ids[i])` and row i's inputs, so a
device holding rows 8..15 of a global batch gets exactly those rows of the full-batch result.
"""

from __future__ import annotations

import chex
import flax.struct
import jax
import jax.numpy as jnp

# Probabilities of the corruption branches of a selected position (google's 80/10/10): the
# defaults of mask_tokens' mask_token_prob and random_token_prob.
MASK_PROB = 0.8
RANDOM_PROB = 0.1


@flax.struct.dataclass
class MaskedBatch:
  """The corrupted inputs and the gathered MLM targets; unused prediction slots are 0."""

  input_ids: jax.Array         # [batch, seq] corrupted ids
  masked_positions: jax.Array  # [batch, max_predictions] int32, ascending, then 0
  masked_labels: jax.Array     # [batch, max_predictions] int32 original ids, then 0
  masked_weights: jax.Array    # [batch, max_predictions] float32, 1.0 real / 0.0 unused


def prediction_budget(num_eligible: int, mask_prob: float, max_predictions: int) -> int:
  """google's `min(max_predictions, max(1, int(round(n * mask_prob))))`, and 0 for n = 0."""
  if num_eligible == 0:
    return 0
  return min(max_predictions, max(1, int(round(num_eligible * mask_prob))))


def check_split(mask_token_prob: float, random_token_prob: float) -> None:
  """ValueError unless both probabilities are >= 0 and sum to at most 1."""
  for name, p in (("mask_token_prob", mask_token_prob), ("random_token_prob", random_token_prob)):
    if not 0.0 <= p <= 1.0:
      raise ValueError(f"{name} must be in [0, 1], got {p}")
  if mask_token_prob + random_token_prob > 1.0 + 1e-9:
    raise ValueError(f"mask_token_prob + random_token_prob must be <= 1, got {mask_token_prob} + "
                     f"{random_token_prob}")


def mask_tokens(rng: jax.Array, input_ids: jax.Array, special_tokens_mask: jax.Array, *,
                vocab_size: int, mask_token_id: int, mask_prob: float = 0.15,
                max_predictions: int = 20, word_starts: jax.Array | None = None,
                attention_mask: jax.Array | None = None,
                row_ids: jax.Array | None = None, mask_token_prob: float = MASK_PROB,
                random_token_prob: float = RANDOM_PROB) -> MaskedBatch:
  """Selects and corrupts BERT's masked-LM positions (see the module docstring).

  Args:
    rng: a PRNG key; row i uses `fold_in(rng, row_ids[i])`.
    input_ids: [batch, seq] token ids.
    special_tokens_mask: [batch, seq], 1 at [CLS]/[SEP]/[PAD] (never selected).
    vocab_size, mask_token_id, mask_prob, max_predictions: static (jit's static_argnames).
    word_starts: optional [batch, seq], 1 at the first piece of each word, 0 elsewhere; turns on
      whole-word masking. Continuation pieces not preceded (without a break) by an eligible word
      start are never selected.
    attention_mask: optional [batch, seq], 0 at padding (never selected).
    row_ids: optional [batch] int32 global row indices; defaults to arange(batch).
    mask_token_prob, random_token_prob: static; a selected position becomes the mask token with
      probability mask_token_prob, a uniform random id with random_token_prob, else stays.

  Returns:
    A MaskedBatch with fixed shapes ([batch, seq] and [batch, max_predictions]).
  """
  input_ids = jnp.asarray(input_ids)
  special_tokens_mask = jnp.asarray(special_tokens_mask)
  if input_ids.ndim != 2:
    raise ValueError(f"input_ids must be [batch, seq], got shape {input_ids.shape}")
  batch, seq = input_ids.shape
  for name, value in (("special_tokens_mask", special_tokens_mask),
                      ("word_starts", word_starts), ("attention_mask", attention_mask)):
    if value is not None and jnp.shape(value) != input_ids.shape:
      raise ValueError(f"{name} has shape {jnp.shape(value)} but input_ids has shape "
                       f"{input_ids.shape}")
  if row_ids is not None and jnp.shape(row_ids) != (batch,):
    raise ValueError(f"row_ids must have shape ({batch},), got {jnp.shape(row_ids)}")
  if not 0.0 < mask_prob <= 1.0:
    raise ValueError(f"mask_prob must be in (0, 1], got {mask_prob}")
  check_split(mask_token_prob, random_token_prob)
  if not 0 < max_predictions <= seq:
    raise ValueError(f"max_predictions must be in [1, seq={seq}], got {max_predictions}")
  if vocab_size <= 0:
    raise ValueError(f"vocab_size must be positive, got {vocab_size}")
  if not 0 <= mask_token_id < vocab_size:
    raise ValueError(f"mask_token_id must be in [0, vocab_size={vocab_size}), "
                     f"got {mask_token_id}")

  eligible = ~special_tokens_mask.astype(bool)
  if attention_mask is not None:
    eligible &= jnp.asarray(attention_mask).astype(bool)
  # Budget per number of eligible tokens, [seq + 1], computed with Python's round.
  budget = jnp.asarray([prediction_budget(n, mask_prob, max_predictions)
                        for n in range(seq + 1)], jnp.int32)
  k = budget[eligible.sum(axis=1)]  # [batch]
  if row_ids is None:
    row_ids = jnp.arange(batch, dtype=jnp.int32)
  keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, row_ids)

  def one_row(key, ids, eligible, starts, k):
    select_key, branch_key, token_key = jax.random.split(key, 3)
    if starts is None:
      selected = _select_tokens(select_key, eligible, k, max_predictions)
    else:
      selected = _select_words(select_key, eligible, starts.astype(bool), k)
    # [seq] -> [max_predictions]: selected positions first, ascending (at most k <= max_pred).
    order_key = jnp.where(selected, 0, seq) + jnp.arange(seq)
    _, positions = jax.lax.top_k(-order_key, max_predictions)
    valid = jnp.arange(max_predictions) < selected.sum()
    positions = jnp.where(valid, positions, 0).astype(jnp.int32)
    labels = ids[positions]

    # 80/10/10 (or the split asked for), drawn independently per prediction slot.
    branch = jax.random.uniform(branch_key, (max_predictions,))
    random_ids = jax.random.randint(token_key, (max_predictions,), 0, vocab_size, ids.dtype)
    new = jnp.where(branch < mask_token_prob, jnp.asarray(mask_token_id, ids.dtype),
                    jnp.where(branch < mask_token_prob + random_token_prob, random_ids, labels))
    # Unused slots scatter out of bounds and are dropped.
    corrupted = ids.at[jnp.where(valid, positions, seq)].set(new, mode="drop")
    return MaskedBatch(input_ids=corrupted,
                       masked_positions=positions,
                       masked_labels=jnp.where(valid, labels, 0).astype(jnp.int32),
                       masked_weights=valid.astype(jnp.float32))

  out = jax.vmap(one_row)(keys, input_ids, eligible, word_starts, k)
  chex.assert_shape([out.masked_positions, out.masked_labels, out.masked_weights],
                    (batch, max_predictions))
  return out


def _select_tokens(key, eligible, k, max_predictions):
  """A uniform k-subset of the eligible positions: [seq] bool -> [seq] bool."""
  # Eligible scores in [0, 1) beat the -1 of the others; top_k breaks ties by index.
  scores = jnp.where(eligible, jax.random.uniform(key, eligible.shape), -1.0)
  _, top = jax.lax.top_k(scores, max_predictions)  # [max_predictions], random order
  return jnp.zeros_like(eligible).at[top].set(jnp.arange(max_predictions) < k)


def _select_words(key, eligible, starts, k):
  """Whole words in random order, skipping those that overflow the budget k: [seq] -> [seq]."""
  seq = eligible.shape[0]
  # A segment starts at every word start and at every ineligible token; it is a word when it
  # starts at an eligible word start. Segment 0 (pieces before any break) is never a word.
  breaks = starts | ~eligible
  segment = jnp.cumsum(breaks)  # [seq], ids in [0, seq]
  is_word = jnp.zeros(seq + 1, bool).at[segment].max(starts & eligible)  # [seq + 1]
  in_word = eligible & is_word[segment]  # [seq]
  length = jnp.zeros(seq + 1, jnp.int32).at[segment].add(in_word)  # [seq + 1], 0 if no word

  # [seq + 1] segments -> [seq + 1] in random order (non-words last; their length 0 is inert).
  scores = jnp.where(length > 0, jax.random.uniform(key, (seq + 1,)), -1.0)
  order = jnp.argsort(-scores)
  sorted_length = length[order]

  # google's loop takes a word iff it fits in the budget left. Vectorized: with budget r, the
  # words that fit (length <= r) form a list whose longest prefix of cumulative length <= r is
  # exactly what the loop takes next; the first word after that prefix is skipped, and so is
  # every word longer than the new budget, so repeat with it. Each pass takes >= 1 word, so at
  # most k passes; typically 1-3.
  def candidates(state):
    taken, left = state
    return ~taken & (sorted_length > 0) & (sorted_length <= left)

  def take_prefix(state):
    taken, left = state
    fits = candidates(state)
    length_fits = jnp.where(fits, sorted_length, 0)
    take = fits & (jnp.cumsum(length_fits) <= left)
    return taken | take, left - jnp.where(take, sorted_length, 0).sum()

  taken, _ = jax.lax.while_loop(lambda s: candidates(s).any(), take_prefix,
                                (jnp.zeros(seq + 1, bool), k))
  taken_by_segment = jnp.zeros(seq + 1, bool).at[order].set(taken)  # unsort
  return in_word & taken_by_segment[segment]
