"""Tests for bert_jax.masking: exact budgets, 80/10/10 and uniformity within standard errors,
whole-word completeness and google's skip rule, determinism and layout independence."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.masking import mask_tokens, prediction_budget

PAD, CLS, SEP, MASK = 0, 1, 2, 3
FIRST_WORD_ID = 4
VOCAB = 20  # small, so a random replacement hits the original or [MASK] often enough to matter
SEQ = 64
MAX_PRED = 20
Z = 4.0  # tolerance in standard errors

jit_mask = jax.jit(mask_tokens, static_argnames=(
    "vocab_size", "mask_token_id", "mask_prob", "max_predictions"))
mask = functools.partial(jit_mask, vocab_size=VOCAB, mask_token_id=MASK,
                         max_predictions=MAX_PRED)


def make_rows(lengths, seq=SEQ, seed=0, constant_id=None):
  """[CLS] n word pieces [SEP] [PAD]...; returns (ids, special) as numpy [batch, seq]."""
  lengths = np.asarray(lengths)
  rng = np.random.RandomState(seed)
  pos = np.arange(seq)[None, :]
  ids = rng.randint(FIRST_WORD_ID, VOCAB, (len(lengths), seq))
  if constant_id is not None:
    ids[:] = constant_id
  n = lengths[:, None]
  ids = np.where(pos == 0, CLS, np.where(pos == n + 1, SEP, np.where(pos > n + 1, PAD, ids)))
  special = ((pos == 0) | (pos >= n + 1)).astype(np.int32)
  return ids.astype(np.int32), special


def to_numpy(out):
  return jax.tree.map(np.asarray, out)


def selected_mask(out, seq=SEQ):
  """[batch, seq] bool of the selected positions, from positions and weights."""
  sel = np.zeros((out.input_ids.shape[0], seq), bool)
  rows, slots = np.nonzero(out.masked_weights)
  sel[rows, out.masked_positions[rows, slots]] = True
  return sel


# ---------------------------------------------------------------------------------------------
# Token level.


@pytest.fixture(scope="module")
def full_rows():
  """4096 rows, 62 eligible tokens each (k = round(9.3) = 9)."""
  ids, special = make_rows(np.full(4096, SEQ - 2))
  return ids, special, to_numpy(mask(jax.random.key(0), ids, special))


def test_budget_formula_is_pythons_round():
  # Half to even, as Python's round: 0.25 * 10 = 2.5 -> 2, 0.25 * 6 = 1.5 -> 2; floor(x+.5) = 3.
  assert prediction_budget(10, 0.25, 20) == 2
  assert prediction_budget(6, 0.25, 20) == 2
  assert prediction_budget(2, 0.25, 20) == 1   # max(1, round(0.5) = 0)
  assert prediction_budget(0, 0.25, 20) == 0
  assert prediction_budget(1000, 0.15, 20) == 20


@pytest.mark.parametrize("mask_prob", [0.15, 0.25])
def test_counts_exact_per_row_and_layout(mask_prob):
  lengths = np.arange(SEQ - 1)  # 0 .. 62 eligible tokens, row 0 has none
  ids, special = make_rows(lengths)
  out = to_numpy(mask(jax.random.key(1), ids, special, mask_prob=mask_prob))
  expected = [prediction_budget(n, mask_prob, MAX_PRED) for n in lengths]
  np.testing.assert_array_equal(out.masked_weights.sum(1), expected)
  assert out.masked_weights.dtype == np.float32 and out.masked_positions.dtype == np.int32
  # Row 0: nothing eligible -> no prediction, ids untouched.
  assert not out.masked_weights[0].any() and not out.masked_positions[0].any()
  np.testing.assert_array_equal(out.input_ids[0], ids[0])
  for w, p, l in zip(out.masked_weights, out.masked_positions, out.masked_labels):
    k = int(w.sum())
    np.testing.assert_array_equal(w, np.arange(MAX_PRED) < k)  # real slots first
    assert (np.diff(p[:k]) > 0).all()                           # ascending, distinct
    assert not p[k:].any() and not l[k:].any()                 # padding slots are 0
  # Only selected positions may change.
  changed = out.input_ids != ids
  assert not (changed & ~selected_mask(out)).any()


def test_never_selects_special_or_padding_and_labels_are_originals(full_rows):
  ids, special, out = full_rows
  sel = selected_mask(out)
  assert not (sel & (special == 1)).any()
  rows = np.arange(len(ids))[:, None]
  real = out.masked_weights > 0
  np.testing.assert_array_equal(out.masked_labels[real], ids[rows, out.masked_positions][real])
  # Padding marked only by attention_mask (special_tokens_mask 0 there) is not selected either.
  attention = np.broadcast_to(np.arange(SEQ) < 40, (512, SEQ)).astype(np.int32)
  out2 = to_numpy(mask(jax.random.key(2), ids[:512], np.zeros_like(special[:512]),
                       attention_mask=attention))
  assert not (selected_mask(out2) & ~attention).any()
  np.testing.assert_array_equal(out2.masked_weights.sum(1), prediction_budget(40, 0.15, MAX_PRED))


def test_80_10_10_split(full_rows):
  ids, _, out = full_rows
  real = out.masked_weights > 0
  rows = np.arange(len(ids))[:, None]
  final = out.input_ids[rows, out.masked_positions][real]
  original = out.masked_labels[real]
  assert (original != MASK).all()
  n = final.size
  # A random replacement equals [MASK] or the original with probability 1/VOCAB each.
  expected = {"mask": 0.8 + 0.1 / VOCAB, "kept": 0.1 + 0.1 / VOCAB,
              "random": 0.1 * (1 - 2 / VOCAB)}
  observed = {"mask": np.mean(final == MASK), "kept": np.mean(final == original),
              "random": np.mean((final != MASK) & (final != original))}
  for name, p in expected.items():
    se = np.sqrt(p * (1 - p) / n)
    assert abs(observed[name] - p) < Z * se, (name, observed[name], p, se)


def test_random_replacements_uniform_over_vocab():
  # All ids equal, so every replacement that is neither [MASK] nor the id came from the random
  # branch, and those are uniform over the other VOCAB - 2 ids.
  word_id = 7
  ids, special = make_rows(np.full(4096, SEQ - 2), constant_id=word_id)
  out = to_numpy(mask(jax.random.key(3), ids, special))
  values = out.input_ids[(out.input_ids != word_id) & (special == 0)]
  values = values[values != MASK]
  counts = np.bincount(values, minlength=VOCAB)
  support = np.setdiff1d(np.arange(VOCAB), [MASK, word_id])
  assert values.min() == 0 and values.max() == VOCAB - 1
  assert counts[support].all()
  expected_n = 4096 * 9 * 0.1 * (VOCAB - 2) / VOCAB
  assert abs(values.size - expected_n) < Z * np.sqrt(expected_n)
  mean, sd = support.mean(), support.std()
  assert abs(values.mean() - mean) < Z * sd / np.sqrt(values.size)
  # Chi-square over the support: mean dof, sd sqrt(2 dof).
  e = values.size / support.size
  chi2 = ((counts[support] - e) ** 2 / e).sum()
  dof = support.size - 1
  assert chi2 < dof + 5 * np.sqrt(2 * dof), chi2


def test_positions_uniform_among_eligible(full_rows):
  ids, special, out = full_rows
  counts = selected_mask(out).sum(0)
  assert not counts[special[0] == 1].any()
  n_rows, n_eligible = len(ids), SEQ - 2
  p = prediction_budget(n_eligible, 0.15, MAX_PRED) / n_eligible
  z = (counts[1:SEQ - 1] - n_rows * p) / np.sqrt(n_rows * p * (1 - p))
  assert np.abs(z).max() < 4.5, z  # 62 positions: P(max |z| > 4.5) ~ 4e-4
  # Chi-square: a row's k-subset makes sum z^2 ~ n/(n-1) chi2(n-1): mean n, sd ~ sqrt(2n).
  assert (z ** 2).sum() < n_eligible + 5 * np.sqrt(2 * n_eligible), (z ** 2).sum()
  # Selection is not tied to the position: pairs of neighbours co-occur as if independent.
  sel = selected_mask(out)[:, 1:SEQ - 1]
  both = (sel[:, :-1] & sel[:, 1:]).mean()
  p_pair = p * (prediction_budget(n_eligible, 0.15, MAX_PRED) - 1) / (n_eligible - 1)
  # Poisson standard error of the pair count (slightly conservative for a k-subset).
  assert abs(both - p_pair) < Z * np.sqrt(p_pair / (n_rows * (n_eligible - 1)))


# ---------------------------------------------------------------------------------------------
# Determinism, jit, layout independence.


@pytest.fixture(scope="module")
def small_batch():
  ids, special = make_rows(np.random.RandomState(5).randint(0, SEQ - 1, 16), seed=5)
  starts = (special == 0) & (np.random.RandomState(6).rand(16, SEQ) < 0.6)
  return ids, special, starts.astype(np.int32)


def assert_batches_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, to_numpy(a), to_numpy(b))


@pytest.mark.parametrize("whole_word", [False, True])
def test_deterministic_and_jit_matches_eager(small_batch, whole_word):
  ids, special, starts = small_batch
  kw = dict(word_starts=starts if whole_word else None)
  a = mask(jax.random.key(0), ids, special, **kw)
  assert_batches_equal(a, mask(jax.random.key(0), ids, special, **kw))
  b = mask(jax.random.key(1), ids, special, **kw)
  assert not np.array_equal(np.asarray(a.masked_positions), np.asarray(b.masked_positions))
  eager = mask_tokens(jax.random.key(0), ids, special, vocab_size=VOCAB, mask_token_id=MASK,
                      max_predictions=MAX_PRED, **kw)
  assert_batches_equal(a, eager)


@pytest.mark.parametrize("whole_word", [False, True])
def test_rows_depend_only_on_row_id(small_batch, whole_word):
  ids, special, starts = small_batch
  kw = lambda rows: dict(word_starts=starts[rows] if whole_word else None)
  key = jax.random.key(4)
  full = to_numpy(mask(key, ids, special, **kw(slice(None))))
  # A device holding rows 8..15 of the global batch.
  part = mask(key, ids[8:], special[8:], row_ids=8 + jnp.arange(8), **kw(slice(8, None)))
  assert_batches_equal(jax.tree.map(lambda x: x[8:], full), part)
  # Any order (8 rows again: one compilation serves both checks).
  perm = np.random.RandomState(0).permutation(16)[:8]
  part = mask(key, ids[perm], special[perm], row_ids=jnp.asarray(perm), **kw(perm))
  assert_batches_equal(jax.tree.map(lambda x: x[perm], full), part)


def test_compiles_once_per_shape(small_batch):
  ids, special, _ = small_batch
  traces = []

  @jax.jit
  def step(rng):
    traces.append(None)
    return mask_tokens(rng, ids, special, vocab_size=VOCAB, mask_token_id=MASK)

  for i in range(3):
    step(jax.random.fold_in(jax.random.key(0), i))
  assert len(traces) == 1


# ---------------------------------------------------------------------------------------------
# Whole-word masking.


def word_spans(eligible, starts):
  """Reference: per row, a list of words, each a list of positions (loops, independent)."""
  rows = []
  for e_row, s_row in zip(eligible, starts):
    words, current = [], None
    for j, (e, s) in enumerate(zip(e_row, s_row)):
      if not e:
        current = None
      elif s:
        current = [j]
        words.append(current)
      elif current is not None:
        current.append(j)
      # else: a continuation piece whose word start is not eligible.
    rows.append(words)
  return rows


def make_word_rows(n_rows, lengths_p, seed):
  """[CLS] words [SEP] words [SEP] [PAD]..., word lengths ~ lengths_p; the second segment opens
  with an orphan continuation piece (word start behind the [SEP])."""
  rng = np.random.RandomState(seed)
  n = rng.randint(20, SEQ - 1, n_rows)
  ids, special = make_rows(n, seed=seed)
  sep = n // 2
  special[np.arange(n_rows), sep] = 1
  starts = np.zeros_like(special)
  for r in range(n_rows):
    j = 1
    while j < SEQ:
      starts[r, j] = 1
      j += 1 + rng.choice(len(lengths_p), p=lengths_p)
  starts[np.arange(n_rows), sep + 1] = 0
  starts[special == 1] = 0
  return ids, special, starts


@pytest.fixture(scope="module")
def word_rows():
  ids, special, starts = make_word_rows(2048, [0.6, 0.3, 0.1], seed=7)
  out = to_numpy(mask(jax.random.key(5), ids, special, word_starts=starts))
  return ids, special, starts, out


def test_whole_words_complete_and_google_skip_rule(word_rows):
  ids, special, starts, out = word_rows
  eligible = special == 0
  sel = selected_mask(out)
  reached = 0
  orphans = 0
  for r, words in enumerate(word_spans(eligible, starts)):
    k = prediction_budget(int(eligible[r].sum()), 0.15, MAX_PRED)
    in_word = np.zeros(SEQ, bool)
    chosen = 0
    for w in words:
      in_word[w] = True
      s = sel[r, w]
      assert s.all() or not s.any(), (r, w, s)  # all pieces or none
      chosen += s.all() * len(w)
    orphans += (eligible[r] & ~in_word).sum()
    assert not (sel[r] & ~in_word).any()        # no special, padding or orphan piece
    total = int(sel[r].sum())
    assert total == chosen <= k
    # google skips a word that overflows and goes on, so every word left out is longer than
    # the budget left at the end (stopping at the first overflow would break this).
    left = k - total
    for w in words:
      if not sel[r, w].any():
        assert len(w) > left, (r, w, k, total)
    reached += total == k
  assert orphans > len(ids)  # the orphan pieces were there to be wrongly selected
  assert reached / len(ids) > 0.97, reached / len(ids)


def test_whole_word_corruption_is_per_position(word_rows):
  ids, _, starts, out = word_rows
  # Second pieces of selected words: masked or not independently of their word start.
  sel = selected_mask(out)
  first = sel[:, :-1] & sel[:, 1:] & (starts[:, :-1] == 1) & (starts[:, 1:] == 0)
  a = out.input_ids[:, :-1][first] == MASK
  b = out.input_ids[:, 1:][first] == MASK
  p = 0.8 + 0.1 / VOCAB
  mixed, p_mixed = np.mean(a != b), 2 * p * (1 - p)
  assert abs(mixed - p_mixed) < Z * np.sqrt(p_mixed * (1 - p_mixed) / a.size), (mixed, p_mixed)


def test_whole_word_choice_uniform_and_single_piece_words_exact():
  # All words have 2 pieces: 31 words, k = 9, so 4 words (8 pieces) and the 9th slot stays
  # empty because every other word overflows; each word is chosen with probability 4 / 31.
  ids, special = make_rows(np.full(4096, SEQ - 2))
  starts = ((np.arange(SEQ) % 2 == 1) & (special == 0)).astype(np.int32)
  out = to_numpy(mask(jax.random.key(6), ids, special, word_starts=starts))
  np.testing.assert_array_equal(out.masked_weights.sum(1), 8)
  counts = selected_mask(out)[:, 1:SEQ - 1:2].sum(0)
  p = 4 / 31
  z = (counts - 4096 * p) / np.sqrt(4096 * p * (1 - p))
  assert np.abs(z).max() < 4.5, z
  assert (z ** 2).sum() < 31 + 5 * np.sqrt(2 * 31), (z ** 2).sum()
  # Single-piece words: the budget is reached exactly, as at the token level.
  out = to_numpy(mask(jax.random.key(6), ids, special, word_starts=1 - special))
  np.testing.assert_array_equal(out.masked_weights.sum(1), 9)


# ---------------------------------------------------------------------------------------------
# Arguments.


@pytest.mark.parametrize("kwargs, message", [
    (dict(mask_prob=0.0), "0.0"),
    (dict(mask_prob=1.5), "1.5"),
    (dict(mask_prob=-0.1), "-0.1"),
    (dict(max_predictions=0), "got 0"),
    (dict(max_predictions=SEQ + 1), f"got {SEQ + 1}"),
    (dict(mask_token_id=VOCAB), f"got {VOCAB}"),
    (dict(special_tokens_mask=np.zeros((2, SEQ - 1))), f"(2, {SEQ - 1})"),
    (dict(word_starts=np.zeros((3, SEQ))), f"(3, {SEQ})"),
    (dict(attention_mask=np.zeros((2, 5))), "(2, 5)"),
    (dict(row_ids=np.arange(3)), "(3,)"),
])
def test_bad_arguments_raise_with_the_value(kwargs, message):
  ids, special = make_rows([5, 6])
  args = dict(special_tokens_mask=special, vocab_size=VOCAB, mask_token_id=MASK,
              max_predictions=MAX_PRED)
  args.update(kwargs)
  with pytest.raises(ValueError, match=re.escape(message)):
    mask_tokens(jax.random.key(0), ids, **args)
  if "special_tokens_mask" in kwargs:  # the message names both shapes
    with pytest.raises(ValueError, match=re.escape(f"(2, {SEQ})")):
      mask_tokens(jax.random.key(0), ids, **args)


# ---------------------------------------------------------------------------------------------
# The corruption split as an option (config.masking.mask_token_prob / random_token_prob).

mask_split = jax.jit(functools.partial(mask_tokens, vocab_size=VOCAB, mask_token_id=MASK,
                                       max_predictions=MAX_PRED),
                     static_argnames=("mask_token_prob", "random_token_prob"))


def test_default_split_is_todays_masks(small_batch):
  ids, special, starts = small_batch
  for kw in ({}, {"word_starts": starts}):
    explicit = mask_split(jax.random.key(7), ids, special, mask_token_prob=0.8,
                          random_token_prob=0.1, **kw)
    assert_batches_equal(mask(jax.random.key(7), ids, special, **kw), explicit)


@pytest.mark.parametrize("mask_p, random_p", [(0.8, 0.0), (0.5, 0.3)])
def test_other_splits(mask_p, random_p):
  ids, special = make_rows(np.full(4096, SEQ - 2))
  out = to_numpy(mask_split(jax.random.key(8), ids, special, mask_token_prob=mask_p,
                            random_token_prob=random_p))
  real = out.masked_weights > 0
  rows = np.arange(len(ids))[:, None]
  final = out.input_ids[rows, out.masked_positions][real]
  original = out.masked_labels[real]
  n = final.size
  kept_p = 1 - mask_p - random_p
  expected = {"mask": mask_p + random_p / VOCAB, "kept": kept_p + random_p / VOCAB,
              "random": random_p * (1 - 2 / VOCAB)}
  observed = {"mask": np.mean(final == MASK), "kept": np.mean(final == original),
              "random": np.mean((final != MASK) & (final != original))}
  for name, p in expected.items():
    if p == 0:
      assert observed[name] == 0, name  # 80/20: no random token at all
      continue
    se = np.sqrt(p * (1 - p) / n)
    assert abs(observed[name] - p) < Z * se, (name, observed[name], p, se)
  # The selection does not depend on the split.
  np.testing.assert_array_equal(out.masked_weights.sum(1), prediction_budget(SEQ - 2, 0.15,
                                                                             MAX_PRED))


@pytest.mark.parametrize("mask_p, random_p, message", [
    (0.9, 0.2, "0.9 + 0.2"), (-0.1, 0.1, "-0.1"), (0.8, -0.5, "-0.5")])
def test_bad_split_raises_with_the_value(mask_p, random_p, message):
  ids, special = make_rows([5, 6])
  with pytest.raises(ValueError, match=re.escape(message)):
    mask_tokens(jax.random.key(0), ids, special, vocab_size=VOCAB, mask_token_id=MASK,
                max_predictions=MAX_PRED, mask_token_prob=mask_p, random_token_prob=random_p)


def test_bad_split_in_the_config_is_a_config_error():
  from bert_jax.errors import ConfigError
  from bert_jax.tasks.pretraining.task import Pretraining
  from experiments import base
  c = base.get_config()
  c.masking.random_token_prob = 0.3
  with pytest.raises(ConfigError, match=re.escape("0.8 + 0.3")):
    Pretraining.from_config(c, {"vocab_size": VOCAB, "mask_token_id": MASK})
  c.masking.update(mask_token_prob=0.8, random_token_prob=0.0)
  task = Pretraining.from_config(c, {"vocab_size": VOCAB, "mask_token_id": MASK})
  assert task.checkpoint_info()["masking"]["random_token_prob"] == 0.0
  c.masking.random_token_prob = 0.1  # the default split leaves the checkpoint info as before
  info = Pretraining.from_config(c, {"vocab_size": VOCAB, "mask_token_id": MASK}).checkpoint_info()
  assert "mask_token_prob" not in info["masking"] and "random_token_prob" not in info["masking"]
  assert Pretraining.from_checkpoint_info(info).masking.mask_token_prob == 0.8
