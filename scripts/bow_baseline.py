"""Bag-of-words baseline for Rotten Tomatoes: tf-idf (1-2 grams) + logistic regression.

    .venv/bin/python scripts/bow_baseline.py --workdir workdirs/rt_bow [--seeds 0 1 2]

Same sentences and the same fixed 1,066-sentence test split as the `rotten_tomatoes` builder
(its `split_indices`). For each seed, a validation slice (--val_fraction of train, drawn with
that seed) picks C; the model is then refit on all of train with that C and scored once on
test. Writes `seed_{s}/eval_results.json`, `seed_{s}/error_analysis.json` (bert_jax.report)
and a summary `results.json`; prints mean +- std (sample std, ddof=1) test accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from bert_jax import report
from bert_jax.tasks.classification import analysis as clf_analysis

C_GRID = tuple(float(2 ** k) for k in range(-2, 9))  # 0.25 ... 256


def load_rotten_tomatoes() -> dict[str, tuple[list[str], np.ndarray]]:
  """{"train", "test"}: (texts, labels [n]) exactly as the rotten_tomatoes builder splits."""
  from bert_jax.datasets.movie_reviews_text import movie_review_rows
  from bert_jax.datasets.rotten_tomatoes import split_indices
  rows = list(movie_review_rows("rotten_tomatoes"))
  labels = np.array([int(label) for _, label in rows])
  return {split: ([rows[i][0] for i in idx], labels[idx])
          for split, idx in split_indices(labels).items()}


def vectorizer():
  from sklearn.feature_extraction.text import TfidfVectorizer
  return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)


def classifier(c: float):
  from sklearn.linear_model import LogisticRegression
  return LogisticRegression(C=c, max_iter=5000)


def run_seed(data, seed: int, val_fraction: float) -> dict:
  """Tunes C on a seed-drawn validation slice of train, refits on train, scores test."""
  train_texts, train_labels = data["train"]
  test_texts, test_labels = data["test"]
  order = np.random.default_rng(seed).permutation(len(train_texts))
  n_val = int(round(val_fraction * len(train_texts)))
  val, fit = order[:n_val], order[n_val:]
  # The vocabulary and idf come from the fitting part only, as they would in deployment.
  vec = vectorizer()
  x_fit = vec.fit_transform([train_texts[i] for i in fit])  # [n_fit, n_features] sparse
  x_val = vec.transform([train_texts[i] for i in val])
  val_acc = {c: float(classifier(c).fit(x_fit, train_labels[fit]).score(x_val, train_labels[val]))
             for c in C_GRID}
  best_c = max(C_GRID, key=lambda c: (val_acc[c], -c))  # ties: the stronger regularization
  vec = vectorizer()
  model = classifier(best_c).fit(vec.fit_transform(train_texts), train_labels)
  probs = model.predict_proba(vec.transform(test_texts))  # [n_test, 2]
  acc = float((probs.argmax(-1) == test_labels).mean())
  return {"seed": seed, "best_C": best_c, "val_accuracy": val_acc, "accuracy": acc,
          "num_examples": len(test_texts), "probs": probs}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="workdirs/rt_bow")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--val_fraction", type=float, default=0.1)
  args = parser.parse_args(argv)

  from bert_jax.datasets.rotten_tomatoes import LABEL_NAMES
  t0 = time.time()
  data = load_rotten_tomatoes()
  print(f"rotten_tomatoes: {len(data['train'][0])} train, {len(data['test'][0])} test")
  results = []
  for seed in args.seeds:
    r = run_seed(data, seed, args.val_fraction)
    probs = r.pop("probs")
    out = os.path.join(args.workdir, f"seed_{seed}")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "eval_results.json"), "w", encoding="utf-8") as f:
      json.dump({"accuracy": r["accuracy"], "num_examples": r["num_examples"],
                 "best_C": r["best_C"]}, f, indent=2)
    analysis = clf_analysis.error_analysis(data["test"][0], data["test"][1], probs, LABEL_NAMES)
    with open(os.path.join(out, "error_analysis.json"), "w", encoding="utf-8") as f:
      json.dump(analysis, f, indent=2)
    print(f"seed {seed}: C={r['best_C']:g} (val {r['val_accuracy'][r['best_C']]:.4f}), "
          f"test accuracy {r['accuracy']:.4f}")
    results.append(r)

  accs = np.array([r["accuracy"] for r in results])
  std = float(accs.std(ddof=1)) if len(accs) > 1 else 0.0
  summary = {"model": "tf-idf (1-2 gram, sublinear tf) + logistic regression",
             "val_fraction": args.val_fraction, "C_grid": list(C_GRID),
             "mean_accuracy": float(accs.mean()), "std_accuracy": std, "runs": results,
             "wall_time_s": time.time() - t0,
             "command": report.command_line()}
  with open(os.path.join(args.workdir, "results.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2)
  print(f"test accuracy over {len(accs)} seeds: {100 * accs.mean():.2f} +- {100 * std:.2f}% "
        f"({time.time() - t0:.0f} s); wrote {args.workdir}/results.json")


if __name__ == "__main__":
  main()
