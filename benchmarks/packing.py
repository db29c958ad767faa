"""Padded vs packed fine-tuning, side by side in one process: real-token throughput, wall time
and the final eval metric at an equal number of training examples.

  python benchmarks/packing.py --task rt --seeds 0 1 2 --epochs 1
  python benchmarks/packing.py --task conll --seeds 0 1 2 --epochs 0.5 \
      --conll_dir ../shared/data/conll2003
  python benchmarks/packing.py --tiny            # a random tiny model, a few steps (tests)

Both modes run the real training loop (`train.train_and_evaluate`) on the experiment configs
(experiments/finetune_rotten_tomatoes.py, experiments/ner_conll2003.py; MiniLM weights). The
padded run takes `--batch` rows of one example each; the packed run (`data.packing=True`)
takes round(batch / examples per packed row) rows (a multiple of the device count), so both
see about `--batch` examples a step, the same learning rate and the same number of epochs (10%
warmup). Evaluation (unpacked, the same for both) runs once at the end. Reported per run:
steps, rows and examples per step, row fill (real tokens / row tokens), real (non-padding)
training tokens/s from metrics.jsonl (the compile step excluded), training and total wall
time, and the metric (RT accuracy, CoNLL F1).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

METRIC = {"rt": "accuracy", "conll": "f1"}


def base_config(task: str, conll_dir: str, tiny: bool):
  if task == "rt":
    from experiments import finetune_rotten_tomatoes as exp
    config = exp.get_config("scratch" if tiny else "minilm")
  else:
    from experiments import ner_conll2003 as exp
    config = exp.get_config("full")
    config.data.update(train_file=os.path.join(conll_dir, "train.txt"),
                       eval_file=os.path.join(conll_dir, "dev.txt"))
    if tiny:
      config.init_from = ""
  if tiny:
    config.model.update(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64)
  return config


def train_throughput(metrics_path: str) -> float:
  """Real training tokens/s over the run's log windows, the first (compile) window excluded."""
  tokens = seconds = 0.0
  previous = None
  with open(metrics_path) as f:
    for line in f:
      m = json.loads(line)
      if m.get("split") != "train" or "tokens_per_sec" not in m:
        continue
      if previous is not None and m["steps_per_sec"] > 0:
        elapsed = (m["step"] - previous) / m["steps_per_sec"]
        tokens += m["tokens_per_sec"] * elapsed
        seconds += elapsed
      previous = m["step"]
  return tokens / seconds if seconds else float("nan")


