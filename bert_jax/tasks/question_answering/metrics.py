"""SQuAD v1.1 scores and the error analysis of report.md.

`normalize_answer`, `exact_match`, `f1` and `squad_metrics` follow the official SQuAD v1.1
`evaluate-v1.1.py` definitions (reported as fractions, not percentages). `error_analysis`
breaks the scores down by question type and answer length and lists the most confident
misses.
"""

from __future__ import annotations

import collections
import re
import string
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bert_jax.tasks.question_answering.prediction import prediction_text
from bert_jax.tasks.question_answering.reader import Example

QUESTION_TYPES = ("what", "who", "when", "where", "why", "which", "how many", "how much", "how",
                  "other")


# (name, min words, max words) of the first reference answer.
ANSWER_LENGTH_BUCKETS = (("1", 1, 1), ("2-3", 2, 3), ("4-6", 4, 6), (">6", 7, None))


def normalize_answer(text: str) -> str:
  """Lowercase, drop ASCII punctuation, drop the words a/an/the, collapse whitespace."""
  text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
  text = re.sub(r"\b(a|an|the)\b", " ", text)
  return " ".join(text.split())


_PUNCTUATION = frozenset(string.punctuation)


def exact_match(prediction: str, reference: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(reference))


def f1(prediction: str, reference: str) -> float:
  """Token F1 of the normalized texts (bag of words: repeated words count as often as shared)."""
  predicted, gold = normalize_answer(prediction).split(), normalize_answer(reference).split()
  shared = sum((collections.Counter(predicted) & collections.Counter(gold)).values())
  if shared == 0:
    return 0.0
  precision, recall = shared / len(predicted), shared / len(gold)
  return 2 * precision * recall / (precision + recall)


def _scores(example: Example, prediction: str) -> tuple[float, float]:
  """(EM, F1) of a prediction: the best over the example's reference answers."""
  references = [text for text, _ in example.answers]
  return (max(exact_match(prediction, r) for r in references),
          max(f1(prediction, r) for r in references))


def squad_metrics(examples: Sequence[Example], predictions: Mapping[str, Any]
                  ) -> dict[str, float]:
  """{"exact_match", "f1"} in [0, 1] averaged over all `examples`, and how many there are,
  "num_examples" (as classification's evaluation counts its examples).

  `predictions`: {id: text} (or {id: Prediction}). As the official script, a question without
  a prediction scores 0 (and a warning counts them).
  """
  em_sum = f1_sum = 0.0
  missing = 0
  for example in examples:
    if example.id not in predictions:
      missing += 1
      continue
    em, f = _scores(example, prediction_text(predictions[example.id]))
    em_sum, f1_sum = em_sum + em, f1_sum + f
  if missing:
    warnings.warn(f"{missing} of {len(examples)} questions have no prediction and score 0",
                  stacklevel=2)
  count = len(examples)
  return {"exact_match": em_sum / max(count, 1), "f1": f1_sum / max(count, 1),
          "num_examples": count}


def question_type(question: str) -> str:
  """The first wh-word of the question ("In what year ..." -> "what"); who/whom/whose are
  "who", "how many"/"how much" are told apart from other "how"; "other" without one."""
  words = re.findall(r"[a-z]+", question.lower())
  for i, word in enumerate(words):
    if word in ("who", "whom", "whose"):
      return "who"
    if word == "how":
      following = words[i + 1] if i + 1 < len(words) else ""
      return f"how {following}" if following in ("many", "much") else "how"
    if word in QUESTION_TYPES:
      return word
  return "other"


def answer_length_bucket(example: Example) -> str:
  """Bucket of the first reference answer's length in whitespace-separated words."""
  words = len(example.answers[0][0].split())
  for name, low, high in ANSWER_LENGTH_BUCKETS:
    if words >= low and (high is None or words <= high):
      return name
  return ANSWER_LENGTH_BUCKETS[0][0]


def error_analysis(examples: Sequence[Example], predictions: Mapping[str, Any],
                   scores: Mapping[str, float], top_k: int = 10) -> dict[str, Any]:
  """Where a QA model fails, as a JSON-ready dict.

  Args:
    examples: the evaluated questions.
    predictions: {id: text} (or {id: Prediction}); a missing one counts as "".
    scores: {id: the prediction's score} (start + end logit) to rank confident mistakes.
    top_k: how many confident mistakes to keep.

  Returns:
    {"count", "exact_match", "f1",
     "by_question_type": [{"type", "count", "exact_match", "f1"}] in QUESTION_TYPES order,
     "by_answer_length": [{"bucket", "count", "exact_match", "f1"}] (words of the first
       reference answer: 1, 2-3, 4-6, >6),
     "confidently_wrong": top_k [{"id", "question", "predicted", "answers", "score", "f1"}]
       with exact match 0, highest score first}.
    exact_match / f1 are None for an empty group.
  """
  by_type = {t: [] for t in QUESTION_TYPES}
  by_length = {name: [] for name, _, _ in ANSWER_LENGTH_BUCKETS}
  wrong, everything = [], []
  for example in examples:
    predicted = prediction_text(predictions.get(example.id, ""))
    em, f = _scores(example, predicted)
    everything.append((em, f))
    by_type[question_type(example.question)].append((em, f))
    by_length[answer_length_bucket(example)].append((em, f))
    if not em:
      wrong.append({"id": example.id, "question": example.question, "predicted": predicted,
                    "answers": [text for text, _ in example.answers],
                    "score": float(scores.get(example.id, float("-inf"))), "f1": f})
  wrong.sort(key=lambda w: -w["score"])

  def summary(pairs):
    if not pairs:
      return {"count": 0, "exact_match": None, "f1": None}
    em, f = np.mean(pairs, axis=0).tolist()
    return {"count": len(pairs), "exact_match": em, "f1": f}

  return {**summary(everything),
          "by_question_type": [{"type": t, **summary(p)} for t, p in by_type.items()],
          "by_answer_length": [{"bucket": b, **summary(p)} for b, p in by_length.items()],
          "confidently_wrong": wrong[:top_k]}
