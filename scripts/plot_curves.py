"""MLM learning curves of a pretraining workdir: mlm_curve.png and mlm_curve.csv.

    .venv/bin/python scripts/plot_curves.py workdirs/pretrain [--out_dir docs/figures]

Reads `metrics.jsonl` (rows written by bert_jax.metric_writer). Left panel: training and
held-out MLM loss against the step; right panel: training and held-out MLM accuracy. A resumed run
repeats steps; the last row of each (split, step) wins. The CSV has one row per logged
(split, step): split, step, mlm_loss, mlm_accuracy.
"""

from __future__ import annotations

import argparse
import csv
import json
import os


def read_metrics(path: str) -> dict[str, list[dict]]:
  """{"train": rows, "eval": rows}, each sorted by step, one row per step (the last written)."""
  rows: dict[str, dict[int, dict]] = {"train": {}, "eval": {}}
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        rows.setdefault(row.get("split", "train"), {})[int(row["step"])] = row
  return {split: [by_step[s] for s in sorted(by_step)] for split, by_step in rows.items()}


def _loss(row: dict) -> float | None:
  value = row.get("mlm_loss", row.get("loss"))
  return None if value is None else float(value)


def write_csv(metrics: dict[str, list[dict]], path: str):
  with open(path, "w", encoding="utf-8", newline="") as f:
    w = csv.writer(f)
    w.writerow(["split", "step", "mlm_loss", "mlm_accuracy"])
    for split in ("train", "eval"):
      for row in metrics.get(split, []):
        acc = row.get("mlm_accuracy")
        w.writerow([split, row["step"], _loss(row), "" if acc is None else acc])


def plot(metrics: dict[str, list[dict]], path: str, title: str):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  train, evals = metrics.get("train", []), metrics.get("eval", [])
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
  ax_loss.plot([r["step"] for r in train], [_loss(r) for r in train], lw=1, alpha=0.7,
               label="train MLM loss (per log window)")
  ax_loss.plot([r["step"] for r in evals], [_loss(r) for r in evals], "o-", ms=3,
               label="held-out MLM loss")
  ax_loss.set(xlabel="step", ylabel="cross-entropy (nats)", title="MLM loss")
  ax_loss.legend()
  ax_acc.plot([r["step"] for r in train], [100 * float(r.get("mlm_accuracy", 0)) for r in train],
              lw=1, alpha=0.7, label="train (per log window)")
  ax_acc.plot([r["step"] for r in evals], [100 * float(r.get("mlm_accuracy", 0)) for r in evals],
              "o-", ms=3, color="C1", label="held-out")
  ax_acc.set(xlabel="step", ylabel="accuracy (%)", title="MLM accuracy (masked tokens)")
  ax_acc.set_ylim(bottom=0)
  ax_acc.legend()
  for ax in (ax_loss, ax_acc):
    ax.grid(alpha=0.3)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("workdir")
  parser.add_argument("--out_dir", default="", help="default: the workdir")
  parser.add_argument("--title", default="")
  args = parser.parse_args(argv)
  metrics_file = os.path.join(args.workdir, "metrics.jsonl")
  if not os.path.exists(metrics_file):
    raise SystemExit(f"error: {metrics_file} not found")
  metrics = read_metrics(metrics_file)
  out_dir = args.out_dir or args.workdir
  os.makedirs(out_dir, exist_ok=True)
  png, csv_path = os.path.join(out_dir, "mlm_curve.png"), os.path.join(out_dir, "mlm_curve.csv")
  plot(metrics, png, args.title or f"MLM pretraining: {os.path.basename(args.workdir.rstrip('/'))}")
  write_csv(metrics, csv_path)
  print(f"wrote {png} and {csv_path}")
  print("held-out (split == eval):")
  for r in metrics.get("eval", []):
    print(f"  step {r['step']:>6}: MLM loss {_loss(r):.4f}, "
          f"MLM accuracy {100 * float(r.get('mlm_accuracy', 0)):.2f}%")


if __name__ == "__main__":
  main()
