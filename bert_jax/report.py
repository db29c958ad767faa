"""What a fine-tuning run writes after its final evaluation: the evidence card, report.md.

Pure host-side functions over numpy arrays and plain dicts. `write_report` is the part every
task shares (report.md + report.json in the workdir: model, the tokenizer's output for real
inputs, result, the task's failure check, cost, the exact command); each task's failure check
lives in its folder (e.g. `tasks/classification/analysis.py`). Imports neither the data
pipeline nor the model, so any loop (or a scikit-learn baseline) can use it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import sys
from collections.abc import Sequence

from bert_jax import fileio

EXAMPLE_SINGLE = "A gorgeous, witty, seductive movie."
EXAMPLE_PAIR = ("The plot was thin.", "The acting saved it anyway.")


def command_line(argv: Sequence[str] | None = None) -> str:
  """The command that started this process, shell-quoted (`python -m bert_jax.main ...`)."""
  argv = list(sys.argv if argv is None else argv)
  head = argv[0] if argv else ""
  if head.endswith(os.path.join("bert_jax", "main.py")):
    prog = "python -m bert_jax.main"  # how `python -m` shows up in sys.argv[0]
  else:
    prog = "python " + shlex.quote(os.path.relpath(head)) if head else "python"
  return " ".join([prog] + [shlex.quote(a) for a in argv[1:]])


def train_tokens_per_sec(metrics_file: str) -> float | None:
  """Training throughput over a run's metrics.jsonl train rows (tokens / seconds).

  Each row covers the steps since the previous row: seconds = steps / steps_per_sec. The
  first row after every (re)start holds the compilation, so it is left out.
  """
  if not os.path.exists(metrics_file):
    return None
  tokens = seconds = 0.0
  previous = None
  with open(metrics_file, encoding="utf-8") as f:
    for line in f:
      row = json.loads(line)
      if row.get("split") != "train" or "tokens_per_sec" not in row:
        continue
      step = int(row["step"])
      if previous is not None and step > previous and float(row.get("steps_per_sec", 0)) > 0:
        dt = (step - previous) / float(row["steps_per_sec"])
        tokens += float(row["tokens_per_sec"]) * dt
        seconds += dt
      previous = step  # a step that went back (a resume) restarts the count
  return tokens / seconds if seconds > 0 else None


def _init_description(init_from: str) -> str:
  if not init_from:
    return "random initialization (no `init_from`)"
  from bert_jax.hf import is_transformers_dir
  kind = "transformers" if is_transformers_dir(init_from) else "bert_jax"
  return f"{kind} checkpoint `{init_from}` (encoder; the task head fresh unless it matches)"


def _vocab_description(vocab_file: str) -> str:
  from bert_jax.tokenizer import default_vocab_file
  try:
    if os.path.samefile(vocab_file, default_vocab_file()):
      return "bert-base-uncased's vocab.txt (the default)"
  except (FileNotFoundError, OSError):
    pass
  return f"`{vocab_file}`"


def _token_block(tokenizer, text: str, text_pair: str | None, max_length: int) -> list[str]:
  """Aligned columns per position: token, id, segment, mask (padding shown once)."""
  enc = tokenizer.encode(text, text_pair, max_length=max_length)
  n = int(enc["attention_mask"].sum())
  shown = min(max_length, n + 1)  # the first [PAD], when there is one
  tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][:shown])
  rows = [("tokens", tokens), ("input_ids", enc["input_ids"][:shown]),
          ("token_type_ids", enc["token_type_ids"][:shown]),
          ("attention_mask", enc["attention_mask"][:shown])]
  widths = [max(len(str(v[i])) for _, v in rows) for i in range(shown)]
  lines = [f"{name:<15}" + " ".join(f"{str(v[i]):<{w}}" for i, w in enumerate(widths)).rstrip()
           for name, v in rows]
  if shown < max_length:
    lines.append(f"... padded with [PAD] (id {tokenizer.pad_id}, segment 0, mask 0) to "
                 f"max_seq_length={max_length}")
  return lines


def md_escape(text: str) -> str:
  return text.replace("|", "\\|").replace("\n", " ")


def pct(x: float | None) -> str:
  return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def write_lines(path: str, lines) -> str:
  """Writes text lines atomically (`fileio.write_text_atomic`); returns `path`."""
  fileio.write_text_atomic(path, "".join(line + "\n" for line in lines))
  return path


def write_report(run, *, analysis: dict, failure_lines: Sequence[str],
                 examples: Sequence[tuple[str, str | None]], command: str | None = None) -> str:
  """Writes `workdir/report.md` (and the same facts as `report.json`); returns the .md path.

  The evidence card every task shares: model (initialization, size), the tokenizer's output for
  real `examples` (text, optional pair), the result, the task's failure check
  (`failure_lines`: markdown, including how many inputs were truncated or windowed), cost
  (wall time, training tokens/s) and the exact command.

  Args:
    run: a `bert_jax.tasks.FinishedRun` (workdir, config, model config, parameter count,
      tokenizer, eval results, wall time, device).
    analysis: the task's JSON-ready error analysis (stored in report.json).
    command: the command to show (default: this process's, `command_line()`).
  """
  config_dict = run.config.to_dict() if hasattr(run.config, "to_dict") else dict(run.config)
  model_config, tokenizer, num_params = run.model_config, run.tokenizer, run.num_params
  eval_results, wall_time_s, device = run.eval_results, run.wall_time_s, run.device
  tokens_per_sec = train_tokens_per_sec(os.path.join(run.workdir, "metrics.jsonl"))
  command = command or command_line()
  data = config_dict.get("data", {})
  max_length = int(data.get("max_seq_length", 128))
  mc = dataclasses.asdict(model_config) if dataclasses.is_dataclass(model_config) else dict(
      model_config)
  init = _init_description(config_dict.get("init_from", ""))

  lines = [f"# Fine-tuning report: {config_dict.get('task', '?')} on {data.get('name', '?')}", ""]
  lines += ["## Model", "",
            f"- Initialization: {init}; seed {config_dict.get('seed', '?')}",
            f"- Architecture: {mc['num_hidden_layers']} layers, hidden {mc['hidden_size']}, "
            f"{mc['num_attention_heads']} heads, intermediate {mc['intermediate_size']}, "
            f"vocabulary {mc['vocab_size']:,}, max positions {mc['max_position_embeddings']}",
            f"- Parameters: {num_params:,} ({num_params / 1e6:.2f} M)",
            f"- Training: {config_dict.get('num_train_steps', '?')} steps of batch "
            f"{config_dict.get('batch_size', '?')} x {max_length} tokens, "
            f"{config_dict.get('optimizer', {}).get('name', '?')} lr "
            f"{config_dict.get('optimizer', {}).get('learning_rate', '?')}", ""]

  lines += ["## Tokenizer", "",
            f"WordPiece, {_vocab_description(tokenizer.vocab_file)} ({tokenizer.vocab_size:,} "
            f"entries, hash {tokenizer.vocab_hash}). Real inputs as the model sees them:", ""]
  for text, pair in examples:
    shown = repr(text) if pair is None else f"{text!r} + {pair!r}"
    lines += [f"`{md_escape(shown)}`", "", "```"] + _token_block(
        tokenizer, text, pair, max_length) + ["```", ""]

  lines += ["## Result", "", "| metric | value |", "|---|---|"]
  for k, v in sorted(eval_results.items()):
    if isinstance(v, (dict, list)):
      continue
    if isinstance(v, float) and v.is_integer() and abs(v) >= 1:
      v = int(v)  # counts (num_examples, tokens) summed as floats
    lines.append(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |")
  lines.append("")

  lines += ["## Failure check", ""] + list(failure_lines) + [""]

  tps = "unknown" if tokens_per_sec is None else f"{tokens_per_sec:,.0f}"
  lines += ["## Cost", "", f"- Wall time: {wall_time_s:.1f} s ({wall_time_s / 60:.1f} min), "
            "data preparation, compilation and evaluation included",
            f"- Training throughput: {tps} tokens/s (non-padding tokens)"]
  cost = getattr(run, "inference_cost", None)
  if cost:
    lines.append(f"- Inference (model forward on this device, tokenization excluded): "
                 f"{cost['examples_per_s']:,.1f} examples/s at batch {cost['batch']} x "
                 f"{cost['length']} tokens; one example at length {cost['length']}: p50 "
                 f"{cost['p50_ms']:.1f} ms, p95 {cost['p95_ms']:.1f} ms")
  if device:
    lines.append(f"- Device: {device}")
  lines += ["", "## Command", "", "```bash", command, "```", ""]

  os.makedirs(run.workdir, exist_ok=True)
  path = write_lines(os.path.join(run.workdir, "report.md"), lines)
  facts = {"task": config_dict.get("task"), "init_from": config_dict.get("init_from", ""),
           "seed": config_dict.get("seed"), "model": mc, "num_params": int(num_params),
           "eval_results": eval_results, "analysis": analysis, "wall_time_s": float(wall_time_s),
           "tokens_per_sec": tokens_per_sec, "command": command, "device": device,
           "inference_cost": cost}
  write_lines(os.path.join(run.workdir, "report.json"),
              [json.dumps(facts, indent=2, default=str)])
  return path
