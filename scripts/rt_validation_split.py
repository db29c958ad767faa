"""Rotten Tomatoes train split cut into fit / validation CSVs, for choosing hyperparameters
without looking at the test split.

    .venv/bin/python scripts/rt_validation_split.py --out workdirs/rt_val [--seed 0]
    python -m bert_jax.main --config=experiments/finetune_csv.py:scratch --workdir=... \
        --config.data.train_file=workdirs/rt_val/train.csv \
        --config.data.eval_file=workdirs/rt_val/validation.csv \
        --config.data.label_names=negative,positive

The same cut as scripts/bow_baseline.py's choice of C: a permutation of the 7,464 training
sentences drawn with --seed, the first 10% (746) for validation, the other 6,718 to fit.
(A TFDS slice such as "train[90%:]" is no validation split here: the builder stores the
sentences grouped by label.) Columns: text, label (negative / positive).
"""

from __future__ import annotations

import argparse
import csv
import os

import numpy as np
from bow_baseline import load_rotten_tomatoes  # a sibling script (scripts/ is sys.path[0])

LABELS = ("negative", "positive")


def write_split(out: str, seed: int = 0, val_fraction: float = 0.1) -> dict[str, int]:
  texts, labels = load_rotten_tomatoes()["train"]
  order = np.random.default_rng(seed).permutation(len(texts))
  n_val = int(round(val_fraction * len(texts)))
  os.makedirs(out, exist_ok=True)
  counts = {}
  for name, idx in (("validation", order[:n_val]), ("train", order[n_val:])):
    with open(os.path.join(out, f"{name}.csv"), "w", encoding="utf-8", newline="") as f:
      w = csv.writer(f)
      w.writerow(["text", "label"])
      for i in idx:
        w.writerow([texts[i], LABELS[int(labels[i])]])
    counts[name] = len(idx)
  return counts


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  counts = write_split(args.out, args.seed)
  print(f"wrote {args.out}/train.csv ({counts['train']}) and validation.csv "
        f"({counts['validation']})")


if __name__ == "__main__":
  main()