def run_one(config, workdir: str) -> dict:
  from bert_jax import train
  t = time.time()
  result = train.train_and_evaluate(config, workdir)
  wall = time.time() - t
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    lines = [json.loads(x) for x in f]
  train_lines = [m for m in lines if m.get("split") == "train"]
  first, last = train_lines[0]["time"], train_lines[-1]["time"]
  return {"wall_s": wall, "train_s": last - first,
          "real_tokens_per_s": train_throughput(os.path.join(workdir, "metrics.jsonl")),
          "result": {k: v for k, v in result.items() if isinstance(v, (int, float))}}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--task", choices=sorted(METRIC), default="rt")
  p.add_argument("--seeds", type=int, nargs="+", default=[0])
  p.add_argument("--epochs", type=float, default=1.0)
  p.add_argument("--batch", type=int, default=32, help="examples a step (padded rows)")
  p.add_argument("--conll_dir", default=os.path.join(ROOT, "..", "shared", "data", "conll2003"))
  p.add_argument("--tiny", action="store_true", help="random tiny model, 6 steps (tests)")
  p.add_argument("--data_dir", default="", help="TFDS data directory (RT is prepared there)")
  p.add_argument("--json", default="", help="also write the results here")
  p.add_argument("--workdir", default="", help="keep the runs' workdirs here")
  args = p.parse_args(argv)

  import jax
  config = base_config(args.task, args.conll_dir, args.tiny)
  if args.data_dir:
    config.data.data_dir = args.data_dir
  from bert_jax import tasks
  stats = tasks.packing_plan(config)
  ways = jax.device_count()  # the batch splits over every device (mesh data=-1)
  rows_packed = max(1, round(args.batch / stats["examples_per_row"] / ways)) * ways
  steps_padded = math.ceil(args.epochs * stats["examples"] / args.batch)
  steps_packed = math.ceil(args.epochs * stats["packed_rows"] / rows_packed)
  if args.tiny:
    steps_padded = steps_packed = 6
  print(f"{args.task}: {stats['examples']} training examples, mean {stats['mean_length']:.1f} "
        f"pieces in rows of {config.data.max_seq_length}; padded fill "
        f"{stats['padded_fill']:.1%}, packed fill {stats['packed_fill']:.1%} "
        f"({stats['examples_per_row']:.2f} examples a row)", flush=True)

  runs = []
  root = args.workdir or tempfile.mkdtemp(prefix="packing_bench_")
  for seed in args.seeds:
    for mode in ("padded", "packed"):
      c = config.copy_and_resolve_references()
      packed = mode == "packed"
      steps = steps_packed if packed else steps_padded
      c.data.packing = packed
      c.batch_size = rows_packed if packed else args.batch
      c.seed = seed
      c.num_train_steps = steps
      c.optimizer.warmup_steps = max(1, steps // 10)
      c.log_every_steps = max(1, steps // 8)
      c.eval_every_steps = c.checkpoint_every_steps = steps
      if args.tiny:
        c.eval_batch_size = 256
      workdir = os.path.join(root, f"{args.task}_{mode}_seed{seed}")
      print(f"-- seed {seed} {mode}: {steps} steps x {c.batch_size} rows", flush=True)
      r = run_one(c, workdir)
      r.update(seed=seed, mode=mode, steps=steps, rows_per_step=c.batch_size,
               examples_per_step=(rows_packed * stats["examples_per_row"] if packed
                                  else args.batch),
               metric=r["result"].get(METRIC[args.task], float("nan")))
      runs.append(r)
      print(f"   {METRIC[args.task]} {r['metric']:.4f}, {r['real_tokens_per_s']:.0f} real tok/s, "
            f"train {r['train_s']:.0f} s, total {r['wall_s']:.0f} s", flush=True)

  print()
  print(f"| seed | mode | steps x rows | examples/step | real tok/s | train s | total s | "
        f"{METRIC[args.task]} |")
  print("|---|---|---|---|---|---|---|---|")
  for r in runs:
    print(f"| {r['seed']} | {r['mode']} | {r['steps']} x {r['rows_per_step']} | "
          f"{r['examples_per_step']:.1f} | {r['real_tokens_per_s']:.0f} | {r['train_s']:.0f} | "
          f"{r['wall_s']:.0f} | {r['metric']:.4f} |")
  summary = {}
  for mode in ("padded", "packed"):
    rs = [r for r in runs if r["mode"] == mode]
    values = [r["metric"] for r in rs]
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5
    summary[mode] = {"metric_mean": mean, "metric_std": std,
                     "tokens_per_s": sum(r["real_tokens_per_s"] for r in rs) / len(rs),
                     "train_s": sum(r["train_s"] for r in rs) / len(rs),
                     "wall_s": sum(r["wall_s"] for r in rs) / len(rs)}
  ratio = {k: summary["packed"][k] / summary["padded"][k] for k in ("tokens_per_s",)}
  ratio.update({k: summary["padded"][k] / summary["packed"][k] for k in ("train_s", "wall_s")})
  print()
  print(f"packed / padded real-token throughput: {ratio['tokens_per_s']:.2f}x; "
        f"training time {ratio['train_s']:.2f}x shorter, total {ratio['wall_s']:.2f}x; "
        f"{METRIC[args.task]} padded {summary['padded']['metric_mean']:.4f} "
        f"+- {summary['padded']['metric_std']:.4f}, packed "
        f"{summary['packed']['metric_mean']:.4f} +- {summary['packed']['metric_std']:.4f} "
        f"({len(args.seeds)} seeds)")
  out = {"task": args.task, "stats": stats, "epochs": args.epochs, "batch": args.batch,
         "runs": runs, "summary": summary, "ratio": ratio, "date": time.strftime("%Y-%m-%d"),
         "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
         "versions": {"jax": jax.__version__, "python": platform.python_version()}}
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=1)
  return out


if __name__ == "__main__":
  main()
