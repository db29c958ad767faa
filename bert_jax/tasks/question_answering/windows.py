"""QA features: one row per window, `[CLS] question [SEP] context-window [SEP]`.

`encode` pads each row to `max_seq_length`. The question is cut to its first
`max_query_length` wordpieces. A context longer than a window is covered by several windows;
`doc_stride` is the OVERLAP: consecutive windows share `doc_stride` context pieces
(transformers' tokenizer `stride`, with which the windows agree piece for piece;
google-research/bert's `doc_stride` is instead the step between window starts). Answers are
located by character offsets, not by re-tokenizing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bert_jax.errors import ConfigError, DataError
from bert_jax.tasks import windows as shared_windows
from bert_jax.tasks.question_answering.reader import Example

FEATURE_KEYS = ("input_ids", "attention_mask", "token_type_ids", "start_positions",
                "end_positions", "example_index", "offsets", "max_context")


def window_spans(num_pieces: int, window: int, overlap: int) -> list[tuple[int, int]]:
  """(start, length) of each window over `num_pieces` context pieces.

  Windows hold `window` pieces (the last one may hold fewer), consecutive windows share
  `overlap` pieces, and the last one reaches the end. A context with no pieces gets one empty
  window, so every question has at least one row. (`bert_jax.tasks.windows.plan`, each piece
  a word.)
  """
  if not 0 <= overlap < window:
    raise ValueError(f"overlap must be in [0, {window}) for windows of {window}, got {overlap}")
  pieces = np.arange(num_pieces)  # [n]
  return [(lo, hi - lo)
          for lo, hi in shared_windows.plan(pieces, pieces + 1, window, window - overlap)]


def max_context_window(spans: Sequence[tuple[int, int]], num_pieces: int) -> np.ndarray:
  """[num_pieces] int: the window where each piece has the most context around it.

  google-research/bert's `_check_is_max_context` (`bert_jax.tasks.windows.max_context`, each
  piece a word): score = min(pieces left, pieces right) + 0.01 * window length; the first
  window wins a tie.
  """
  pieces = np.arange(num_pieces)  # [n]
  return shared_windows.max_context([(start, start + length) for start, length in spans],
                                    pieces, pieces + 1)


def answer_pieces(offsets: np.ndarray, start_char: int, end_char: int) -> tuple[int, int] | None:
  """Context piece offsets [n, 2] and a character span -> (first, last) piece covering it.

  The first piece is the first one ending after `start_char`, the last one the last starting
  before `end_char`; None when no piece lies inside the span (only whitespace or characters
  the normalizer removes).
  """
  first = int(np.searchsorted(offsets[:, 1], start_char, side="right"))
  last = int(np.searchsorted(offsets[:, 0], end_char, side="left")) - 1
  return (first, last) if first <= last else None


def encode(examples: Sequence[Example], tokenizer, *, max_seq_length: int = 384,
           max_query_length: int = 64, doc_stride: int = 128, training: bool,
           truncated: list[int] | None = None) -> dict[str, np.ndarray]:
  """Questions and contexts -> model inputs, one row per window (see the module docstring).

  Returns, with N windows in all and S = max_seq_length:
    input_ids, attention_mask, token_type_ids: [N, S] int32; `[CLS] question [SEP] context
      [SEP]` then padding, segment 1 for the context and its [SEP].
    start_positions, end_positions: [N] int32, the first/last piece of the first answer in this
      row, or 0 ([CLS]) when the row does not hold the whole answer.
    example_index: [N] int32 index into `examples`; rows of one example are consecutive.
    offsets: [N, S, 2] int32 character span of each context piece in `Example.context`;
      -1 for [CLS], question, [SEP] and padding.
    max_context: [N, S] int32, 1 where this row is the one where the context piece has the most
      context (each context piece has exactly one such row).

  With `training=True` every example must have an answer that covers at least one piece; for
  evaluation the labels are filled the same way where possible (for an eval loss). The indices
  of questions longer than `max_query_length` pieces (cut to it) are appended to `truncated`
  when given.
  Raises DataError naming the question id when the (truncated) question leaves a window no
  more than `doc_stride` context pieces.
  """
  if max_query_length < 1 or doc_stride < 0 or max_seq_length < 4:
    raise ConfigError(f"need max_seq_length >= 4, max_query_length >= 1 and doc_stride >= 0; "
                      f"got {max_seq_length}, {max_query_length}, {doc_stride}")
  # Paragraphs carry several questions: tokenize each distinct context once.
  context_ids = {}
  for example in examples:
    context_ids.setdefault(example.context, len(context_ids))
  context_pieces = tokenizer.tokenize_with_offsets(list(context_ids))
  question_pieces = tokenizer.tokenize_with_offsets([e.question for e in examples])
  cls_id, sep_id, pad_id = tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id

  plans = []  # per example: (question pieces, context pieces, offsets, spans, best, answer)
  for index, example in enumerate(examples):
    question = question_pieces[index][0][:max_query_length]
    if truncated is not None and len(question_pieces[index][0]) > max_query_length:
      truncated.append(index)
    ids, offsets = context_pieces[context_ids[example.context]]
    window = max_seq_length - len(question) - 3
    if window <= doc_stride:
      raise DataError(
          f"question {example.id}: its {len(question)} pieces leave {max(window, 0)} context "
          f"pieces per window of {max_seq_length}, not more than doc_stride {doc_stride} "
          "(raise max_seq_length, or lower max_query_length or doc_stride)")
    answer = None
    if example.answers:
      text, start = example.answers[0]
      answer = answer_pieces(offsets, start, start + len(text))
    if training and answer is None:
      raise DataError(f"question {example.id}: the first answer covers no wordpiece of the "
                      "context")
    spans = window_spans(len(ids), window, doc_stride)
    plans.append((question, ids, offsets, spans, max_context_window(spans, len(ids)), answer))

  n, s = sum(len(plan[3]) for plan in plans), max_seq_length
  out = {k: np.zeros((n, s), np.int32) for k in ("attention_mask", "token_type_ids",
                                                   "max_context")}
  out["input_ids"] = np.full((n, s), pad_id, np.int32)
  out["offsets"] = np.full((n, s, 2), -1, np.int32)
  for k in ("start_positions", "end_positions", "example_index"):
    out[k] = np.zeros(n, np.int32)
  row = 0
  for index, (question, ids, offsets, spans, best, answer) in enumerate(plans):
    first = len(question) + 2  # row position of the window's first context piece
    for w, (start, length) in enumerate(spans):
      last = first + length  # the closing [SEP]
      out["input_ids"][row, :last + 1] = np.concatenate(
          [[cls_id], question, [sep_id], ids[start:start + length], [sep_id]])
      out["attention_mask"][row, :last + 1] = 1
      out["token_type_ids"][row, first:last + 1] = 1
      out["offsets"][row, first:last] = offsets[start:start + length]
      out["max_context"][row, first:last] = best[start:start + length] == w
      if answer is not None and start <= answer[0] and answer[1] < start + length:
        out["start_positions"][row] = answer[0] - start + first
        out["end_positions"][row] = answer[1] - start + first
      out["example_index"][row] = index
      row += 1
  return {k: out[k] for k in FEATURE_KEYS}
