"""Documents longer than the window: `data.long_inputs` of the classification task.

- "truncate" (the default): a text keeps its first `max_seq_length` pieces ([CLS] and [SEP]
  included; pairs: longest-first), as `Tokenizer.encode_batch` cuts it; this module is not used.
- "windows": a document of more than `max_seq_length - 2` pieces becomes several rows
  `[CLS] window [SEP]`, one per window of `bert_jax.tasks.windows.plan` (whole words; only a
  word longer than a window is cut). `data.window_step` is the STEP, the most pieces between
  the starts of consecutive windows, as NER's `window_step` (QA's `doc_stride` is instead the
  overlap); 0 (the default) is half a window. A document that fits is one row, identical to
  its "truncate" row.
- Sentence pairs: windows over the SECOND text only, `[CLS] first [SEP] window [SEP]`. The
  first text is kept whole when both fit; otherwise it keeps at most what the second leaves
  free, and at least half the room, `(max_seq_length - 3) // 2` pieces (a first text cut so
  is counted as truncated); the windows over the second text get the remaining room (and a
  step of at most that room).

Training: every window is one example with its document's label (a long document weighs in
the loss as its windows). Evaluation and prediction: the document's logits are the mean (or
the max, `data.window_aggregation`) of its windows' logits, per label (regression: the score),
then softmax / sigmoid; metrics, predictions.jsonl and `predict_examples` are per document.

numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bert_jax.errors import ConfigError
from bert_jax.tasks import windows as shared_windows

LONG_INPUTS = ("truncate", "windows")
AGGREGATIONS = ("mean", "max")
FEATURE_KEYS = ("input_ids", "attention_mask", "token_type_ids", "doc_index", "doc_windows")
SINGLE, REGRESSION, MULTI = ("single_label_classification", "regression",
                             "multi_label_classification")


def check(long_inputs: str, window_aggregation: str, window_step: int) -> None:
  """ConfigError naming a bad `data.long_inputs`, `data.window_aggregation` or
  `data.window_step` (the upper bound of the step is checked by `encode`)."""
  if long_inputs not in LONG_INPUTS:
    raise ConfigError(f"data.long_inputs={long_inputs!r} is not one of {', '.join(LONG_INPUTS)}")
  if window_aggregation not in AGGREGATIONS:
    raise ConfigError(f"data.window_aggregation={window_aggregation!r} is not one of "
                      f"{', '.join(AGGREGATIONS)}")
  if window_step < 0:
    raise ConfigError(f"data.window_step={window_step!r} must be >= 0 (0: half a window)")


def _words(ids: np.ndarray, tokenizer) -> tuple[np.ndarray, np.ndarray]:
  """Piece ids [P] -> (word_start, word_end) [W] each: a word starts at a piece without the
  continuation prefix (`Tokenizer.word_starts`)."""
  first = tokenizer.word_starts(ids).astype(bool) if len(ids) else np.zeros(0, bool)
  if len(ids):
    first[0] = True  # the planner's words start at piece 0
  word_start = np.flatnonzero(first)
  return word_start, np.append(word_start[1:], len(ids)).astype(np.int64)


def _document_windows(a: np.ndarray, b: np.ndarray | None, tokenizer, max_seq_length: int,
                      window_step: int) -> tuple[np.ndarray, list[tuple[int, int]], np.ndarray,
                                                 bool]:
  """(prefix ids, [lo, hi) windows over the body, body ids, cut) of one document: the
  prefix is [CLS] (pairs: [CLS] first [SEP]), the body the text (pairs: the second text)."""
  if b is None:
    prefix, body, cut_first = np.array([tokenizer.cls_id], np.int32), a, False
  else:
    room = max_seq_length - 3
    keep = len(a) if len(a) + len(b) <= room else min(len(a), max(room - len(b), room // 2))
    prefix = np.concatenate([[tokenizer.cls_id], a[:keep], [tokenizer.sep_id]]).astype(np.int32)
    body, cut_first = b, keep < len(a)
  budget = max_seq_length - len(prefix) - 1  # 0 only for a pair with an empty second text
  if not len(body):
    return prefix, [(0, 0)], body, cut_first
  step = min(window_step or max(budget // 2, 1), budget)
  word_start, word_end = _words(body, tokenizer)
  windows = shared_windows.plan(word_start, word_end, budget, step)
  cut_word = bool(np.any(word_end - word_start > budget))
  return prefix, windows, body, cut_first or cut_word


def encode(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
           max_seq_length: int, window_step: int = 0) -> tuple[dict[str, np.ndarray], dict]:
  """Documents (and their pairs) -> (features, stats), one row per window (module docstring).

  features (N windows, S = max_seq_length), int32: input_ids, attention_mask, token_type_ids
    [N, S] (segment 1 for a pair's second text and its [SEP]); doc_index [N] (the document
    of each window; a document's windows are consecutive); doc_windows [N] (how many windows
    that document has).
  stats: num_documents, num_windows, num_windowed (documents of several windows),
    num_truncated (documents that lost pieces: a pair's first text cut, or a word longer than
    a window), truncated (their indices).
  """
  room = max_seq_length - (2 if pairs is None else 3)
  if room < 1:
    raise ConfigError(f"data.max_seq_length={max_seq_length} leaves no room for a window")
  if window_step > max_seq_length - 2:
    raise ConfigError(f"data.window_step={window_step} must be at most max_seq_length - 2 = "
                      f"{max_seq_length - 2} (0: half a window)")
  first = tokenizer.tokenize_to_ids(list(texts))
  second = tokenizer.tokenize_to_ids(list(pairs)) if pairs is not None else [None] * len(first)
  docs = [_document_windows(a, b, tokenizer, max_seq_length, window_step)
          for a, b in zip(first, second, strict=True)]
  num_windows = sum(len(d[1]) for d in docs)
  shape = (num_windows, max_seq_length)
  f = {"input_ids": np.full(shape, tokenizer.pad_id, np.int32),
       "attention_mask": np.zeros(shape, np.int32), "token_type_ids": np.zeros(shape, np.int32),
       "doc_index": np.zeros(num_windows, np.int32), "doc_windows": np.zeros(num_windows, np.int32)}
  row = 0
  for i, (prefix, windows, body, _) in enumerate(docs):
    segment = 0 if pairs is None else 1
    for lo, hi in windows:
      ids = np.concatenate([prefix, body[lo:hi], [tokenizer.sep_id]])
      f["input_ids"][row, :len(ids)] = ids
      f["attention_mask"][row, :len(ids)] = 1
      f["token_type_ids"][row, len(prefix):len(ids)] = segment
      f["doc_index"][row], f["doc_windows"][row] = i, len(windows)
      row += 1
  truncated = [i for i, d in enumerate(docs) if d[3]]
  stats = {"num_documents": len(docs), "num_windows": num_windows,
           "num_windowed": sum(len(d[1]) > 1 for d in docs),
           "num_truncated": len(truncated), "truncated": truncated}
  return f, stats


def aggregate(values: np.ndarray, doc_index: np.ndarray, how: str = "mean"
              ) -> tuple[np.ndarray, np.ndarray]:
  """Per-window values [N, ...] (logits) -> (documents [D] sorted, per-document values
  [D, ...] float32): the mean or the max over each document's windows."""
  if how not in AGGREGATIONS:
    raise ConfigError(f"data.window_aggregation={how!r} is not one of {', '.join(AGGREGATIONS)}")
  values = np.asarray(values, np.float64)
  docs, inverse = np.unique(np.asarray(doc_index), return_inverse=True)
  shape = (len(docs),) + values.shape[1:]
  if how == "max":
    out = np.full(shape, -np.inf)
    np.maximum.at(out, inverse, values)
  else:
    out = np.zeros(shape)
    np.add.at(out, inverse, values)
    out /= np.bincount(inverse, minlength=len(docs)).reshape((-1,) + (1,) * (values.ndim - 1))
  return docs, out.astype(np.float32)


