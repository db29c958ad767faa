"""Gathers the Rotten Tomatoes runs of scripts/reproduce_results.sh into one markdown table.

    .venv/bin/python scripts/aggregate_results.py --results_dir workdirs/results \
        --out docs/RESULTS_table.md

Reads every run's `eval_results.json` (test accuracy), and `report.json` (fine-tuning, written
by bert_jax.report) or `error_analysis.json` (the bag-of-words baseline) for accuracy by
sentence length and cost. Mean +- sample standard deviation (ddof=1) over seeds. A model
with no finished run is listed as "(not yet run)". The pretraining run, when present, gets its
own line (final held-out MLM loss and accuracy); runs fine-tuned from its earlier
checkpoints (`rt_trend_<step>`) a table of accuracy against pretraining minutes.
"""

from __future__ import annotations

import argparse
import glob
import json
import os

import numpy as np

# (row label, run folders under --results_dir, glob).
ROWS = (
    ("(a) all-MiniLM-L6-v2 weights", "rt_minilm_s*"),
    ("(b) ours: MLM-pretrained on IMDB", "rt_ours_s*"),
    ("(c) random init, same architecture as (b)", "rt_random_s*"),
    ("(d) tf-idf (1-2 gram) + logistic regression", "rt_bow/seed_*"),
)
BUCKETS = ("<=10", "11-20", "21-30", ">30")


def _load(path: str):
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def read_runs(results_dir: str, pattern: str) -> list[dict]:
  """Finished runs matching `pattern`: {"dir", "accuracy", "analysis", "report"}."""
  runs = []
  for d in sorted(glob.glob(os.path.join(results_dir, pattern))):
    result = _load(os.path.join(d, "eval_results.json"))
    if result is None or "accuracy" not in result:
      continue
    rep = _load(os.path.join(d, "report.json"))
    analysis = (rep or {}).get("analysis") or _load(os.path.join(d, "error_analysis.json"))
    runs.append({"dir": d, "accuracy": float(result["accuracy"]), "analysis": analysis,
                 "report": rep})
  return runs


def mean_std(values) -> str:
  values = np.asarray([v for v in values if v is not None], np.float64)
  if values.size == 0:
    return "-"
  std = values.std(ddof=1) if values.size > 1 else 0.0
  return f"{100 * values.mean():.1f} ± {100 * std:.1f}"


def pretraining_line(results_dir: str) -> list[str]:
  result = _load(os.path.join(results_dir, "pretrain", "eval_results.json"))
  if result is None:
    return ["Pretraining (`pretrain/`): (not yet run)", ""]
  return [f"Pretraining (`pretrain/`): {result.get('step')} steps; final held-out MLM loss "
          f"{result['mlm_loss']:.3f}, MLM accuracy {100 * result['mlm_accuracy']:.1f}% "
          "(curve: figures/mlm_curve.png).", ""]


def pretraining_minutes(results_dir: str) -> dict[int, float]:
  """{step: training minutes up to it} of `pretrain/` (each logged window's steps over its
  steps/s: evaluation and checkpointing excluded)."""
  from recipe_study import train_minutes  # a sibling script (scripts/ is sys.path[0])
  return train_minutes(os.path.join(results_dir, "pretrain"))


def trend_lines(results_dir: str) -> list[str]:
  """Rotten Tomatoes accuracy fine-tuned from earlier pretraining checkpoints (`rt_trend_<step>`
  runs, seed 0) and from the final one (`rt_ours_s0`): accuracy against pretraining minutes."""
  runs = []
  for d in glob.glob(os.path.join(results_dir, "rt_trend_*")):
    result = _load(os.path.join(d, "eval_results.json"))
    if result is not None:
      runs.append((int(d.rsplit("_", 1)[1]), float(result["accuracy"])))
  final = _load(os.path.join(results_dir, "rt_ours_s0", "eval_results.json"))
  pre = _load(os.path.join(results_dir, "pretrain", "eval_results.json"))
  if final is not None and pre is not None:
    runs.append((int(pre["step"]), float(final["accuracy"])))
  if not runs:
    return []
  minutes = pretraining_minutes(results_dir)
  lines = ["", "Accuracy against pretraining time (fine-tuned from the checkpoint at that step, "
           "seed 0):", "", "| pretraining step | training minutes | test accuracy |",
           "|---|---|---|"]
  for step, acc in sorted(runs):
    m = minutes.get(step)
    lines.append(f"| {step} | {'-' if m is None else f'{m:.1f}'} | {100 * acc:.1f} |")
  return lines


def table(results_dir: str) -> str:
  rows = [(label, read_runs(results_dir, pattern)) for label, pattern in ROWS]
  lines = pretraining_line(results_dir)
  lines += ["Rotten Tomatoes test accuracy (1,066 sentences), % mean ± std over seeds:", "",
            "| model | parameters | seeds | test accuracy | per seed |", "|---|---|---|---|---|"]
  for label, runs in rows:
    if not runs:
      lines.append(f"| {label} | | 0 | (not yet run) | |")
      continue
    params = {r["report"]["num_params"] for r in runs if r["report"]}
    params_s = ", ".join(f"{p / 1e6:.1f} M" for p in sorted(params)) or "-"
    per_seed = ", ".join(f"{100 * r['accuracy']:.1f}" for r in runs)
    lines.append(f"| {label} | {params_s} | {len(runs)} | "
                 f"{mean_std([r['accuracy'] for r in runs])} | {per_seed} |")

  if any(r["analysis"] for _, runs in rows for r in runs):
    lines += ["", "Accuracy by sentence length (words), % mean ± std over seeds:", "",
              "| model | " + " | ".join(BUCKETS) + " |", "|---|" + "---|" * len(BUCKETS)]
  for label, runs in rows:
    with_analysis = [r["analysis"] for r in runs if r["analysis"]]
    if not with_analysis:
      continue
    cells = []
    for bucket in BUCKETS:
      accs = [b["accuracy"] for a in with_analysis for b in a["by_length"] if b["bucket"] == bucket]
      counts = {b["count"] for a in with_analysis for b in a["by_length"] if b["bucket"] == bucket}
      cells.append(f"{mean_std(accs)} (n={'/'.join(str(c) for c in sorted(counts))})")
    lines.append(f"| {label} | " + " | ".join(cells) + " |")

  if any(r["report"] for _, runs in rows for r in runs):
    lines += ["", "Cost per fine-tuning run (mean over seeds):", "",
              "| model | wall time | training tokens/s | device |", "|---|---|---|---|"]
  for label, runs in rows:
    reps = [r["report"] for r in runs if r["report"]]
    if not reps:
      continue
    wall = np.mean([r["wall_time_s"] for r in reps])
    tps = [r["tokens_per_sec"] for r in reps if r.get("tokens_per_sec")]
    tps_s = f"{np.mean(tps):,.0f}" if tps else "-"
    devices = ", ".join(sorted({r.get("device") or "-" for r in reps}))
    lines.append(f"| {label} | {wall / 60:.1f} min | {tps_s} | {devices} |")
  lines += trend_lines(results_dir)
  return "\n".join(lines) + "\n"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--results_dir", default="workdirs/results")
  parser.add_argument("--out", default="docs/RESULTS_table.md")
  args = parser.parse_args(argv)
  text = table(args.results_dir)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    f.write(text)
  print(text)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
