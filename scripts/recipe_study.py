"""What buys the most MLM per CPU-minute: pretraining variants at equal training time.

    .venv/bin/python scripts/recipe_study.py --out workdirs/recipe --minutes 6 \
        [--variants base lr3e-3 ...] [--cpu 0]      # run (finished variants are skipped)
    .venv/bin/python scripts/recipe_study.py --out workdirs/recipe --report \
        [--figure docs/figures/recipe_study.png]     # table + figure of what has run

Each variant is `experiments/pretrain_tiny.py` as it was before this study (BASE: 2 x 128,
30,522 pieces, dropout 0.1, lr 1e-3, batch 32 x 128) with a few overrides. Equal time:
a 10-step probe run measures the variant's steps/s on this machine, then the variant trains
`minutes x 60 x steps/s` steps (warmup 5%, linear decay) with the held-out MLM loss and
accuracy measured 5 times on the same 6 x 64 validation sequences. Then Rotten Tomatoes is
fine-tuned from it for one epoch (`finetune_rotten_tomatoes.py:scratch`, 216 packed steps,
seed 0), the number the variants are finally compared on: a held-out MLM loss over 8,192
pieces and one over 30,522, or at 15% and 40% masking, are not the same quantity.

`--cpu N` pins every process of this invocation to core N (`taskset`), so two invocations
can share a 2-core machine without disturbing each other's timing: every variant is then
measured on one core, and its "minutes" are minutes of one core. Every command run is
appended to `<out>/commands.txt`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

from plot_curves import read_metrics  # a sibling script (scripts/ is sys.path[0])

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VOCAB_8K = "experiments/vocab/imdb_8k.txt"  # python -m bert_jax.train_vocab --vocab_size 8192

SMALL = ["--config.model.hidden_size=256", "--config.model.num_hidden_layers=4",
         "--config.model.num_attention_heads=4", "--config.model.intermediate_size=1024"]
MID = ["--config.model.hidden_size=192", "--config.model.num_hidden_layers=3",
       "--config.model.num_attention_heads=3", "--config.model.intermediate_size=768"]
NO_DROPOUT = ["--config.model.hidden_dropout_prob=0",
              "--config.model.attention_probs_dropout_prob=0"]

# pretrain_tiny as it was before this study (the "base" every variant changes): bert-base-
# uncased's 30,522 pieces, dropout 0.1. Every run states it, so the study does not move when
# pretrain_tiny's defaults do.
BASE = ["--config.data.vocab_file=", "--config.model.hidden_dropout_prob=0.1",
        "--config.model.attention_probs_dropout_prob=0.1",
        "--config.optimizer.learning_rate=1e-3", "--config.batch_size=32",
        "--config.data.max_seq_length=128", "--config.model.hidden_size=128",
        "--config.model.num_hidden_layers=2", "--config.model.num_attention_heads=2",
        "--config.model.intermediate_size=512"]

# name -> (what changes against BASE, overrides)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "base": ("pretrain_tiny: 2 x 128, lr 1e-3, batch 32 x 128, 15% masking, dropout 0.1, "
             "30,522 pieces", []),
    "lr3e-3": ("learning rate 3e-3", ["--config.optimizer.learning_rate=3e-3"]),
    "batch128": ("batch 128 (lr 2e-3)", ["--config.batch_size=128",
                                         "--config.optimizer.learning_rate=2e-3"]),
    "mask40": ("40% masking (52 predictions a row)", ["--config.masking.mask_prob=0.4",
                                                      "--config.masking.max_predictions_per_seq=52"]),
    "seq64": ("rows of 64 pieces (batch 64: the same tokens a step)", [
        "--config.data.max_seq_length=64", "--config.batch_size=64",
        "--config.masking.max_predictions_per_seq=10"]),
    "nodropout": ("dropout 0", NO_DROPOUT),
    "nsp": ("next-sentence prediction on", ["--config.data.nsp=true"]),
    "vocab8k": ("8,192 pieces trained on IMDB", [f"--config.data.vocab_file={VOCAB_8K}"]),
    "mid8k": ("3 x 192 (3 heads), 8,192 pieces", [f"--config.data.vocab_file={VOCAB_8K}", *MID]),
    "small8k": ("4 x 256 (4 heads), 8,192 pieces", [f"--config.data.vocab_file={VOCAB_8K}",
                                                    *SMALL]),
    "recipe": ("8,192 pieces + dropout 0 (the new pretrain_tiny)",
               [f"--config.data.vocab_file={VOCAB_8K}", *NO_DROPOUT]),
}


def overrides_of(name: str) -> list[str]:
  """BASE with the variant's overrides on top (one flag per key, the variant's value)."""
  merged = {}
  for flag in BASE + VARIANTS[name][1]:
    key, _, _ = flag.partition("=")
    merged[key] = flag
  return list(merged.values())


def _python(cpu: int | None) -> list[str]:
  py = [os.path.join(ROOT, ".venv", "bin", "python")]
  if not os.path.exists(py[0]):
    py = [sys.executable]
  return (["taskset", "-c", str(cpu)] if cpu is not None else []) + py


def _run(cmd: list[str], out: str):
  with open(os.path.join(out, "commands.txt"), "a", encoding="utf-8") as f:
    f.write(" ".join(cmd) + "\n")
  print("+", " ".join(cmd), flush=True)
  subprocess.run(cmd, cwd=ROOT, check=True)


def _rows(workdir: str, split: str) -> list[dict]:
  """Rows of one split of `workdir/metrics.jsonl`, one a step (the last written), by step."""
  path = os.path.join(workdir, "metrics.jsonl")
  return read_metrics(path).get(split, []) if os.path.exists(path) else []


def train_minutes(workdir: str) -> dict[int, float]:
  """{step: minutes of training up to it}, from the logged windows' steps/s (evaluation,
  compilation and checkpoint time excluded: each window's steps over its rate)."""
  minutes, total, prev = {0: 0.0}, 0.0, 0
  for row in _rows(workdir, "train"):
    step, sps = int(row["step"]), float(row.get("steps_per_sec") or 0)
    if sps > 0:
      total += (step - prev) / sps / 60
    minutes[step], prev = total, step
  return minutes


