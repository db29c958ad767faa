"""NER rows on the host: words <-> wordpiece windows.

`encode` turns word-level sentences (`conll.Sentence`) into fixed-shape int32 features, one
row per window of `max_seq_length` positions: `[CLS] pieces [SEP] pad`.

- Labels sit on the first wordpiece of each word (`label_mask`); the other pieces, [CLS],
  [SEP] and padding are ignored. With `label_all_pieces`, every piece counts: the later pieces
  of a `B-X` or `I-X` word are labelled `I-X` (they continue the entity), those of an `O` word
  `O`.
- A sentence longer than `max_seq_length - 2` pieces is split into overlapping windows that
  start and end at word boundaries, so no word is dropped. Each window starts at most
  `window_step` pieces after the previous one (default: half a window; the STEP, where QA's
  `doc_stride` is the overlap). A single word longer than a whole window keeps only its first
  pieces (its label is on the first). In training every window's
  words count; for prediction each word is read from ONE window (`predict_mask`): the one
  where it has the most context, google-research/bert's `_check_is_max_context` rule, score
  `min(pieces before the word, pieces after it) + 0.01 * window length`, ties to the earlier
  window (`bert_jax.tasks.windows`, the planner QA shares).

`merge` maps per-position predictions back to one label id and score per word;
`words_with_spans` splits raw text into words as BERT pre-splits (the tagging CLI's input).

numpy and `tokenizers` only (no jax).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np

from bert_jax.errors import ConfigError, DataError
from bert_jax.tasks import windows as shared_windows
from bert_jax.tasks.token_classification.conll import OUTSIDE, Sentence, split_tag

FEATURE_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels", "label_mask",
                "word_ids", "predict_mask", "sentence_index")


def encode(sentences: Sequence[Sentence], tokenizer, label_to_id: Mapping[str, int] | None,
           *, max_seq_length: int = 128, window_step: int | None = None,
           label_all_pieces: bool = False) -> tuple[dict[str, np.ndarray], dict]:
  """Sentences -> (features, stats); see the module docstring.

  features (N windows, S = max_seq_length), all int32:
    input_ids, attention_mask, token_type_ids [N, S]: `[CLS] pieces [SEP]` then padding.
    labels [N, S]: label ids where `label_mask` is 1, else 0.
    label_mask [N, S]: 1 where the loss counts (first piece of each word, or every piece with
      `label_all_pieces`; never [CLS]/[SEP]/padding; all 0 for unlabelled sentences).
    word_ids [N, S]: the word index within its sentence, -1 at [CLS]/[SEP]/padding.
    predict_mask [N, S]: 1 at the first piece of each word in the one window that predicts it.
    sentence_index [N]: the sentence each window comes from.
  stats: num_sentences, num_windows, num_windowed (sentences split into several windows),
    num_pieces (wordpieces, no specials), num_cut_words (words longer than a window),
    pad_fraction (padding positions / N * S).

  `label_to_id`: {tag: id}, e.g. from `conll.label_list`; None for unlabelled text (also any
  sentence with `tags == ()`). `window_step`: the most pieces between window starts (1 to S - 2;
  default (S - 2) // 2).
  """
  budget = max_seq_length - 2
  if budget < 1:
    raise ConfigError(f"max_seq_length must be at least 3 ([CLS] word [SEP]), got "
                      f"{max_seq_length}")
  window_step = budget // 2 if window_step is None else window_step
  if not 1 <= window_step <= budget:
    raise ConfigError(f"window_step must be in [1, max_seq_length - 2 = {budget}], got "
                      f"{window_step}")
  if label_to_id is not None:
    continuation = {}  # tag -> the label of a word's later pieces
    for tag in label_to_id:
      prefix, kind = split_tag(tag)
      continuation[tag] = tag if prefix == OUTSIDE else "I-" + kind
    missing = sorted({c for c in continuation.values() if c not in label_to_id})
    if label_all_pieces and missing:
      raise ConfigError(f"label_all_pieces needs {', '.join(missing)} among the labels "
                        f"{list(label_to_id)}")

  pieces = tokenizer.encode_words([s.words for s in sentences])
  per_sentence = []  # (ids, word_ids, first, windows, label of each piece or None, predictor)
  num_cut_words = 0
  for i, (sentence, (ids, wids)) in enumerate(zip(sentences, pieces, strict=True)):
    first = np.ones(len(ids), bool)  # [P]: the first piece of its word
    first[1:] = wids[1:] != wids[:-1]
    word_start = np.flatnonzero(first)  # [W]
    word_end = np.append(word_start[1:], len(ids))  # [W]
    num_cut_words += int(np.sum(word_end - word_start > budget))
    windows = shared_windows.plan(word_start, word_end, budget, window_step)
    predictor = shared_windows.max_context(windows, word_start, word_end)  # [W]
    piece_labels = None
    if label_to_id is not None and sentence.tags:
      try:
        word_labels = np.array([label_to_id[t] for t in sentence.tags], np.int32)  # [W]
        later = (np.array([label_to_id[continuation[t]] for t in sentence.tags], np.int32)
                 if label_all_pieces else word_labels)  # unused without label_all_pieces
      except KeyError as e:
        raise DataError(f"sentence {i} (line {sentence.line}): tag {e.args[0]!r} is not one "
                        f"of the labels {list(label_to_id)}") from None
      piece_labels = np.where(first, word_labels[wids], later[wids])  # [P]
    per_sentence.append((ids, wids, first, windows, piece_labels, predictor))

  num_windows = sum(len(p[3]) for p in per_sentence)
  shape = (num_windows, max_seq_length)
  f = {"input_ids": np.full(shape, tokenizer.pad_id, np.int32),
       "attention_mask": np.zeros(shape, np.int32),
       "token_type_ids": np.zeros(shape, np.int32),
       "labels": np.zeros(shape, np.int32),
       "label_mask": np.zeros(shape, np.int32),
       "word_ids": np.full(shape, -1, np.int32),
       "predict_mask": np.zeros(shape, np.int32),
       "sentence_index": np.zeros(num_windows, np.int32)}
  row = 0
  for i, (ids, wids, first, windows, piece_labels, predictor) in enumerate(per_sentence):
    for k, (lo, hi) in enumerate(windows):
      n = hi - lo
      body = slice(1, 1 + n)  # the pieces, after [CLS]
      f["input_ids"][row, 0] = tokenizer.cls_id
      f["input_ids"][row, body] = ids[lo:hi]
      f["input_ids"][row, 1 + n] = tokenizer.sep_id
      f["attention_mask"][row, :n + 2] = 1
      f["word_ids"][row, body] = wids[lo:hi]
      if piece_labels is not None:
        counts = np.ones(n, bool) if label_all_pieces else first[lo:hi]
        f["label_mask"][row, body] = counts
        f["labels"][row, body] = np.where(counts, piece_labels[lo:hi], 0)
      f["predict_mask"][row, body] = first[lo:hi] & (predictor[wids[lo:hi]] == k)
      f["sentence_index"][row] = i
      row += 1

  num_pieces = sum(len(p[0]) for p in per_sentence)
  stats = {"num_sentences": len(per_sentence), "num_windows": num_windows,
           "num_windowed": sum(len(p[3]) > 1 for p in per_sentence),
           "num_pieces": num_pieces, "num_cut_words": num_cut_words,
           "pad_fraction": float(1.0 - f["attention_mask"].mean()) if num_windows else 0.0}
  return f, stats


def merge(features: Mapping[str, np.ndarray], pred_ids, scores, num_sentences: int
          ) -> tuple[list[list[int]], list[list[float]]]:
  """Per-position predictions [N, S] (label ids and their scores, e.g. probabilities) -> per
  sentence, the label id and score of each word, read where `predict_mask` is 1. A word
  predicted twice, or a gap in a sentence's words, is an error (features and predictions
  must be the rows of one `encode`)."""
  predict_mask = np.asarray(features["predict_mask"]).astype(bool)
  pred_ids, scores = np.asarray(pred_ids), np.asarray(scores)
  if pred_ids.shape != predict_mask.shape or scores.shape != predict_mask.shape:
    raise ValueError(f"pred_ids {pred_ids.shape} and scores {scores.shape} must have the "
                     f"features' shape {predict_mask.shape} (drop padded rows first)")
  rows, cols = np.nonzero(predict_mask)  # [M] each
  sentence = np.asarray(features["sentence_index"])[rows]
  word = np.asarray(features["word_ids"])[rows, cols]
  order = np.lexsort((word, sentence))
  sentence, word = sentence[order], word[order]
  pred, score = pred_ids[rows, cols][order], scores[rows, cols][order]
  if sentence.size and (sentence[-1] >= num_sentences or sentence[0] < 0):
    raise ValueError(f"features hold sentence {int(sentence[-1])} but num_sentences is "
                     f"{num_sentences}")
  # Every word has pieces in some window, so the rows' word_ids give each sentence's length.
  num_words = np.zeros(num_sentences, np.int64)  # [num_sentences]
  np.maximum.at(num_words, np.asarray(features["sentence_index"]),
                np.asarray(features["word_ids"]).max(axis=1, initial=-1) + 1)
  counts = np.bincount(sentence, minlength=num_sentences)  # [num_sentences]
  offsets = np.cumsum(counts) - counts
  expected = np.arange(len(word)) - np.repeat(offsets, counts)  # 0, 1, ... in each sentence
  bad = np.flatnonzero(word != expected)
  short = np.flatnonzero(counts < num_words)
  if bad.size or short.size:
    if bad.size:
      s, got, want = int(sentence[bad[0]]), int(word[bad[0]]), int(expected[bad[0]])
      w, how = (got, "twice") if got < want else (want, "never")
    else:
      s, w, how = int(short[0]), int(counts[short[0]]), "never"
    raise ValueError(f"sentence {s}: word {w} is predicted {how} (features and predictions "
                     "do not come from one encode)")
  splits = np.cumsum(counts)[:-1]
  return ([p.tolist() for p in np.split(pred, splits)],
          [s.astype(float).tolist() for s in np.split(score, splits)])


@functools.cache
def _pre_tokenizer():
  from tokenizers import pre_tokenizers
  return pre_tokenizers.BertPreTokenizer()


def words_with_spans(text: str) -> tuple[list[str], list[tuple[int, int]]]:
  """Raw text -> words and their (start, end) character offsets, split as BERT pre-splits
  (whitespace, then every punctuation character on its own), close to CoNLL tokens; words keep
  their case and accents (the tokenizer normalizes later)."""
  pairs = _pre_tokenizer().pre_tokenize_str(text)
  return [w for w, _ in pairs], [tuple(span) for _, span in pairs]
