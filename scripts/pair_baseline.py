"""Lexical-overlap baselines for question/sentence matching (the pairs of make_pairs.py).

    .venv/bin/python scripts/pair_baseline.py --train workdirs/squad_pairs/train/pairs.csv \
        --eval workdirs/squad_pairs/eval/pairs.csv [--out workdirs/squad_pairs/baseline.json]

Two scores of a (question, sentence) pair, each turned into a label by one threshold tuned
for accuracy on the train pairs (ties: the lower threshold), then scored once on eval:
  tfidf    cosine of tf-idf vectors (unigrams, sublinear tf, English stop words removed;
           vocabulary and idf fitted on the train questions and sentences);
  overlap  the fraction of the question's distinct content words (lowercased \\w+ tokens,
           stop words removed) that occur in the sentence.
Reports accuracy, precision, recall and F1 of label 1 (the sentence answers) on eval, and the
positive fraction (the accuracy of always answering the majority class).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re

import numpy as np

_WORD = re.compile(r"\w+")


def read_pairs(path: str) -> tuple[list[str], list[str], np.ndarray]:
  """(questions, sentences, labels [n]) of a pairs.csv."""
  with open(path, encoding="utf-8", newline="") as f:
    rows = list(csv.DictReader(f))
  return ([r["text"] for r in rows], [r["text_pair"] for r in rows],
          np.array([int(r["label"]) for r in rows]))


def tfidf_scores(fit_texts: list[str]):
  """A function (questions, sentences) -> cosine [n] of tf-idf fitted on `fit_texts`."""
  from sklearn.feature_extraction.text import TfidfVectorizer
  vec = TfidfVectorizer(sublinear_tf=True, stop_words="english").fit(fit_texts)

  def score(questions, sentences):
    q, s = vec.transform(questions), vec.transform(sentences)  # rows are l2-normalized
    return np.asarray(q.multiply(s).sum(axis=1)).ravel()
  return score


def overlap_scores(questions: list[str], sentences: list[str]) -> np.ndarray:
  """Fraction of each question's distinct content words found in its sentence."""
  from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
  out = np.zeros(len(questions))
  for i, (q, s) in enumerate(zip(questions, sentences)):
    words = {w for w in _WORD.findall(q.lower()) if w not in ENGLISH_STOP_WORDS}
    found = set(_WORD.findall(s.lower()))
    out[i] = len(words & found) / len(words) if words else 0.0
  return out


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
  """(threshold, train accuracy) of `score >= threshold -> 1` with the best accuracy."""
  candidates = np.unique(np.concatenate([scores, [np.inf]]))
  accs = [float(((scores >= t) == labels).mean()) for t in candidates]
  i = int(np.argmax(accs))  # the first maximum: the lowest threshold of the best accuracy
  return float(candidates[i]), accs[i]


def metrics(predicted: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  tp = int(np.sum((predicted == 1) & (labels == 1)))
  precision = tp / max(int(np.sum(predicted == 1)), 1)
  recall = tp / max(int(np.sum(labels == 1)), 1)
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"accuracy": float(np.mean(predicted == labels)), "precision": precision,
          "recall": recall, "f1": f1}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--train", required=True)
  parser.add_argument("--eval", required=True)
  parser.add_argument("--out", default="", help="results JSON (default: beside --eval)")
  args = parser.parse_args(argv)
  train_q, train_s, train_y = read_pairs(args.train)
  eval_q, eval_s, eval_y = read_pairs(args.eval)
  tfidf = tfidf_scores(sorted(set(train_q)) + train_s)
  scorers = {"tfidf": tfidf, "overlap": overlap_scores}
  results = {"train": args.train, "eval": args.eval, "num_train": len(train_y),
             "num_eval": len(eval_y), "eval_positive_fraction": float(eval_y.mean())}
  print(f"train {len(train_y)} pairs ({100 * train_y.mean():.1f}% positive), eval "
        f"{len(eval_y)} ({100 * eval_y.mean():.1f}% positive)\n")
  print("| baseline | threshold (train acc.) | eval accuracy | precision | recall | F1 |")
  print("|---|---|---|---|---|---|")
  for name, score in scorers.items():
    threshold, train_acc = best_threshold(score(train_q, train_s), train_y)
    m = metrics((score(eval_q, eval_s) >= threshold).astype(int), eval_y)
    results[name] = {"threshold": threshold, "train_accuracy": train_acc, **m}
    print(f"| {name} | {threshold:.3f} ({100 * train_acc:.1f}%) | {100 * m['accuracy']:.1f} | "
          f"{100 * m['precision']:.1f} | {100 * m['recall']:.1f} | {100 * m['f1']:.1f} |")
  out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.eval)), "baseline.json")
  with open(out, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2)
  print(f"\nwrote {out}")
  return results


if __name__ == "__main__":
  main()
