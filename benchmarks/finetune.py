"""Fine-tuning end to end: bert_jax's CLI against a plain transformers PyTorch loop (issue 24).

  python benchmarks/finetune.py --task ner|sst2 [--seeds 0 1 2] [--steps N] [--threads 1|2] \
      --json OUT
  python benchmarks/finetune.py --task sst2 --tiny --json OUT   # random tiny models (tests)

The same job, from the same MiniLM weights (experiments.finetune_rotten_tomatoes.minilm_dir()),
on CoNLL-2003 NER (experiments/ner_conll2003.py) or SST-2 (experiments/glue.py:sst2 with the
GLUE suite's rows per step and steps, bert_jax/glue.py), data from ../shared/data:

- bert_jax: `python -m bert_jax.main --config=... --workdir=...` in a subprocess, its defaults
  (packed rows, the experiment's batch, lr, warmup and epochs); evaluation once, at the end
  (eval_every_steps = num_train_steps, the transformers side evaluates once too); checkpoints as
  the config says. Every run prepares its TFDS data in its own fresh workdir (data prep is in
  every run's wall time, as the transformers side tokenizes in every run).
- transformers: this file with `--hf_worker SPEC` in a subprocess: BertTokenizerFast,
  BertForTokenClassification / BertForSequenceClassification, dynamic padding to the longest
  in the batch (DataCollatorForTokenClassification / DataCollatorWithPadding), length-grouped
  batches (transformers' get_length_grouped_indices, as Trainer's group_by_length), AdamW
  (no decay on biases and LayerNorm, as Trainer), get_linear_schedule_with_warmup, gradient
  clipping at 1.0, with bert_jax's learning rate, warmup (round(ratio * steps)), weight decay,
  eps, max length, epochs and examples per step (bert_jax's packed rows per step x examples
  per row, rounded). NER labels every piece of a word (a later piece of B-X gets I-X, as
  bert_jax's data.label_all_pieces) and is scored by seqeval at word level on the first piece
  of each word (bert_jax's metrics); words cut by max length are predicted O (bert_jax splits
  long sentences into windows instead: 25 of 3,250 dev sentences exceed 62 pieces).

`--steps N`: both sides train N steps of the same number of examples (a quick run; not the
same example ids: bert_jax packs and shuffles its own way). Default: both sides' 3 epochs.

Reported per run: wall time from the subprocess start to the end of training (process start,
imports, data preparation / tokenization and compilation included; bert_jax: the time of its
last training log line in metrics.jsonl; transformers: the child's own clock), total wall
time (final evaluation included), real (non-padding) training tokens/s (bert_jax: metrics.jsonl,
its first log window, the compile, excluded, benchmarks/packing.py's helper; transformers: all
steps but the first), and the dev metric (NER entity F1, SST-2 accuracy). Rounds alternate
which side goes first; the load average is printed before every run. `--threads N` pins both
subprocesses to the first N cores of this process's affinity mask (XLA sizes its CPU pool
from it; torch.set_num_threads(N)). `speedup` = transformers' mean wall time to the end of
training / bert_jax's. Both subprocesses import this checkout's bert_jax (PYTHONPATH=ROOT);
the driver itself (packing_plan, the step counts) imports the installed one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from packing import train_throughput  # a sibling script (sys.path[0])

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "..", "shared", "data")
METRIC = {"ner": "f1", "sst2": "accuracy"}
SIDES = ("bert_jax", "transformers")
TINY_MODEL = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=64)


def data_files(task: str) -> dict:
  if task == "ner":
    d = os.path.join(DATA, "conll2003")
    return {"train": os.path.join(d, "train.txt"), "dev": os.path.join(d, "dev.txt")}
  d = os.path.join(DATA, "glue", "SST-2")
  return {"train": os.path.join(d, "train.tsv"), "dev": os.path.join(d, "dev.tsv"),
          "glue_dir": os.path.join(DATA, "glue")}


# ============================================================================ bert_jax's side


def bert_jax_job(task: str, steps: int | None, tiny: bool, plan_dir: str) -> dict:
  """The bert_jax run's config overrides, steps and examples per step (from packing_plan)."""
  from bert_jax import glue, tasks
  from experiments import finetune_rotten_tomatoes
  files, minilm = data_files(task), finetune_rotten_tomatoes.minilm_dir()
  if task == "ner":
    from experiments import ner_conll2003 as exp
    c, config = exp.get_config("full"), "experiments/ner_conll2003.py"
    c.data.update(train_file=files["train"], eval_file=files["dev"])
    overrides = {"data.train_file": files["train"], "data.eval_file": files["dev"]}
  else:
    c = glue.run_config("sst2", 0, init_from=minilm, glue_dir=files["glue_dir"])
    config = "experiments/glue.py:sst2"
    overrides = {"init_from": minilm, "data.glue_dir": files["glue_dir"]}
  if tiny:
    c.init_from = overrides["init_from"] = ""
    c.data.vocab_file = overrides["data.vocab_file"] = os.path.join(minilm, "vocab.txt")
    c.model.update(TINY_MODEL, max_position_embeddings=128)
    overrides.update({f"model.{k}": v for k, v in TINY_MODEL.items()})
    overrides["model.max_position_embeddings"] = 128
  c.data.data_dir = plan_dir
  checkpoint_every = int(c.checkpoint_every_steps)  # the experiment's (set_steps: a quarter)
  if task == "ner":
    plan = tasks.packing_plan(c)
    if steps:
      c.num_train_steps = steps
  else:
    plan = glue.set_steps(c, "sst2", budget="full", max_steps=steps)
    overrides["data.vocab_file"] = c.data.vocab_file
  n = int(c.num_train_steps)
  overrides.update({"batch_size": int(c.batch_size), "num_train_steps": n,
                    "eval_every_steps": n,
                    "log_every_steps": max(1, min(int(c.log_every_steps), n // 6 or 1)),
                    "checkpoint_every_steps": min(checkpoint_every, n)})
  return {"config": config, "overrides": overrides, "steps": n, "rows_per_step": c.batch_size,
          "examples_per_step": c.batch_size * plan["examples_per_row"], "plan": plan,
          "lr": float(c.optimizer.learning_rate), "warmup_ratio": float(c.optimizer.warmup_ratio),
          "weight_decay": float(c.optimizer.weight_decay), "eps": float(c.optimizer.eps),
          "clip_norm": float(c.optimizer.clip_norm), "max_len": int(c.data.max_seq_length),
          "init_from": minilm, "vocab_dir": minilm}


def pinned(cores) -> list:
  """The command prefix that pins a subprocess to `cores` (taskset: no fork-time hook in a
  process whose jax already runs threads)."""
  return ["taskset", "-c", ",".join(map(str, cores))]


def run_bert_jax(job: dict, seed: int, workdir: str, cores, tiny: bool) -> dict:
  flags = dict(job["overrides"], seed=seed)
  flags["data.data_dir"] = os.path.join(workdir, "tfds")
  if tiny:
    flags["eval_batch_size"] = 256
  cmd = pinned(cores) + [sys.executable, "-m", "bert_jax.main", f"--config={job['config']}",
         f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in flags.items()]
  env = dict(os.environ, PYTHONPATH=ROOT)  # this checkout's bert_jax, whatever is installed
  t0 = time.time()
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
  total = time.time() - t0
  with open(os.path.join(workdir, "run.log"), "w") as f:
    f.write(proc.stdout + proc.stderr)
  if proc.returncode:
    raise RuntimeError(f"bert_jax run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
  metrics = os.path.join(workdir, "metrics.jsonl")
  with open(metrics) as f:
    train = [m for m in map(json.loads, f) if m.get("split") == "train"]
  with open(os.path.join(workdir, "eval_results.json")) as f:
    results = json.load(f)
  return {"wall_s": train[-1]["time"] - t0, "total_s": total,
          "first_log_s": train[0]["time"] - t0, "first_log_step": train[0]["step"],
          "real_tokens_per_s": train_throughput(metrics),
          "dev_metric": results[METRIC[job["task"]]], "steps": job["steps"],
          "examples_per_step": job["examples_per_step"]}


# ============================================================================ transformers' side


def hf_spec(job: dict, task: str, tiny: bool) -> dict:
  """The transformers run: bert_jax's hyperparameters, examples per step rounded."""
  batch = max(1, round(job["examples_per_step"]))
  examples = job["plan"]["examples"]
  steps = job["steps"] if job["steps_given"] else 3 * math.ceil(examples / batch)
  return {"task": task, "files": data_files(task), "model_dir": job["init_from"],
          "tiny": TINY_MODEL if tiny else None, "batch": batch, "steps": steps,
          "warmup": max(1, int(round(job["warmup_ratio"] * steps))), "lr": job["lr"],
          "weight_decay": job["weight_decay"], "eps": job["eps"], "clip": job["clip_norm"],
          "max_len": job["max_len"]}


def run_transformers(spec: dict, seed: int, workdir: str, cores) -> dict:
  os.makedirs(workdir, exist_ok=True)
  out = os.path.join(workdir, "result.json")
  spec = dict(spec, seed=seed, out=out, threads=len(cores))
  t0 = time.time()
  cmd = pinned(cores) + [sys.executable, os.path.abspath(__file__), "--hf_worker",
                         json.dumps(spec)]
  proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                        capture_output=True, text=True)
  total = time.time() - t0
  if proc.returncode:
    raise RuntimeError(f"transformers run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
  with open(out) as f:
    r = json.load(f)
  r.update(wall_s=r["train_end"] - t0, total_s=total, steps=spec["steps"],
           examples_per_step=spec["batch"])
  return r


def _read_examples(task: str, path: str) -> list:
  """NER: (words, tags) per sentence (bert_jax's CoNLL reader); SST-2: (sentence, label)."""
  if task == "ner":
    from bert_jax.tasks.token_classification import conll
    return [(list(s.words), list(s.tags)) for s in conll.read_conll(path)]
  with open(path, encoding="utf-8") as f:
    rows = [line.rstrip("\n").split("\t") for line in f][1:]
  return [(text, int(label)) for text, label in rows]


def _encode(task: str, tokenizer, examples: list, max_len: int, label_ids: dict | None):
  """Tokenized features (lists, no padding) and each one's word ids (NER)."""
  if task == "sst2":
    enc = tokenizer([t for t, _ in examples], truncation=True, max_length=max_len)
    return [{"input_ids": ids, "labels": label} for ids, (_, label)
            in zip(enc["input_ids"], examples)], None
  enc = tokenizer([w for w, _ in examples], is_split_into_words=True, truncation=True,
                  max_length=max_len)
  features, word_ids = [], []
  for i, (_, tags) in enumerate(examples):
    words, labels, previous = enc.word_ids(i), [], None
    for w in words:
      if w is None:
        labels.append(-100)
      else:
        tag = tags[w]
        if w == previous and tag.startswith("B-"):
          tag = "I-" + tag[2:]  # a later piece continues the entity (label_all_pieces)
        labels.append(label_ids[tag])
      previous = w
    features.append({"input_ids": enc["input_ids"][i], "labels": labels})
    word_ids.append(words)
  return features, word_ids


def _batches(lengths: list, batch: int, steps: int, seed: int):
  """`steps` batches of indices: length-grouped (Trainer's sampler), epoch after epoch."""
  import torch
  from transformers.trainer_pt_utils import get_length_grouped_indices
  g = torch.Generator()
  g.manual_seed(seed)
  done = 0
  while done < steps:
    order = get_length_grouped_indices(lengths, batch, generator=g)
    for i in range(0, len(order), batch):
      if done == steps:
        return
      yield order[i:i + batch]
      done += 1


def _evaluate(task: str, model, collate, features, word_ids, examples, label_names) -> float:
  import numpy as np
  import torch
  model.eval()
  order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
  preds = [None] * len(features)
  with torch.inference_mode():
    for s in range(0, len(order), 128):
      idx = order[s:s + 128]
      batch = collate([features[i] for i in idx])
      batch.pop("labels")
      logits = model(**batch).logits.argmax(-1).numpy()
      for row, i in zip(logits, idx):
        preds[i] = row
  if task == "sst2":
    return float(np.mean([p == label for p, (_, label) in zip(preds, examples)]))
  from bert_jax.tasks.token_classification import metrics
  gold, pred = [], []
  for row, words, (ws, tags) in zip(preds, word_ids, examples):
    tagged = ["O"] * len(ws)  # words cut by max length stay O
    seen = set()
    for pos, w in enumerate(words):
      if w is not None and w not in seen:
        seen.add(w)
        tagged[w] = label_names[row[pos]]
    gold.append(tags)
    pred.append(tagged)
  return float(metrics.metrics(gold, pred)["f1"])


def _model(spec: dict, num_labels: int):
  import transformers
  cls = (transformers.BertForTokenClassification if spec["task"] == "ner"
         else transformers.BertForSequenceClassification)
  if spec["tiny"]:
    config = transformers.BertConfig.from_pretrained(spec["model_dir"])
    config.update(dict(spec["tiny"], max_position_embeddings=128, num_labels=num_labels))
    return cls(config)
  return cls.from_pretrained(spec["model_dir"], num_labels=num_labels)


def _optimizer(spec: dict, model):
  import torch
  import transformers
  decay = [p for n, p in model.named_parameters() if not n.endswith("bias")
           and "LayerNorm" not in n]
  no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": spec["weight_decay"]},
                           {"params": no_decay, "weight_decay": 0.0}], lr=spec["lr"],
                          eps=spec["eps"])
  return opt, transformers.get_linear_schedule_with_warmup(opt, spec["warmup"], spec["steps"])


def hf_worker(spec: dict) -> None:
  """The transformers run (a subprocess): tokenize, train, evaluate; writes spec["out"]."""
  t0 = time.time()
  import torch
  import transformers
  torch.set_num_threads(spec["threads"])
  transformers.set_seed(spec["seed"])
  task, phases = spec["task"], {}
  tokenizer = transformers.BertTokenizerFast.from_pretrained(spec["model_dir"])
  train_ex = _read_examples(task, spec["files"]["train"])
  dev_ex = _read_examples(task, spec["files"]["dev"])
  label_names = (["O"] + sorted({t for _, tags in train_ex for t in tags} - {"O"})
                 if task == "ner" else None)
  label_ids = {t: i for i, t in enumerate(label_names)} if label_names else None
  phases["start_and_read_s"] = time.time() - t0
  t = time.time()
  train_f, _ = _encode(task, tokenizer, train_ex, spec["max_len"], label_ids)
  dev_f, dev_words = _encode(task, tokenizer, dev_ex, spec["max_len"], label_ids)
  phases["tokenize_s"] = time.time() - t
  collate = (transformers.DataCollatorForTokenClassification(tokenizer) if task == "ner"
             else transformers.DataCollatorWithPadding(tokenizer))
  model = _model(spec, len(label_names) if label_names else 2)
  opt, schedule = _optimizer(spec, model)
  lengths = [len(f["input_ids"]) for f in train_f]
  model.train()
  tokens, t_first, collate_s = 0, None, 0.0
  t_train = time.time()
  phases["model_s"] = t_train - t - phases["tokenize_s"]
  for step, idx in enumerate(_batches(lengths, spec["batch"], spec["steps"], spec["seed"])):
    tc = time.time()
    batch = collate([train_f[i] for i in idx])
    collate_s += time.time() - tc
    loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), spec["clip"])
    opt.step()
    schedule.step()
    opt.zero_grad(set_to_none=True)
    if step == 0:
      t_first = time.time()
    else:
      tokens += int(batch["attention_mask"].sum())
  train_end = time.time()
  phases.update(train_s=train_end - t_train, collate_s=collate_s)
  metric = _evaluate(task, model, collate, dev_f, dev_words, dev_ex, label_names)
  phases["eval_s"] = time.time() - train_end
  steady = train_end - t_first if t_first else 0.0
  with open(spec["out"], "w") as f:
    json.dump({"train_end": train_end, "real_tokens_per_s": tokens / steady if steady else
               float("nan"), "dev_metric": metric, "phases": phases,
               "torch_threads": torch.get_num_threads(), "final_loss": float(loss)}, f)