def probe(name: str, overrides: list[str], out: str, cpu: int | None) -> float:
  """Median steps/s of a 10-step run after its first (compiling) window; cached."""
  cache = os.path.join(out, "rates.json")
  rates = json.load(open(cache, encoding="utf-8")) if os.path.exists(cache) else {}
  if name not in rates:
    workdir = os.path.join(out, f"_probe_{name}")
    shutil.rmtree(workdir, ignore_errors=True)
    _run(_python(cpu) + ["-m", "bert_jax.main", "--config=experiments/pretrain_tiny.py",
                         f"--workdir={workdir}", *overrides, "--config.num_train_steps=12",
                         "--config.log_every_steps=4", "--config.eval_every_steps=1000",
                         "--config.checkpoint_every_steps=1000"], out)
    windows = [float(r["steps_per_sec"]) for r in _rows(workdir, "train")][1:]
    shutil.rmtree(workdir, ignore_errors=True)
    rates = json.load(open(cache, encoding="utf-8")) if os.path.exists(cache) else {}
    rates[name] = statistics.median(windows)
    with open(cache, "w", encoding="utf-8") as f:
      json.dump(rates, f, indent=1)
  return float(rates[name])


def run_variant(name: str, out: str, minutes: float, cpu: int | None):
  overrides = overrides_of(name)
  workdir = os.path.join(out, name)
  if not os.path.exists(os.path.join(workdir, "eval_results.json")):
    steps = max(20, int(minutes * 60 * probe(name, overrides, out, cpu)))
    every = -(-steps // 5)
    _run(_python(cpu) + [
        "-m", "bert_jax.main", "--config=experiments/pretrain_tiny.py", f"--workdir={workdir}",
        *overrides, f"--config.num_train_steps={steps}",
        f"--config.optimizer.warmup_steps={max(1, steps // 20)}",
        f"--config.eval_every_steps={every}", f"--config.checkpoint_every_steps={every}",
        "--config.num_eval_batches=6", "--config.eval_batch_size=64",
        f"--config.log_every_steps={max(1, min(20, steps // 25))}"], out)
  rt = os.path.join(out, f"rt_{name}_s0")
  if not os.path.exists(os.path.join(rt, "eval_results.json")):
    _run(_python(cpu) + [
        "-m", "bert_jax.main", "--config=experiments/finetune_rotten_tomatoes.py:scratch",
        f"--workdir={rt}", f"--config.init_from={workdir}", "--config.seed=0",
        "--config.num_train_steps=216", "--config.eval_every_steps=216",
        "--config.checkpoint_every_steps=216", "--config.optimizer.warmup_steps=22"], out)


def summarize(out: str) -> list[dict]:
  rows = []
  for name, (what, overrides) in VARIANTS.items():
    workdir = os.path.join(out, name)
    evals = _rows(workdir, "eval")
    if not evals:
      continue
    minutes = train_minutes(workdir)
    train = _rows(workdir, "train")
    rt_path = os.path.join(out, f"rt_{name}_s0", "eval_results.json")
    rt = json.load(open(rt_path, encoding="utf-8")) if os.path.exists(rt_path) else {}
    rows.append(dict(
        name=name, what=what, overrides=overrides, steps=int(evals[-1]["step"]),
        train_minutes=round(minutes.get(int(evals[-1]["step"]), float("nan")), 2),
        tokens_per_sec=statistics.median(float(r["tokens_per_sec"]) for r in train[1:] or train),
        eval_mlm_loss=float(evals[-1]["mlm_loss"]),
        eval_mlm_accuracy=float(evals[-1]["mlm_accuracy"]),
        rt_accuracy=rt.get("accuracy"),
        curve=[(round(minutes.get(int(r["step"]), float("nan")), 3), float(r["mlm_loss"]),
                float(r["mlm_accuracy"])) for r in evals]))
  return rows


def report(out: str, figure: str | None):
  rows = summarize(out)
  with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as f:
    json.dump(rows, f, indent=1)
  lines = ["| variant | change | steps | train min | tokens/s | held-out MLM loss | "
           "held-out MLM acc (%) | RT acc, 1 epoch (%) |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    rt = "" if r["rt_accuracy"] is None else f"{100 * r['rt_accuracy']:.1f}"
    lines.append(f"| {r['name']} | {r['what']} | {r['steps']} | {r['train_minutes']:.1f} | "
                 f"{r['tokens_per_sec']:,.0f} | {r['eval_mlm_loss']:.3f} | "
                 f"{100 * r['eval_mlm_accuracy']:.1f} | {rt} |")
  table = "\n".join(lines)
  print(table)
  with open(os.path.join(out, "study.md"), "w", encoding="utf-8") as f:
    f.write(table + "\n")
  if figure and rows:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for i, r in enumerate(rows):
      m, loss, acc = zip(*r["curve"])
      style = "--" if "8k" in r["name"] else "-"
      ax_loss.plot(m, loss, style, marker="o", ms=3, color=f"C{i % 10}", label=r["name"])
      ax_acc.plot(m, [100 * a for a in acc], style, marker="o", ms=3, color=f"C{i % 10}",
                  label=r["name"])
    ax_loss.set(xlabel="training minutes", ylabel="held-out MLM loss (nats)",
                title="held-out MLM loss (dashed: 8,192-piece vocabulary)")
    ax_acc.set(xlabel="training minutes", ylabel="held-out MLM accuracy (%)",
               title="held-out MLM accuracy")
    ax_acc.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(figure)), exist_ok=True)
    fig.savefig(figure, dpi=120)
    print(f"wrote {figure}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--minutes", type=float, default=6.0)
  parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
  parser.add_argument("--cpu", type=int, default=None, help="pin to this core (taskset)")
  parser.add_argument("--report", action="store_true", help="only summarize what has run")
  parser.add_argument("--figure", default=None)
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  if not args.report:
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
      parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    for name in args.variants:
      run_variant(name, os.path.abspath(args.out), args.minutes, args.cpu)
  report(args.out, args.figure)


if __name__ == "__main__":
  main()
