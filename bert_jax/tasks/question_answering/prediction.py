"""From start/end logits to answers, and the official prediction file.

`postprocess` picks, over all windows of a question, the best span whose start and end are
context pieces, end >= start, at most `max_answer_length` pieces, and whose start piece has its
maximum context in that window; score = start logit + end logit; the text is cut from the
original context by character offsets.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bert_jax import fileio
from bert_jax.tasks.question_answering.reader import Example


@dataclasses.dataclass(frozen=True)
class Prediction:
  """The best span of one question; `alternatives` is the n-best list, best first.

  For a question without any valid span (a context with no wordpieces): text "",
  start_char = end_char = 0, score -inf, no alternatives.
  """
  text: str
  start_char: int  # context[start_char:end_char] == text
  end_char: int
  score: float  # start logit + end logit
  alternatives: tuple[tuple[str, float], ...]


def postprocess(examples: Sequence[Example], features: Mapping[str, np.ndarray],
                start_logits, end_logits, *, n_best_size: int = 20,
                max_answer_length: int = 30) -> dict[str, Prediction]:
  """Start/end logits [N, S] of `encode`'s rows -> {question id: Prediction}.

  In each row the `n_best_size` best starts (context pieces with their maximum context in that
  row) and the `n_best_size` best ends (context pieces) are paired; a pair is a candidate when
  end >= start and it spans at most `max_answer_length` pieces. Candidates of all rows of a
  question compete on start + end logit; equal texts are listed once. The span is therefore
  always inside the context; a question with no candidate gets text "" (see `Prediction`).
  """
  start_logits = np.asarray(start_logits, np.float64)
  end_logits = np.asarray(end_logits, np.float64)
  offsets = np.asarray(features["offsets"])
  max_context = np.asarray(features["max_context"]).astype(bool)
  example_index = np.asarray(features["example_index"])
  if start_logits.shape != offsets.shape[:2] or end_logits.shape != offsets.shape[:2]:
    raise ValueError(f"start/end logits {start_logits.shape}/{end_logits.shape} do not match "
                     f"the features' [rows, length] {offsets.shape[:2]}")
  rows_of = collections.defaultdict(list)
  for row, index in enumerate(example_index):
    rows_of[int(index)].append(row)

  predictions = {}
  for index, example in enumerate(examples):
    candidates = []  # (score, start_char, end_char)
    for row in rows_of.get(index, ()):
      is_context = offsets[row, :, 0] >= 0
      starts = _top(start_logits[row], is_context & max_context[row], n_best_size)
      ends = _top(end_logits[row], is_context, n_best_size)
      # [starts, ends] pairs -> the valid ones
      length = ends[None, :] - starts[:, None] + 1
      s, e = np.nonzero((length >= 1) & (length <= max_answer_length))
      scores = start_logits[row, starts[s]] + end_logits[row, ends[e]]
      candidates += zip(scores.tolist(), offsets[row, starts[s], 0].tolist(),
                        offsets[row, ends[e], 1].tolist())
    candidates.sort(key=lambda c: -c[0])  # stable: ties keep row, start, end order
    best, alternatives = None, {}
    for score, start_char, end_char in candidates:
      text = example.context[start_char:end_char]
      if text in alternatives:
        continue
      best = best or (text, start_char, end_char, score)
      alternatives[text] = score
      if len(alternatives) == n_best_size:
        break
    if best is None:
      predictions[example.id] = Prediction("", 0, 0, float("-inf"), ())
    else:
      predictions[example.id] = Prediction(best[0], best[1], best[2], best[3],
                                           tuple(alternatives.items()))
  return predictions


def _top(logits: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
  """Positions of the k largest allowed logits, largest first (ties: lower position first)."""
  positions = np.flatnonzero(allowed)
  return positions[np.argsort(-logits[positions], kind="stable")[:k]]


def write_predictions(path: str, predictions: Mapping[str, Any]) -> None:
  """Writes {id: text} (the official prediction file format) atomically."""
  fileio.write_json_atomic(path, {qid: prediction_text(p) for qid, p in predictions.items()})


def prediction_text(prediction) -> str:
  return prediction.text if isinstance(prediction, Prediction) else prediction