# ============================================================================ the driver


def summarize(runs: list, side: str) -> dict:
  rs = [r for r in runs if r["side"] == side]
  values = [r["dev_metric"] for r in rs]
  return {"wall_s": statistics.mean(r["wall_s"] for r in rs),
          "total_s": statistics.mean(r["total_s"] for r in rs),
          "real_tokens_per_s": statistics.mean(r["real_tokens_per_s"] for r in rs),
          "dev_metric": statistics.mean(values),
          "dev_metric_std": statistics.stdev(values) if len(values) > 1 else 0.0,
          "steps": rs[0]["steps"], "examples_per_step": rs[0]["examples_per_step"],
          "seeds": [r["seed"] for r in rs]}


def print_table(task: str, runs: list) -> None:
  print(f"\n| seed | side | steps | examples/step | real tok/s | wall s to end of training | "
        f"total s | dev {METRIC[task]} | load (1 min) |")
  print("|---|---|---|---|---|---|---|---|---|")
  for r in runs:
    print(f"| {r['seed']} | {r['side']} | {r['steps']} | {r['examples_per_step']:.1f} | "
          f"{r['real_tokens_per_s']:.0f} | {r['wall_s']:.1f} | {r['total_s']:.1f} | "
          f"{r['dev_metric']:.4f} | {r['load'][0]:.2f} |")


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--task", choices=sorted(METRIC), default="sst2")
  p.add_argument("--seeds", type=int, nargs="+", default=[0])
  p.add_argument("--steps", type=int, default=0, help="both sides train N steps (quick run)")
  p.add_argument("--threads", type=int, default=1, help="cores each subprocess is pinned to")
  p.add_argument("--tiny", action="store_true", help="random tiny models, 4 steps (tests)")
  p.add_argument("--json", default="", help="write the results here")
  p.add_argument("--workdir", default="", help="keep the runs' workdirs here")
  p.add_argument("--hf_worker", default="", help=argparse.SUPPRESS)
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  if args.hf_worker:
    return hf_worker(json.loads(args.hf_worker))
  missing = [f for f in data_files(args.task).values() if not os.path.exists(f)]
  if missing:
    sys.exit(f"finetune.py: {missing[0]} is missing (../shared/data, see its README.md)")
  steps = args.steps or (4 if args.tiny else 0)
  cores = sorted(os.sched_getaffinity(0))[:args.threads]
  root = args.workdir or tempfile.mkdtemp(prefix="finetune_bench_")
  t = time.time()
  job = bert_jax_job(args.task, steps or None, args.tiny, os.path.join(root, "plan_tfds"))
  job.update(task=args.task, steps_given=bool(steps))
  spec = hf_spec(job, args.task, args.tiny)
  print(f"{args.task}: {job['plan']['examples']} training examples; bert_jax {job['steps']} "
        f"steps x {job['rows_per_step']} packed rows ({job['examples_per_step']:.1f} examples); "
        f"transformers {spec['steps']} steps x {spec['batch']} examples; lr {spec['lr']}, warmup "
        f"{spec['warmup']}, max length {spec['max_len']}; {len(cores)} thread(s) on cores "
        f"{cores} (plan {time.time() - t:.0f} s)", flush=True)
  runs = []
  for i, seed in enumerate(args.seeds):
    for side in (SIDES if i % 2 == 0 else SIDES[::-1]):
      load = os.getloadavg()
      print(f"-- seed {seed} {side}: load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
            flush=True)
      workdir = os.path.join(root, f"{args.task}_{side}_seed{seed}")
      r = (run_bert_jax(job, seed, workdir, cores, args.tiny) if side == "bert_jax"
           else run_transformers(spec, seed, workdir, cores))
      r.update(seed=seed, side=side, load=load)
      runs.append(r)
      print(f"   {METRIC[args.task]} {r['dev_metric']:.4f}, {r['real_tokens_per_s']:.0f} real "
            f"tok/s, {r['wall_s']:.1f} s to the end of training, {r['total_s']:.1f} s in all"
            + (f"; phases {r['phases']}" if "phases" in r else ""), flush=True)
  print_table(args.task, runs)
  result = {side: summarize(runs, side) for side in SIDES}
  result["speedup"] = result["transformers"]["wall_s"] / result["bert_jax"]["wall_s"]
  result["tokens_per_s_ratio"] = (result["bert_jax"]["real_tokens_per_s"]
                                  / result["transformers"]["real_tokens_per_s"])
  print(f"\n{args.task}: speedup (transformers wall / bert_jax wall, to the end of training, "
        f"compile included) {result['speedup']:.2f}x; real tokens/s "
        f"{result['tokens_per_s_ratio']:.2f}x; "
        f"dev {METRIC[args.task]} bert_jax {result['bert_jax']['dev_metric']:.4f} vs "
        f"transformers {result['transformers']['dev_metric']:.4f}")
  import jax
  import torch
  import transformers
  out = {args.task: result, "runs": runs, "threads": len(cores), "steps": steps or None,
         "tiny": args.tiny, "hf_spec": spec, "bert_jax_overrides": job["overrides"],
         "date": time.strftime("%Y-%m-%d %H:%M"), "load_end": os.getloadavg(),
         "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
         "versions": {"jax": jax.__version__, "torch": torch.__version__,
                      "transformers": transformers.__version__}}
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=1, default=float)
  return out


if __name__ == "__main__":
  main()
