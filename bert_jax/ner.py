"""Token classification (NER) on the host: words <-> wordpiece windows, metrics, reports.

`encode` turns word-level sentences (`bert_jax.datasets.conll.Sentence`) into fixed-shape
int32 features, one row per window of `max_seq_length` positions: `[CLS] pieces [SEP] pad`.

- Labels sit on the first wordpiece of each word (`label_mask`); the other pieces, [CLS],
  [SEP] and padding are ignored. With `label_all_pieces`, every piece counts: the later pieces
  of a `B-X` or `I-X` word are labelled `I-X` (they continue the entity), those of an `O` word
  `O`.
- A sentence longer than `max_seq_length - 2` pieces is split into overlapping windows that
  start and end at word boundaries, so no word is dropped. Each window starts at most `stride`
  pieces after the previous one (default: half a window). A single word longer than a whole
  window keeps only its first pieces (its label is on the first). In training every window's
  words count; for prediction each word is read from ONE window (`predict_mask`): the one
  where it has the most context, google-research/bert's `_check_is_max_context` rule, score
  `min(pieces before the word, pieces after it) + 0.01 * window length`, ties to the earlier
  window.

`merge` maps per-position predictions back to one label id and score per word; `metrics`
scores word-level tags with seqeval (entity-level micro P/R/F1, CoNLL conventions); the rest
serves reports and the tagging CLI (`entities`, `words_with_spans`, `write_conll`,
`error_analysis`).

numpy, `tokenizers` and seqeval only (no jax).
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Mapping, Sequence

import numpy as np

from bert_jax import fileio
from bert_jax.datasets.conll import OUTSIDE, Sentence, check_tag, split_tag

FEATURE_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels", "label_mask",
                "word_ids", "predict_mask", "sentence_index")


def _windows(word_start: np.ndarray, word_end: np.ndarray, budget: int, stride: int
             ) -> list[tuple[int, int]]:
  """Piece ranges [lo, hi) of the windows over one sentence: each starts at a word, holds
  whole words (only a word longer than `budget` is cut), and the next starts at the last word
  start within `stride` pieces, never past the first word left out, so every word is in one."""
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
    nxt = int(np.searchsorted(word_start, lo + stride, side="right")) - 1
    a = min(max(nxt, a + 1), b)


def encode(sentences: Sequence[Sentence], tokenizer, label_to_id: Mapping[str, int] | None,
           *, max_seq_length: int = 128, stride: int | None = None,
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
  sentence with `tags == ()`). `stride`: the most pieces between window starts (1 to S - 2;
  default (S - 2) // 2).
  """
  budget = max_seq_length - 2
  if budget < 1:
    raise ValueError(f"max_seq_length must be at least 3 ([CLS] word [SEP]), got "
                     f"{max_seq_length}")
  stride = budget // 2 if stride is None else stride
  if not 1 <= stride <= budget:
    raise ValueError(f"stride must be in [1, max_seq_length - 2 = {budget}], got {stride}")
  if label_to_id is not None:
    continuation = {}  # tag -> the label of a word's later pieces
    for tag in label_to_id:
      prefix, kind = split_tag(tag)
      continuation[tag] = tag if prefix == OUTSIDE else "I-" + kind
    missing = sorted({c for c in continuation.values() if c not in label_to_id})
    if label_all_pieces and missing:
      raise ValueError(f"label_all_pieces needs {', '.join(missing)} among the labels "
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
    windows = _windows(word_start, word_end, budget, stride)
    # [K, W] max-context score of each word in each window that holds its first piece.
    lo, hi = np.array(windows).reshape(-1, 2).T[:, :, None]
    score = (np.minimum(word_start - lo, hi - np.minimum(word_end, hi)) + 0.01 * (hi - lo))
    score = np.where((lo <= word_start) & (word_start < hi), score, -np.inf)
    predictor = np.argmax(score, axis=0) if len(word_start) else np.zeros(0, int)  # [W]
    piece_labels = None
    if label_to_id is not None and sentence.tags:
      try:
        word_labels = np.array([label_to_id[t] for t in sentence.tags], np.int32)  # [W]
        later = (np.array([label_to_id[continuation[t]] for t in sentence.tags], np.int32)
                 if label_all_pieces else word_labels)  # unused without label_all_pieces
      except KeyError as e:
        raise ValueError(f"sentence {i} (line {sentence.line}): tag {e.args[0]!r} is not one "
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


def metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
  """seqeval scores of IOB2 tags (its default mode: CoNLL/conlleval chunking). Returns
  entity-level micro `precision`, `recall`, `f1`, token `accuracy` (all in [0, 1]),
  `num_gold`, `num_pred`, `num_correct` entities and `per_type` {type: {precision, recall,
  f1, support}} (support: gold entities)."""
  from seqeval.metrics import sequence_labeling as sl

  if len(gold) != len(pred):
    raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
  for i, (g, p) in enumerate(zip(gold, pred)):
    if len(g) != len(p):
      raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
  gold, pred = [list(g) for g in gold], [list(p) for p in pred]
  gold_entities = {(i, *e) for i, tags in enumerate(gold) for e in sl.get_entities(tags)}
  pred_entities = {(i, *e) for i, tags in enumerate(pred) for e in sl.get_entities(tags)}
  types = sorted({e[1] for e in gold_entities | pred_entities})
  per_type = {}
  if types:  # seqeval's per-type arrays follow the sorted types seen in gold or pred
    p, r, f1, support = sl.precision_recall_fscore_support(gold, pred, average=None,
                                                           zero_division=0)
    per_type = {t: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f1[k]),
                    "support": int(support[k])} for k, t in enumerate(types)}
  micro = sl.precision_recall_fscore_support(gold, pred, average="micro", zero_division=0)
  return {"precision": float(micro[0]), "recall": float(micro[1]), "f1": float(micro[2]),
          "accuracy": float(sl.accuracy_score(gold, pred)) if any(gold) else 0.0,
          "num_gold": len(gold_entities), "num_pred": len(pred_entities),
          "num_correct": len(gold_entities & pred_entities), "per_type": per_type}