def activate(logits: np.ndarray, problem_type: str) -> np.ndarray:
  """Logits [D, L] -> what `predict_batch` returns: softmax (single label), the scores
  (regression), sigmoid (multi-label); float32."""
  logits = np.asarray(logits, np.float64)
  if problem_type == REGRESSION:
    return logits.astype(np.float32)
  if problem_type == MULTI:
    return (1 / (1 + np.exp(-logits))).astype(np.float32)
  shifted = np.exp(logits - logits.max(-1, keepdims=True))
  return (shifted / shifted.sum(-1, keepdims=True)).astype(np.float32)


def document_metrics(problem_type: str, logits: np.ndarray, labels: np.ndarray,
                     num_labels: int) -> dict[str, float]:
  """The eval metrics of aggregated document logits [D, L] and labels ([D] ids or scores,
  [D, L] multi-hot), named as `Classification.summarize` names the per-row ones."""
  from bert_jax.tasks.classification import metrics
  logits = np.asarray(logits, np.float64)
  out = {"num_examples": float(len(logits))}
  if problem_type == REGRESSION:
    scores, gold = logits[:, 0], np.asarray(labels, np.float64)
    out.update(loss=metrics.mse(scores, gold), mse=metrics.mse(scores, gold),
               pearson=metrics.pearson(scores, gold), spearman=metrics.spearman(scores, gold))
  elif problem_type == MULTI:
    gold, pred = np.asarray(labels) > 0.5, activate(logits, MULTI) > metrics.THRESHOLD
    bce = np.maximum(logits, 0) - logits * gold + np.log1p(np.exp(-np.abs(logits)))
    tp, fp, fn = ((pred & gold).sum(0), (pred & ~gold).sum(0), (~pred & gold).sum(0))
    out.update(loss=float(bce.mean(-1).mean()) if len(logits) else 0.0,
               f1_micro=metrics.f1_micro(tp, fp, fn), f1_macro=metrics.f1_macro(tp, fp, fn),
               exact_match=float((pred == gold).all(-1).mean()) if len(logits) else 0.0)
  else:
    gold = np.asarray(labels, np.int64)
    top = logits.max(-1, keepdims=True)
    log_z = np.log(np.exp(logits - top).sum(-1)) + top[:, 0]
    picked = np.take_along_axis(logits, gold[:, None], -1)[:, 0]
    confusion = metrics.confusion_matrix(gold, logits.argmax(-1), num_labels)
    out.update(loss=float(np.mean(log_z - picked)) if len(logits) else 0.0,
               accuracy=float(np.trace(confusion) / max(len(logits), 1)),
               f1=metrics.f1(confusion), matthews_corrcoef=metrics.matthews_corrcoef(confusion))
  return out

