"""Word-level NER scores (seqeval, entity-level micro P/R/F1 with CoNLL conventions), entity
spans for the tagging CLI, the error analysis of report.md and predictions.conll.

numpy and seqeval only (no jax).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from bert_jax import fileio
from bert_jax.tasks.token_classification.conll import OUTSIDE, Sentence, check_tag, split_tag


def metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
  """seqeval scores of IOB2 tags (its default mode: CoNLL/conlleval chunking). Returns
  entity-level micro `precision`, `recall`, `f1`, `word_accuracy` (seqeval's
  `accuracy_score`: the share of words whose tag is right; all in [0, 1]),
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
          "word_accuracy": float(sl.accuracy_score(gold, pred)) if any(gold) else 0.0,
          "num_gold": len(gold_entities), "num_pred": len(pred_entities),
          "num_correct": len(gold_entities & pred_entities), "per_type": per_type}


def write_conll(path: str, sentences: Sequence[Sentence], pred_tags: Sequence[Sequence[str]]
                ) -> None:
  """`word gold predicted` lines, a blank line after each sentence (conlleval's input),
  written atomically (`fileio.write_text_atomic`) with the umask's mode."""
  if len(sentences) != len(pred_tags):
    raise ValueError(f"{len(sentences)} sentences but {len(pred_tags)} predictions")
  lines = []
  for i, (s, pred) in enumerate(zip(sentences, pred_tags)):
    if len(s.tags) != len(s.words) or len(pred) != len(s.words):
      raise ValueError(f"sentence {i}: {len(s.words)} words, {len(s.tags)} gold tags, "
                       f"{len(pred)} predicted")
    lines += [f"{w} {g} {p}\n" for w, g, p in zip(s.words, s.tags, pred)] + ["\n"]
  fileio.write_text_atomic(os.fspath(path), "".join(lines))


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


def error_analysis(sentences: Sequence[Sentence], gold_tags: Sequence[Sequence[str]],
                   pred_tags: Sequence[Sequence[str]],
                   word_scores: Sequence[Sequence[float]], top_k: int = 10) -> dict:
  """A JSON-ready error report.

  - `precision`, `recall`, `f1`, `word_accuracy`, `per_type`: as `metrics`.
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
          **{k: report[k] for k in ("precision", "recall", "f1", "word_accuracy", "num_gold",
                                    "num_pred", "num_correct", "per_type")},
          "confusion": confusion, "confident_errors": wrong[:top_k]}