def write_conll(path: str, sentences: Sequence[Sentence], pred_tags: Sequence[Sequence[str]]
                ) -> None:
  """`word gold predicted` lines, a blank line after each sentence (conlleval's input),
  written atomically (a temporary file, then os.replace) with the umask's mode."""
  if len(sentences) != len(pred_tags):
    raise ValueError(f"{len(sentences)} sentences but {len(pred_tags)} predictions")
  lines = []
  for i, (s, pred) in enumerate(zip(sentences, pred_tags)):
    if len(s.tags) != len(s.words) or len(pred) != len(s.words):
      raise ValueError(f"sentence {i}: {len(s.words)} words, {len(s.tags)} gold tags, "
                       f"{len(pred)} predicted")
    lines += [f"{w} {g} {p}\n" for w, g, p in zip(s.words, s.tags, pred)] + ["\n"]
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".conll")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.writelines(lines)
    fileio.chmod_for_umask(tmp)  # mkstemp creates 0600
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def entities(tags: Sequence[str], spans: Sequence[tuple[int, int]] | None = None,
             scores: Sequence[float] | None = None) -> list[dict]:
  """IOB2 tags of one sentence -> entities {type, start_word, end_word (exclusive)}, plus
  `start`, `end` (character offsets, end exclusive) with the words' `spans` and `score` (the
  mean of its words' `scores`). Chunking as conlleval/seqeval: an entity starts at B-X, or at
  an I-X that does not continue an X entity."""
  out: list[dict] = []
  current = None
  for i, tag in enumerate(list(tags) + [OUTSIDE]):
    if i < len(tags):
      check_tag(tag, f"entities (word {i + 1})")
    prefix, kind = split_tag(tag)
    if current is not None and (prefix != "I" or kind != current["type"]):
      current["end_word"] = i
      out.append(current)
      current = None
    if prefix != OUTSIDE and current is None:
      current = {"type": kind, "start_word": i}
  for e in out:
    if spans is not None:
      e["start"], e["end"] = int(spans[e["start_word"]][0]), int(spans[e["end_word"] - 1][1])
    if scores is not None:
      e["score"] = float(np.mean(scores[e["start_word"]:e["end_word"]]))
  return out


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


def error_analysis(sentences: Sequence[Sentence], gold_tags: Sequence[Sequence[str]],
                   pred_tags: Sequence[Sequence[str]],
                   word_scores: Sequence[Sequence[float]], top_k: int = 10) -> dict:
  """A JSON-ready error report.

  - `precision`, `recall`, `f1`, `accuracy`, `per_type`: as `metrics`.
  - `confusion` {gold row: {predicted column: count}}: rows are the entity types and
    "spurious", columns the types and "missed". A gold entity counts in (its type, the type
    of a predicted entity with exactly its span), else in (its type, "missed"); a predicted
    entity whose span no gold entity has counts in ("spurious", its type). The diagonal holds
    the correct entities; ("spurious", "missed") is always 0.
  - `confident_errors`: the `top_k` highest-scoring predicted entities that are wrong (no gold
    entity with that span and type), each with its sentence text, words, predicted type and
    score, the gold type of that exact span (None if none) and the gold tags of its words.
  """
  report = metrics(gold_tags, pred_tags)
  if len(sentences) != len(gold_tags) or len(word_scores) != len(pred_tags):
    raise ValueError(f"{len(sentences)} sentences, {len(gold_tags)} gold, {len(pred_tags)} "
                     f"predicted, {len(word_scores)} score lists")
  types = sorted(set(report["per_type"]))
  confusion = {row: {col: 0 for col in types + ["missed"]} for row in types + ["spurious"]}
  wrong = []
  for i, (s, gold, pred, scores) in enumerate(zip(sentences, gold_tags, pred_tags,
                                                  word_scores)):
    gold_spans = {(e["start_word"], e["end_word"]): e["type"] for e in entities(gold)}
    pred_entities = entities(pred, scores=scores)
    pred_spans = {(e["start_word"], e["end_word"]): e["type"] for e in pred_entities}
    for span, kind in gold_spans.items():
      confusion[kind][pred_spans.get(span, "missed")] += 1
    for e in pred_entities:
      span = (e["start_word"], e["end_word"])
      if span not in gold_spans:
        confusion["spurious"][e["type"]] += 1
      if gold_spans.get(span) != e["type"]:
        wrong.append({"sentence_index": i, "line": s.line, "text": " ".join(s.words),
                      "words": " ".join(s.words[span[0]:span[1]]), "start_word": span[0],
                      "end_word": span[1], "predicted": e["type"], "score": e["score"],
                      "gold": gold_spans.get(span), "gold_tags": list(gold[span[0]:span[1]])})
  wrong.sort(key=lambda w: -w["score"])
  return {"num_sentences": len(sentences),
          **{k: report[k] for k in ("precision", "recall", "f1", "accuracy", "num_gold",
                                    "num_pred", "num_correct", "per_type")},
          "confusion": confusion, "confident_errors": wrong[:top_k]}
