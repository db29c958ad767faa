"""Where a classifier fails, for report.md: confusion matrix, per-label precision / recall,
accuracy by sentence length, the most confidently wrong examples (`error_analysis`), and those
as markdown lines (`failure_lines`). numpy only; a scikit-learn baseline can use it too.
Regression (`regression_analysis`: error by gold score) and multi-label models
(`multi_label_analysis`: per-label precision / recall / F1) have their own; `failure_lines`
renders any of the three.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from bert_jax import report

# (name, min words, max words). Words are runs of letters and digits, so raw text and the
# tokenizer's decoding of it ("gross-out" / "gross - out", "it's" / "it ' s") count alike.
WORD_COUNT_BUCKETS = (("<=10", 0, 10), ("11-20", 11, 20), ("21-30", 21, 30), (">30", 31, None))


def count_words(text: str) -> int:
  return len(re.findall(r"\w+", text))


def error_analysis(texts: Sequence[str], labels, probs, label_names: Sequence[str], *,
                   top_k: int = 10) -> dict[str, Any]:
  """Where a classifier fails, as a JSON-ready dict.

  Args:
    texts: the N evaluated texts (`count_words` picks the length bucket).
    labels: [N] int gold labels.
    probs: [N, num_labels] predicted probabilities.
    label_names: num_labels names.
    top_k: how many confidently wrong examples to keep.

  Returns:
    {"num_examples", "accuracy", "label_names",
     "confusion_matrix": [gold][predicted] counts,
     "per_label": [{"label", "count", "precision", "recall"}],
     "by_length": [{"bucket", "count", "accuracy"}] (accuracy None for an empty bucket),
     "confidently_wrong": top_k [{"text", "label", "predicted", "probability", "words"}],
       most confident first (probability = that of the wrong prediction)}.
  """
  labels = np.asarray(labels, np.int64).reshape(-1)
  probs = np.asarray(probs, np.float64)
  num_labels = len(label_names)
  if probs.ndim != 2 or probs.shape != (len(texts), num_labels) or labels.shape != (len(texts),):
    raise ValueError(f"expected {len(texts)} texts, labels [{len(texts)}] and probs "
                     f"[{len(texts)}, {num_labels}]; got labels {labels.shape}, probs "
                     f"{probs.shape}")
  if labels.size and (labels.min() < 0 or labels.max() >= num_labels):
    raise ValueError(f"labels must lie in [0, {num_labels}), got {labels.min()}..{labels.max()}")
  predicted = probs.argmax(-1) if len(texts) else np.zeros(0, np.int64)  # [N]
  correct = predicted == labels  # [N]

  confusion = np.zeros((num_labels, num_labels), np.int64)
  np.add.at(confusion, (labels, predicted), 1)
  per_label = []
  for c, name in enumerate(label_names):
    tp, n_pred, n_gold = confusion[c, c], confusion[:, c].sum(), confusion[c].sum()
    per_label.append({"label": name, "count": int(n_gold),
                      "precision": float(tp / n_pred) if n_pred else None,
                      "recall": float(tp / n_gold) if n_gold else None})

  words = np.array([count_words(t) for t in texts], np.int64)  # [N]
  by_length = []
  for name, lo, hi in WORD_COUNT_BUCKETS:
    in_bucket = (words >= lo) & (words <= (hi if hi is not None else np.iinfo(np.int64).max))
    n = int(in_bucket.sum())
    by_length.append({"bucket": name, "count": n,
                      "accuracy": float(correct[in_bucket].mean()) if n else None})

  wrong = np.flatnonzero(~correct)
  confidence = probs[wrong, predicted[wrong]]
  # Most confident first; ties by original index, so the order is deterministic.
  order = wrong[np.lexsort((wrong, -confidence))][:top_k]
  confidently_wrong = [{"text": texts[i], "label": label_names[labels[i]],
                        "predicted": label_names[predicted[i]],
                        "probability": float(probs[i, predicted[i]]), "words": int(words[i])}
                       for i in order]
  return {"num_examples": int(len(texts)),
          "accuracy": float(correct.mean()) if len(texts) else None,
          "label_names": list(label_names),
          "confusion_matrix": confusion.tolist(),
          "per_label": per_label,
          "by_length": by_length,
          "confidently_wrong": confidently_wrong}


def failure_lines(analysis: dict) -> list[str]:
  """The failure check of a classifier: how many inputs were truncated or windowed (when
  `analysis["long_inputs"]` says), confusion, per-label P/R, by length, worst errors
  (regression and multi-label analyses: their own tables)."""
  head = [long_inputs_line(analysis["long_inputs"]), ""] if "long_inputs" in analysis else []
  if analysis.get("problem_type") == "regression":
    return head + _regression_lines(analysis)
  if analysis.get("problem_type") == "multi_label_classification":
    return head + _multi_label_lines(analysis)
  names = analysis["label_names"]
  lines = head + ["Confusion matrix (rows: gold, columns: predicted):", "",
                  "| gold \\ predicted | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
  for name, row in zip(names, analysis["confusion_matrix"]):
    lines.append(f"| {name} | " + " | ".join(str(c) for c in row) + " |")
  lines += ["", "| label | count | precision | recall |", "|---|---|---|---|"]
  for p in analysis["per_label"]:
    lines.append(f"| {p['label']} | {p['count']} | {report.pct(p['precision'])} | "
                 f"{report.pct(p['recall'])} |")
  lines += ["", "Accuracy by sentence length (words: letter/digit runs of the evaluated text):", "",
            "| words | examples | accuracy |", "|---|---|---|"]
  for b in analysis["by_length"]:
    lines.append(f"| {b['bucket']} | {b['count']} | {report.pct(b['accuracy'])} |")
  lines += ["", f"The {len(analysis['confidently_wrong'])} most confidently wrong:", "",
            "| p(predicted) | gold | predicted | text |", "|---|---|---|---|"]
  for w in analysis["confidently_wrong"]:
    lines.append(f"| {w['probability']:.3f} | {w['label']} | {w['predicted']} | "
                 f"{report.md_escape(w['text'])} |")
  return lines


def regression_analysis(texts: Sequence[str], gold, predicted, *, bins: int = 5,
                        top_k: int = 10) -> dict[str, Any]:
  """Errors of a regression model: mean |error| overall and in `bins` equal-width bins of the
  gold score, and the `top_k` largest errors. gold, predicted: [N] floats."""
  from bert_jax.tasks.classification import metrics
  gold = np.asarray(gold, np.float64).reshape(-1)
  predicted = np.asarray(predicted, np.float64).reshape(-1)
  error = np.abs(predicted - gold)  # [N]
  by_gold = []
  if len(gold):
    edges = np.linspace(gold.min(), gold.max(), bins + 1)
    which = np.clip(np.searchsorted(edges, gold, side="right") - 1, 0, bins - 1)  # [N]
    for b in range(bins):
      inside = which == b
      n = int(inside.sum())
      by_gold.append({"range": [float(edges[b]), float(edges[b + 1])], "count": n,
                      "mean_abs_error": float(error[inside].mean()) if n else None,
                      "mean_predicted": float(predicted[inside].mean()) if n else None})
  order = np.lexsort((np.arange(len(error)), -error))[:top_k]
  return {"problem_type": "regression", "num_examples": int(len(gold)),
          "mean_abs_error": float(error.mean()) if len(gold) else None,
          "mse": metrics.mse(predicted, gold), "pearson": metrics.pearson(predicted, gold),
          "spearman": metrics.spearman(predicted, gold), "by_gold": by_gold,
          "largest_errors": [{"text": texts[i], "label": float(gold[i]),
                              "predicted": float(predicted[i])} for i in order]}


def _regression_lines(analysis: dict) -> list[str]:
  lines = [f"Mean |error| {_num(analysis['mean_abs_error'])}, MSE {_num(analysis['mse'])}, "
           f"Pearson {_num(analysis['pearson'])}, Spearman {_num(analysis['spearman'])} "
           f"over {analysis['num_examples']} examples.", "",
           "Error by gold score:", "", "| gold score | examples | mean abs error | "
           "mean predicted |", "|---|---|---|---|"]
  for b in analysis["by_gold"]:
    lo, hi = b["range"]
    lines.append(f"| {lo:.3g}-{hi:.3g} | {b['count']} | {_num(b['mean_abs_error'])} | "
                 f"{_num(b['mean_predicted'])} |")
  lines += ["", f"The {len(analysis['largest_errors'])} largest errors:", "",
            "| gold | predicted | text |", "|---|---|---|"]
  for w in analysis["largest_errors"]:
    lines.append(f"| {w['label']:.3f} | {w['predicted']:.3f} | {report.md_escape(w['text'])} |")
  return lines


def multi_label_analysis(texts: Sequence[str], gold, probs, label_names: Sequence[str]
                         ) -> dict[str, Any]:
  """Per-label precision / recall / F1 / support of a multi-label model at 0.5, micro and
  macro F1, exact match. gold: [N, L] multi-hot; probs: [N, L] sigmoid probabilities."""
  from bert_jax.tasks.classification import metrics
  gold = np.asarray(gold).reshape(len(texts), len(label_names))
  probs = np.asarray(probs).reshape(len(texts), len(label_names))
  predicted = probs > metrics.THRESHOLD  # [N, L]
  hit = gold > 0.5
  tp, fp, fn = ((hit & predicted).sum(0), (~hit & predicted).sum(0), (hit & ~predicted).sum(0))
  matches = int((hit == predicted).all(-1).sum())
  per_label = []
  for j, name in enumerate(label_names):
    p, r = tp[j] + fp[j], tp[j] + fn[j]
    per_label.append({"label": name, "support": int(r),
                      "precision": float(tp[j] / p) if p else None,
                      "recall": float(tp[j] / r) if r else None,
                      "f1": metrics.f1_macro(tp[j:j + 1], fp[j:j + 1], fn[j:j + 1])})
  return {"problem_type": "multi_label_classification", "num_examples": int(len(texts)),
          "label_names": list(label_names), "f1_micro": metrics.f1_micro(tp, fp, fn),
          "f1_macro": metrics.f1_macro(tp, fp, fn),
          "exact_match": matches / len(texts) if len(texts) else 0.0, "per_label": per_label}


def _multi_label_lines(analysis: dict) -> list[str]:
  lines = [f"Micro F1 {report.pct(analysis['f1_micro'])}, macro F1 "
           f"{report.pct(analysis['f1_macro'])}, exact match {report.pct(analysis['exact_match'])}"
           f" over {analysis['num_examples']} examples (threshold 0.5).", "",
           "| label | support | precision | recall | F1 |", "|---|---|---|---|---|"]
  for p in analysis["per_label"]:
    lines.append(f"| {p['label']} | {p['support']} | {report.pct(p['precision'])} | "
                 f"{report.pct(p['recall'])} | {report.pct(p['f1'])} |")
  return lines


def long_inputs_line(stats: dict) -> str:
  """The failure check's line on long inputs: how many documents were truncated or windowed."""
  n = stats.get("num_documents", 0)
  if stats.get("long_inputs") == "windows":
    return (f"Long inputs (data.long_inputs='windows', {stats.get('window_aggregation')} over "
            f"windows): {stats.get('num_windowed', 0)} of {n} documents longer than "
            f"max_seq_length={stats.get('max_seq_length')} split into windows "
            f"({stats.get('num_windows', 0)} windows in all); "
            f"{stats.get('num_truncated', 0)} truncated (a pair's first text, or a word longer "
            "than a window).")
  return (f"Long inputs (data.long_inputs='truncate'): {stats.get('num_truncated', 0)} of {n} "
          f"evaluated inputs longer than max_seq_length={stats.get('max_seq_length')} were "
          "truncated (data.long_inputs='windows' reads them whole); 0 windowed.")


def _num(x: float | None) -> str:
  return "-" if x is None else f"{x:.4f}"
