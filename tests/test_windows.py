"""The shared window planner (bert_jax/tasks/windows.py) gives what the NER and QA planners
gave before they shared it: the old code paths are copied here as the reference."""

import numpy as np
import pytest

from bert_jax.tasks import windows
from bert_jax.tasks.question_answering import windows as qa_windows


def _old_ner_windows(word_start, word_end, budget, window_step):
  num_words = len(word_start)
  if num_words == 0 or word_end[-1] <= budget:
    return [(0, int(word_end[-1]) if num_words else 0)]
  out, a = [], 0
  while True:
    lo = int(word_start[a])
    b = max(int(np.searchsorted(word_end, lo + budget, side="right")), a + 1)
    out.append((lo, min(int(word_end[b - 1]), lo + budget)))
    if b >= num_words:
      return out
    nxt = int(np.searchsorted(word_start, lo + window_step, side="right")) - 1
    a = min(max(nxt, a + 1), b)


def _old_ner_predictor(spans, word_start, word_end):
  lo, hi = np.array(spans).reshape(-1, 2).T[:, :, None]
  score = (np.minimum(word_start - lo, hi - np.minimum(word_end, hi)) + 0.01 * (hi - lo))
  score = np.where((lo <= word_start) & (word_start < hi), score, -np.inf)
  return np.argmax(score, axis=0) if len(word_start) else np.zeros(0, int)


def _old_qa_spans(num_pieces, window, overlap):
  spans, start = [], 0
  while True:
    spans.append((start, min(window, num_pieces - start)))
    if start + window >= num_pieces:
      return spans
    start += window - overlap


def _old_qa_max_context(spans, num_pieces):
  scores = np.full((len(spans), num_pieces), -np.inf)
  for w, (start, length) in enumerate(spans):
    position = np.arange(start, start + length)
    scores[w, start:start + length] = (
        np.minimum(position - start, start + length - 1 - position) + 0.01 * length)
  return np.argmax(scores, axis=0) if num_pieces else np.zeros(0, np.int64)


def _words(lengths):
  end = np.cumsum(np.asarray(lengths, np.int64))  # [W]
  return end - np.asarray(lengths, np.int64), end


# (word lengths in pieces, budget, window_step): no words, shorter than one window, exactly one
# window, a short last window, a word longer than the window, window_step 1 and = budget.
NER_CASES = [([], 6, 3), ([1, 2], 6, 3), ([2, 2, 2], 6, 3), ([1] * 7, 6, 3),
             ([2, 1, 3, 1, 2, 2, 1], 5, 2), ([1, 9, 1, 2], 4, 2), ([3, 3, 3, 3], 6, 1),
             ([1] * 10, 4, 4), ([2, 5, 1, 1, 4, 2], 6, 6)]


@pytest.mark.parametrize("lengths,budget,window_step", NER_CASES)
def test_shared_planner_matches_old_ner(lengths, budget, window_step):
  start, end = _words(lengths)
  want = _old_ner_windows(start, end, budget, window_step)
  got = windows.plan(start, end, budget, window_step)
  assert got == want
  np.testing.assert_array_equal(windows.max_context(got, start, end),
                                _old_ner_predictor(want, start, end))


# (pieces, window, overlap): no pieces, shorter than one window, exactly one window, a short
# last window, windows that end exactly at the end, no overlap, the largest overlap.
QA_CASES = [(0, 6, 2), (3, 6, 2), (6, 6, 2), (8, 6, 2), (10, 4, 1), (13, 5, 0), (7, 4, 3),
            (12, 4, 2), (40, 9, 4)]


@pytest.mark.parametrize("num_pieces,window,overlap", QA_CASES)
def test_shared_planner_matches_old_qa(num_pieces, window, overlap):
  want = _old_qa_spans(num_pieces, window, overlap)
  assert qa_windows.window_spans(num_pieces, window, overlap) == want
  np.testing.assert_array_equal(qa_windows.max_context_window(want, num_pieces),
                                _old_qa_max_context(want, num_pieces))


def test_shared_planner_matches_both_on_random_cases():
  rs = np.random.RandomState(0)
  for _ in range(200):
    budget = int(rs.randint(1, 12))
    window_step = int(rs.randint(1, budget + 1))
    start, end = _words(rs.randint(1, 6, size=rs.randint(0, 20)))
    got = windows.plan(start, end, budget, window_step)
    assert got == _old_ner_windows(start, end, budget, window_step)
    np.testing.assert_array_equal(windows.max_context(got, start, end),
                                  _old_ner_predictor(got, start, end))
    n, overlap = int(rs.randint(0, 40)), int(rs.randint(0, budget))
    spans = qa_windows.window_spans(n, budget, overlap)
    assert spans == _old_qa_spans(n, budget, overlap)
    np.testing.assert_array_equal(qa_windows.max_context_window(spans, n),
                                  _old_qa_max_context(spans, n))


def test_every_word_is_read_from_a_window_that_holds_it():
  start, end = _words([2, 1, 3, 1, 2, 2, 1])
  spans = windows.plan(start, end, 5, 2)
  best = windows.max_context(spans, start, end)
  for word, k in enumerate(best):
    lo, hi = spans[k]
    assert lo <= start[word] < hi
  with pytest.raises(ValueError, match="window_step"):
    windows.plan(start, end, 5, 6)
