"""Evaluation metrics of each problem type, numpy only, named and computed as scikit-learn /
scipy compute them (tests/test_problem_types.py checks them against both).

  single_label_classification  accuracy, f1 (two labels: binary, positive class = label id 1;
                               more: macro over the labels present in gold or predicted, as
                               sklearn's default `labels`), matthews_corrcoef (multi-class)
  regression                   pearson, spearman (average ranks for ties, as
                               scipy.stats.spearmanr), mse
  multi_label_classification   f1_micro, f1_macro (over every label, zero_division=0),
                               exact_match (every label right); predicted = sigmoid > 0.5

Undefined values are 0.0, never nan: an F1 with no positives at all (zero_division=0), a
Matthews coefficient of constant labels or predictions (as sklearn), and a correlation with
constant predictions or gold scores or fewer than two examples (where scipy gives nan). That
keeps eval_results.json valid JSON and the best-checkpoint comparison ordered; report.md's
failure check names constant predictions.
"""

from __future__ import annotations

import numpy as np

PROBLEM_TYPES = ("single_label_classification", "regression", "multi_label_classification")
BEST_METRIC = {"single_label_classification": "accuracy", "regression": "pearson",
               "multi_label_classification": "f1_micro"}
THRESHOLD = 0.5  # multi-label: a label is predicted when its sigmoid is above this


def confusion_matrix(labels, predicted, num_labels: int) -> np.ndarray:
  """[N] gold ids, [N] predicted ids -> [num_labels, num_labels] counts [gold, predicted]."""
  confusion = np.zeros((num_labels, num_labels), np.int64)
  np.add.at(confusion, (np.asarray(labels, np.int64), np.asarray(predicted, np.int64)), 1)
  return confusion


def _f1(tp, fp, fn) -> np.ndarray:
  """2 tp / (2 tp + fp + fn), 0 where the denominator is 0 (zero_division=0)."""
  tp, fp, fn = (np.asarray(x, np.float64) for x in (tp, fp, fn))
  denominator = 2 * tp + fp + fn
  return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1e-300), 0.0)


def matthews_corrcoef(confusion: np.ndarray) -> float:
  """Multi-class MCC of a [gold, predicted] confusion matrix (sklearn's formula)."""
  c = np.asarray(confusion, np.float64)
  t, p, correct, n = c.sum(1), c.sum(0), np.trace(c), c.sum()
  cov_tp = correct * n - t @ p
  cov_pp, cov_tt = n * n - p @ p, n * n - t @ t
  if cov_pp * cov_tt == 0:
    return 0.0
  return float(cov_tp / np.sqrt(cov_tt * cov_pp))


def pearson(x, y) -> float:
  """Pearson's r (float64); 0.0 when either side is constant or there are < 2 values."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if len(x) < 2:
    return 0.0
  dx, dy = x - x.mean(), y - y.mean()
  denominator = np.sqrt((dx @ dx) * (dy @ dy))
  if denominator == 0:
    return 0.0
  return float(np.clip((dx @ dy) / denominator, -1.0, 1.0))


def average_ranks(x) -> np.ndarray:
  """1-based ranks, ties given their mean rank (scipy.stats.rankdata(method="average"))."""
  x = np.asarray(x)
  order = np.argsort(x, kind="mergesort")
  xs = x[order]
  starts_group = np.r_[True, xs[1:] != xs[:-1]] if len(x) else np.zeros(0, bool)
  group = np.cumsum(starts_group) - 1  # [N] tie group of each sorted value
  starts = np.flatnonzero(starts_group)
  ends = np.r_[starts[1:], len(x)]
  ranks = np.empty(len(x), np.float64)
  ranks[order] = ((starts + ends - 1) / 2 + 1)[group]
  return ranks


def f1(confusion) -> float:
  """F1 of a [gold, predicted] confusion matrix: binary (positive class 1) for two labels,
  else macro over the labels present in gold or predicted (sklearn's default)."""
  c = np.asarray(confusion, np.float64)
  tp, fp, fn = np.diag(c), c.sum(0) - np.diag(c), c.sum(1) - np.diag(c)
  per_label = _f1(tp, fp, fn)
  if c.shape[0] == 2:
    return float(per_label[1])
  present = (c.sum(0) + c.sum(1)) > 0
  return float(per_label[present].mean()) if present.any() else 0.0


def f1_micro(tp, fp, fn) -> float:
  """Micro F1 of total (or per-label, summed) tp, fp, fn counts."""
  return float(_f1(np.sum(tp), np.sum(fp), np.sum(fn)))


def f1_macro(tp, fp, fn) -> float:
  """Macro F1 over every label of per-label [L] tp, fp, fn (zero_division=0)."""
  per_label = _f1(tp, fp, fn)
  return float(per_label.mean()) if per_label.size else 0.0


def pearson_from_sums(n, pred_sum, gold_sum, pred_sq_sum, gold_sq_sum, pred_gold_sum) -> float:
  """Pearson's r from the count and the sums of p, g, p², g², p·g (0.0 when undefined)."""
  n = float(n)
  if n < 2:
    return 0.0
  cov = pred_gold_sum - pred_sum * gold_sum / n
  var_p, var_g = pred_sq_sum - pred_sum ** 2 / n, gold_sq_sum - gold_sum ** 2 / n
  if var_p <= 0 or var_g <= 0:
    return 0.0
  return float(np.clip(cov / np.sqrt(var_p * var_g), -1.0, 1.0))


def spearman(x, y) -> float:
  """Spearman's rho: Pearson's r of the average ranks (scipy.stats.spearmanr's ties)."""
  return pearson(average_ranks(np.asarray(x).reshape(-1)), average_ranks(np.asarray(y).reshape(-1)))


def mse(x, y) -> float:
  x, y = np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
  return float(np.mean((x - y) ** 2)) if len(x) else 0.0
