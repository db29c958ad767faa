"""Packing short fine-tuning examples into shared rows (host side, numpy).

Most of a padded fine-tuning batch is padding: Rotten Tomatoes sentences fill ~40% of a
64-piece row, CoNLL sentences ~15% of a 128-piece one. Packed, one row holds several whole
examples back to back:

    input_ids     [CLS] a1 a2 [SEP] [CLS] b1 b2 b3 [SEP] [CLS] c1 [SEP] 0 0
    segment_ids     1   1  1    1     2   2  2  2    2     3   3    3   0 0
    cls_positions   [0, 4, 9]              (each example's first token; `example_mask` 1 1 1)

and the model (`segment_ids`, see model.py) keeps attention inside each example and restarts
its positions, so every example computes what it would alone. Sentence-level values (label,
answer positions) become [rows, max_per_row]; token-level ones stay [rows, length].

Which examples share a row: `first_fit` over the epoch's shuffled order, a deterministic
function of (seed, epoch), so a packed iterator's state is still one integer (`PackedPlan`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np


def first_fit(lengths: np.ndarray, order: np.ndarray, *, row_length: int, max_per_row: int,
              open_rows: int = 64) -> list[list[int]]:
  """Rows of example indices: each example of `order` goes into the first open row with room
  for its `lengths[i]` tokens and fewer than `max_per_row` examples; when none has room and
  `open_rows` are open, the oldest closes. Rows come out in the order they close, each keeps
  its examples in stream order. Deterministic given `order`."""
  if max_per_row < 1 or open_rows < 1:
    raise ValueError(f"max_per_row ({max_per_row}) and open_rows ({open_rows}) must be >= 1")
  too_long = np.flatnonzero(np.asarray(lengths) > row_length)
  if too_long.size:
    i = int(too_long[0])
    raise ValueError(f"example {i} has {int(lengths[i])} tokens, more than a row of "
                     f"{row_length}")
  closed: list[list[int]] = []
  members: list[list[int]] = []
  room: list[int] = []
  for i in order.tolist():
    n = int(lengths[i])
    for j, free in enumerate(room):
      if free >= n and len(members[j]) < max_per_row:
        members[j].append(i)
        room[j] -= n
        break
    else:
      if len(members) == open_rows:
        closed.append(members.pop(0))
        room.pop(0)
      members.append([i])
      room.append(row_length - n)
  return closed + members


class PackedPlan:
  """The rows of every epoch and how they cut into global batches.

  Epoch e packs the examples in the order `permutation(seed, e)` (or 0..n-1 unshuffled) with
  `first_fit`; the epochs' rows follow each other without a break, and global batch k is rows
  [k * rows_per_batch, (k + 1) * rows_per_batch), so batch k is a pure function of (seed, k).
  `batch(k)` -> [rows_per_batch, max_per_row] example indices, -1 in empty slots (and on the
  empty rows that complete the last batch of a finite run).
  """

  def __init__(self, lengths: np.ndarray, *, row_length: int, max_per_row: int,
               rows_per_batch: int, seed: int, shuffle: bool, num_epochs: int | None):
    if not len(lengths):
      raise ValueError("nothing to pack: the split has no examples")
    self.lengths = np.asarray(lengths, np.int64)
    self.row_length, self.max_per_row = row_length, max_per_row
    self.rows_per_batch, self.seed, self.shuffle = rows_per_batch, seed, shuffle
    self.num_epochs = num_epochs
    self._epochs: list[np.ndarray] = []  # [rows, max_per_row] per epoch, computed on demand
    self._ends: list[int] = []  # cumulative row counts
    self._lock = threading.Lock()

  def _epoch_rows(self, epoch: int) -> np.ndarray:
    n = len(self.lengths)
    order = (np.random.default_rng([self.seed % 2**32, epoch]).permutation(n) if self.shuffle
             else np.arange(n))
    rows = first_fit(self.lengths, order, row_length=self.row_length,
                     max_per_row=self.max_per_row, open_rows=max(self.rows_per_batch, 8))
    out = np.full((len(rows), self.max_per_row), -1, np.int64)
    for r, members in enumerate(rows):
      out[r, :len(members)] = members
    return out

  def _extend_to(self, row: int) -> None:
    """Computes epochs until row `row` exists (or the run's epochs are exhausted)."""
    with self._lock:
      while (not self._ends or self._ends[-1] <= row) and (
          self.num_epochs is None or len(self._epochs) < self.num_epochs):
        rows = self._epoch_rows(len(self._epochs))
        self._epochs.append(rows)
        self._ends.append((self._ends[-1] if self._ends else 0) + len(rows))

  @property
  def num_rows(self) -> int:
    """Rows of a finite run (all its epochs)."""
    if self.num_epochs is None:
      raise ValueError("an endless plan has no row count")
    self._extend_to(np.iinfo(np.int64).max)
    return self._ends[-1]

  def __len__(self) -> int:
    """Global batches of a finite run, the last completed with empty rows."""
    return -(-self.num_rows // self.rows_per_batch)

  def rows(self, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of the run -> [stop - start, max_per_row] (-1 beyond the end)."""
    self._extend_to(stop - 1)
    out = np.full((stop - start, self.max_per_row), -1, np.int64)
    first = 0
    for rows, end in zip(self._epochs, self._ends):
      lo, hi = max(start, first), min(stop, end)
      if lo < hi:
        out[lo - start:hi - start] = rows[lo - first:hi - first]
      first = end
    return out

  def batch(self, k: int) -> np.ndarray:
    return self.rows(k * self.rows_per_batch, (k + 1) * self.rows_per_batch)

  def fill(self) -> float:
    """Fraction of the first epoch's row tokens that are real (1 - padding)."""
    self._extend_to(0)
    epoch = self._epochs[0]
    real = self.lengths[epoch[epoch >= 0]].sum()
    return float(real) / (len(epoch) * self.row_length)


def pack(examples: Sequence[dict[str, np.ndarray]], slots: np.ndarray, *, row_length: int,
         token_keys: Sequence[str], example_keys: Sequence[str] = (),
         offset_keys: Sequence[str] = (),
         example_specs: dict[str, tuple[tuple[int, ...], np.dtype]] | None = None
         ) -> dict[str, np.ndarray]:
  """Builds packed rows from examples.

  examples: one dict per example: `token_keys` 1-D arrays of the example's real tokens (equal
  lengths), `example_keys` / `offset_keys` scalars (example keys may also be float or
  vectors, e.g. a regression score or a multi-hot label). slots [rows, max_per_row]: indices into
  `examples`, -1 = empty. Returns token keys [rows, row_length] (0 after the examples),
  `segment_ids` and `attention_mask` [rows, row_length], `cls_positions` [rows, max_per_row]
  (first token of each example), the example keys [rows, max_per_row] (`offset_keys`, which
  are positions inside the example, are shifted by the example's start; an example key of
  shape [L] becomes [rows, max_per_row, L], in its dtype), `example_mask` [rows, max_per_row].
  `example_specs` {key: (shape, dtype)} of one example's value (default: the first example's,
  int32 scalars when there is none) fixes the example keys' arrays.
  """
  num_rows, max_per_row = slots.shape
  batch = {k: np.zeros((num_rows, row_length), np.int32) for k in token_keys}
  segment_ids = np.zeros((num_rows, row_length), np.int32)
  cls_positions = np.zeros((num_rows, max_per_row), np.int32)
  specs = dict(example_specs or {})
  for k in example_keys:
    if k not in specs:
      value = np.asarray(examples[0][k]) if len(examples) else np.zeros((), np.int32)
      specs[k] = (value.shape, value.dtype if value.dtype != np.int64 else np.int32)
  scalars = {k: np.zeros((num_rows, max_per_row) + tuple(specs[k][0]), specs[k][1])
             for k in example_keys}
  scalars.update({k: np.zeros((num_rows, max_per_row), np.int32) for k in offset_keys})
  for r in range(num_rows):
    start = 0
    for s in range(max_per_row):
      i = int(slots[r, s])
      if i < 0:
        continue
      example = examples[i]
      n = len(example[token_keys[0]])
      if start + n > row_length:
        raise ValueError(f"row {r} overflows: {start + n} tokens in a row of {row_length}")
      for k in token_keys:
        batch[k][r, start:start + n] = example[k]
      segment_ids[r, start:start + n] = s + 1
      cls_positions[r, s] = start
      for k in example_keys:
        scalars[k][r, s] = example[k]
      for k in offset_keys:
        scalars[k][r, s] = int(example[k]) + start
      start += n
  batch.update(scalars)
  batch["segment_ids"] = segment_ids
  batch["attention_mask"] = (segment_ids > 0).astype(np.int32)
  batch["cls_positions"] = cls_positions
  batch["example_mask"] = (slots >= 0).astype(np.int32)
  return batch
