"""Published GLUE dev scores the suite's report shows beside ours: "published, not run here".

Every number was read from the source named with it (dev sets, x 100). A number the source
does not give is "-", never estimated. The averages in this column are computed here, from the
published numbers of the tasks in the table, the way the suite computes its own (the sources'
own averages cover other task sets: Cramming's 78.6 is a mean of 9 numbers that include MNLI
and QQP and leave out WNLI).
"""

from __future__ import annotations

import statistics

_HF = ("huggingface/transformers examples/pytorch/text-classification/README.md (commit "
       "05ce25b, 'GLUE tasks': bert-base-cased, dev set, 3 epochs; 5 for MRPC and WNLI)")
_CRAMMED = ("JonasGeiping/cramming model_card.md (commit f905425, 'Evaluation results': the "
            "24-hour, one-A6000 model of the paper's first version, median of 5 runs on the "
            "GLUE dev sets, 5 epochs, one setting for all tasks; no WNLI). MRPC: the card does "
            "not say F1 or accuracy (shown under F1, marked *); STS-B is Pearson (the repo's "
            "eval config targets it)")

# model -> (title, source, {(task, metric): dev score x 100})
PUBLISHED: dict[str, tuple[str, str, dict[tuple[str, str], float]]] = {
    "bert_base_cased": ("BERT-base (cased)", _HF, {
        ("cola", "matthews_corrcoef"): 56.53, ("sst2", "accuracy"): 92.32,
        ("mrpc", "f1"): 88.85, ("mrpc", "accuracy"): 84.07,
        ("stsb", "pearson"): 88.64, ("stsb", "spearman"): 88.48,
        ("qnli", "accuracy"): 90.66, ("rte", "accuracy"): 65.70, ("wnli", "accuracy"): 56.34}),
    "crammed_bert": ("crammed BERT", _CRAMMED, {
        ("cola", "matthews_corrcoef"): 44.5, ("sst2", "accuracy"): 92.2,
        ("mrpc", "f1"): 87.5, ("stsb", "pearson"): 84.6, ("qnli", "accuracy"): 89.5,
        ("rte", "accuracy"): 53.8}),
}
_UNSURE = {("crammed_bert", "mrpc", "f1")}  # the source does not name the metric

HEADER = "published, not run here: " + " / ".join(t for t, _, _ in PUBLISHED.values())


def cell(task: str, metric: str) -> str:
  """The published scores of every model for one task metric, "a / b"."""
  return " / ".join(_number(scores.get((task, metric)))
                    + ("*" if (key, task, metric) in _UNSURE else "")
                    for key, (_, _, scores) in PUBLISHED.items())


def average(scores: dict[tuple[str, str], float], official: dict[str, tuple[str, ...]],
            tasks: list[str]) -> float | None:
  """The mean over `tasks` of each task's mean official metric; None if one is missing."""
  try:
    return statistics.mean(statistics.mean(scores[(t, m)] for m in official[t]) for t in tasks)
  except (KeyError, statistics.StatisticsError):
    return None


def average_cell(official: dict[str, tuple[str, ...]], tasks: list[str]) -> str:
  return " / ".join(_number(average(scores, official, tasks)) for _, _, scores in
                    PUBLISHED.values())


def source_lines() -> list[str]:
  """Where each number of the published column comes from."""
  return ["Published column (not run here; a model's average only where it has every task "
          "of the row):"] + [f"- {title}: {source}" for title, source, _ in PUBLISHED.values()]


def _number(x: float | None) -> str:
  return "-" if x is None else f"{x:.1f}"
