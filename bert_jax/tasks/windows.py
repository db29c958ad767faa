"""Overlapping windows over a long sequence of word pieces, and the max-context rule.

One planner for token classification (windows of whole words over a sentence) and question
answering (windows over a context, where each piece is its own "word"):

- `plan`: windows of at most `budget` pieces; each starts at a word and holds whole words (only
  a word longer than `budget` is cut); the next starts at most `window_step` pieces after it
  (the STEP between starts; QA's `doc_stride` is the OVERLAP), never past the first word left
  out, so every word is in some window; the last reaches the end.
- `max_context`: the one window each word is read from, google-research/bert's
  `_check_is_max_context`: score `min(pieces before the word, pieces after it) + 0.01 *
  window length`, over the windows that hold its first piece; ties to the earlier window.

numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def plan(word_start: np.ndarray, word_end: np.ndarray, budget: int, window_step: int
         ) -> list[tuple[int, int]]:
  """Piece ranges [lo, hi) of the windows over words [word_start, word_end) ([W] each,
  consecutive, from piece 0); see the module docstring. No words: one empty window."""
  if not 1 <= window_step <= budget:
    raise ValueError(f"window_step must be in [1, {budget}], got {window_step}")
  num_words = len(word_start)
  if num_words == 0 or word_end[-1] <= budget:
    return [(0, int(word_end[-1]) if num_words else 0)]
  windows, a = [], 0
  while True:
    lo = int(word_start[a])
    b = max(int(np.searchsorted(word_end, lo + budget, side="right")), a + 1)
    windows.append((lo, min(int(word_end[b - 1]), lo + budget)))
    if b >= num_words:
      return windows
    nxt = int(np.searchsorted(word_start, lo + window_step, side="right")) - 1
    a = min(max(nxt, a + 1), b)


def max_context(windows: Sequence[tuple[int, int]], word_start: np.ndarray,
                word_end: np.ndarray) -> np.ndarray:
  """[W] int: the index in `windows` ([lo, hi) piece ranges) of the window each word
  [word_start, word_end) is read from (see the module docstring)."""
  lo, hi = np.array(windows).reshape(-1, 2).T[:, :, None]  # [K, 1] each
  score = np.minimum(word_start - lo, hi - np.minimum(word_end, hi)) + 0.01 * (hi - lo)
  score = np.where((lo <= word_start) & (word_start < hi), score, -np.inf)  # [K, W]
  return np.argmax(score, axis=0) if len(word_start) else np.zeros(0, np.int64)
