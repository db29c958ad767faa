"""The GLUE suite: every task x seed fine-tuned from one checkpoint, one table.

  python -m bert_jax.glue --init_from=CKPT --workdir=W --glue_dir=../shared/data/glue \
      [--tasks=cola,sst2,mrpc,stsb,rte,wnli] [--seeds=3] [--budget=full|short]
  python -m bert_jax.glue --compare W1 W2 ...

CKPT: a bert_jax workdir or step folder, a transformers BERT directory, or `random:<name>` /
`random:<name>:<arg>` for a random initialization of the model (and vocabulary) of
`experiments/<name>.py` (e.g. `random:pretrain_tiny`), the control a pretraining table needs.

Each task x seed is an ordinary run of `experiments/glue.py:<task>` under `W/<task>/s<seed>`
(report.md, eval_results.json, checkpoints), so the suite resumes: finished runs are skipped,
an interrupted one resumes from its checkpoint (bit for bit), and the same command after a
kill -9 finishes with the same numbers. Steps: the task's epochs (experiments/glue.py) over
packed rows of ~32 examples; `--budget=short` caps every task at SHORT_STEPS steps.

Output: `W/glue_results.json`
  {"tasks": {task: {metric: {"median", "min", "max", "seeds": [...]}}}, "average",
   "average_without_wnli", "budget", "init_from", "runs": {task: {"train_examples", "steps",
   "wall_s"}}}
and `W/glue_report.md` (official metrics x 100, median over seeds with min-max; the GLUE
average as the leaderboard takes it: the mean over tasks of each task's mean official metric).
Scores are on the dev sets (GLUE's test labels are not public).

QNLI is not in the default tasks: its train file is not available offline. `--tasks=...,qnli`
trains it where `<glue_dir>/QNLI/train.tsv` (or TFDS glue/qnli) exists.
"""

from __future__ import annotations

import math
import os
import statistics
import time

from absl import flags, logging

from bert_jax import errors, fileio
from bert_jax.datasets.glue_tsv import SPECS
from bert_jax.errors import ConfigError

FLAGS = flags.FLAGS

DEFAULT_TASKS = ("cola", "sst2", "mrpc", "stsb", "rte", "wnli")
SHORT_STEPS = 250
# The official dev metric(s) of each task (GLUE, Wang et al., 2019, table 1).
OFFICIAL = {task: spec.metrics for task, spec in SPECS.items()}
TITLE = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "rte": "RTE",
         "wnli": "WNLI", "qnli": "QNLI"}
METRIC_TITLE = {"matthews_corrcoef": "MCC", "accuracy": "acc", "f1": "F1", "pearson": "Pearson",
                "spearman": "Spearman"}
RESULTS_FILE, REPORT_FILE, SUITE_FILE, RUN_FILE = (
    "glue_results.json", "glue_report.md", "glue_suite.json", "glue_run.json")


def define_flags():
  flags.DEFINE_string("init_from", None, "A bert_jax workdir/step folder, a transformers "
                      "directory, or random:<experiment>[:<arg>].")
  flags.DEFINE_string("workdir", None, "The suite's directory (one run per task and seed).")
  flags.DEFINE_list("tasks", list(DEFAULT_TASKS), "GLUE tasks, TFDS names.")
  flags.DEFINE_integer("seeds", 3, "Seeds per task (0 .. seeds-1).")
  flags.DEFINE_enum("budget", "full", ["full", "short"], f"short: at most {SHORT_STEPS} steps "
                    "a task.")
  flags.DEFINE_string("glue_dir", os.environ.get("BERT_JAX_GLUE_DIR", ""), "Folder holding "
                      "CoLA/, SST-2/, ... (GLUE TSVs); empty: TFDS glue/<task>.")
  flags.DEFINE_string("data_dir", "", "TFDS data directory (prepared data).")
  flags.DEFINE_float("learning_rate", None, "Override experiments/glue.py's learning rate.")
  flags.DEFINE_integer("max_steps", None, "Cap every task at this many steps (quick runs).")
  flags.DEFINE_list("compare", [], "Print the tables of these suite workdirs side by side.")


# ============================================================================ one run


def resolve_init(init_from: str) -> tuple[str, dict, str]:
  """(config.init_from, model overrides, vocab file) of the suite's CKPT argument."""
  if not init_from.startswith("random:"):
    if not os.path.exists(init_from):
      raise ConfigError(f"--init_from={init_from!r} does not exist (a bert_jax workdir, a "
                        "transformers directory, or random:<experiment>)")
    return init_from, {}, ""
  name, _, arg = init_from[len("random:"):].partition(":")
  import importlib
  try:
    module = importlib.import_module(f"experiments.{name}")
  except ImportError:
    raise ConfigError(f"--init_from={init_from!r}: no experiment config experiments/{name}.py "
                      "(run from the repository root)") from None
  source = module.get_config(arg) if arg else module.get_config()
  return "", source.model.to_dict(), source.data.get("vocab_file", "")


def run_config(task: str, seed: int, *, init_from: str, glue_dir: str, data_dir: str = "",
               learning_rate: float | None = None):
  """`experiments/glue.py:<task>` for this seed and checkpoint (steps not yet set)."""
  from experiments import glue as exp
  c = exp.get_config(task)
  c.seed = seed
  c.init_from, model, vocab = resolve_init(init_from)
  if model:
    c.model.update(model)
  if vocab:
    c.data.vocab_file = vocab
  if glue_dir:
    c.data.glue_dir = os.path.abspath(glue_dir)
  else:
    exp.use_tfds(c, task)
  if data_dir:
    c.data.data_dir = data_dir
  if learning_rate is not None:
    c.optimizer.learning_rate = learning_rate
  return c


def set_steps(c, task: str, *, budget: str, max_steps: int | None = None,
              plan: dict | None = None) -> dict:
  """Sets rows per step and num_train_steps from the packed training split (`plan`, computed
  here when not given); returns the plan."""
  import jax

  from bert_jax import restore, tasks
  from experiments import glue as exp
  if c.init_from and not c.data.vocab_file:
    c.data.vocab_file = restore.pretrained_vocab_file(c) or c.data.vocab_file
  plan = plan or tasks.packing_plan(c)
  ways = jax.device_count()
  c.batch_size = max(1, round(exp.EXAMPLES_PER_STEP / plan["examples_per_row"] / ways)) * ways
  steps = math.ceil(exp.EPOCHS[task] * plan["packed_rows"] / c.batch_size)
  cap = max_steps or (SHORT_STEPS if budget == "short" else None)
  c.num_train_steps = min(steps, cap) if cap else steps
  c.checkpoint_every_steps = max(1, min(c.checkpoint_every_steps, c.num_train_steps // 4 or 1))
  c.log_every_steps = max(1, min(c.log_every_steps, c.num_train_steps))
  return plan


def finished(workdir: str, num_train_steps: int) -> dict | None:
  """The final eval results of a completed run in `workdir`, else None."""
  try:
    results = fileio.read_json(os.path.join(workdir, "eval_results.json"))
  except (FileNotFoundError, errors.DataError):
    return None
  done = results.get("step") == num_train_steps and os.path.exists(
      os.path.join(workdir, "report.md"))
  return results if done else None


def run_one(c, workdir: str, plan: dict) -> dict:
  """Trains (or resumes) one run; its eval results. Wall time adds up over the legs."""
  from bert_jax import train
  info_path = os.path.join(workdir, RUN_FILE)
  info = _read_json(info_path) or {"wall_s": 0.0}
  results = finished(workdir, c.num_train_steps)
  if results is not None:
    return results
  t = time.time()
  train.train_and_evaluate(c, workdir)
  info.update(wall_s=info["wall_s"] + time.time() - t, steps=c.num_train_steps,
              rows_per_step=c.batch_size, train_examples=plan["examples"],
              examples_per_row=plan["examples_per_row"])
  fileio.write_json_atomic(info_path, info)
  results = finished(workdir, c.num_train_steps)
  if results is None:
    raise RuntimeError(f"{workdir}: the run ended without final results (preempted?); "
                       "rerun the same command to resume it")
  return results


# ============================================================================ the suite


def check_suite(workdir: str, settings: dict) -> None:
  """The suite's settings are recorded once; another command on the same workdir is refused."""
  path = os.path.join(workdir, SUITE_FILE)
  recorded = _read_json(path)
  if recorded is None:
    os.makedirs(workdir, exist_ok=True)
    fileio.write_json_atomic(path, settings)
    return
  for key in ("init_from", "budget", "glue_dir", "learning_rate", "max_steps"):
    if recorded.get(key) != settings.get(key):
      raise ConfigError(f"{workdir} holds a GLUE suite with {key}={recorded.get(key)!r}, not "
                        f"{settings.get(key)!r}; use another --workdir")


def run_suite(*, init_from: str, workdir: str, tasks: list[str], seeds: int, budget: str,
              glue_dir: str, data_dir: str = "", learning_rate: float | None = None,
              max_steps: int | None = None) -> dict:
  """Runs (or resumes) every task x seed; writes and returns glue_results.json's content."""
  from experiments import glue as exp
  unknown = [t for t in tasks if t not in exp.TASKS]
  if unknown:
    raise ConfigError(f"--tasks: unknown GLUE task {unknown[0]!r} (tasks: "
                      f"{', '.join(exp.TASKS)})")
  if seeds < 1:
    raise ConfigError(f"--seeds={seeds}: need at least 1")
  resolve_init(init_from)  # a wrong CKPT is said before any data is read
  workdir = os.path.abspath(workdir)
  check_suite(workdir, {"init_from": init_from, "budget": budget, "glue_dir": glue_dir,
                        "learning_rate": learning_rate, "max_steps": max_steps,
                        "tasks": list(tasks), "seeds": seeds})
  runs = [(t, s) for t in tasks for s in range(seeds)]
  done_wall, plans, t_start = [], {}, time.time()
  for k, (task, seed) in enumerate(runs):
    c = run_config(task, seed, init_from=init_from, glue_dir=glue_dir, data_dir=data_dir,
                   learning_rate=learning_rate)
    plans[task] = set_steps(c, task, budget=budget, max_steps=max_steps, plan=plans.get(task))
    plan = plans[task]
    run_dir = os.path.join(workdir, task, f"s{seed}")
    logging.info("glue: run %d/%d: %s seed %d, %d steps of %d packed rows (%d examples)",
                 k + 1, len(runs), task, seed, c.num_train_steps, c.batch_size,
                 plan["examples"])
    t = time.time()
    skipped = finished(run_dir, c.num_train_steps) is not None
    results = run_one(c, run_dir, plan)
    if not skipped:
      done_wall.append(time.time() - t)
    eta = statistics.mean(done_wall) * (len(runs) - k - 1) if done_wall else float("nan")
    logging.info("glue: %d/%d done (%s seed %d: %s)%s; elapsed %.0f s, ETA %s", k + 1,
                 len(runs), task, seed, _official_line(task, results),
                 " (finished earlier)" if skipped else "", time.time() - t_start,
                 "unknown" if math.isnan(eta) else f"{eta / 60:.1f} min")
  summary = collect(workdir, tasks, seeds, init_from=init_from, budget=budget,
                    max_steps=max_steps)
  fileio.write_json_atomic(os.path.join(workdir, RESULTS_FILE), summary)
  write_report(os.path.join(workdir, REPORT_FILE), summary)
  return summary


def collect(workdir: str, tasks: list[str], seeds: int, *, init_from: str, budget: str,
            max_steps: int | None = None) -> dict:
  """glue_results.json from the runs' eval_results.json (see the module docstring)."""
  out = {"tasks": {}, "runs": {}, "budget": budget, "init_from": init_from,
         "max_steps": max_steps or (SHORT_STEPS if budget == "short" else None),
         "split": "validation (dev)"}
  for task in tasks:
    per_seed = [_read_json(os.path.join(workdir, task, f"s{s}", "eval_results.json"))
                for s in range(seeds)]
    infos = [_read_json(os.path.join(workdir, task, f"s{s}", RUN_FILE)) or {}
             for s in range(seeds)]
    metrics = sorted({k for r in per_seed for k, v in r.items()
                      if isinstance(v, (int, float)) and k != "step"})
    out["tasks"][task] = {m: _spread([float(r[m]) for r in per_seed]) for m in metrics}
    out["runs"][task] = {"train_examples": infos[0].get("train_examples"),
                         "steps": infos[0].get("steps"),
                         "wall_s": [round(i.get("wall_s", float("nan")), 1) for i in infos]}
  out["average"] = glue_average(out["tasks"])
  out["average_without_wnli"] = glue_average({t: v for t, v in out["tasks"].items()
                                              if t != "wnli"})
  return out


def glue_average(task_metrics: dict) -> float | None:
  """The leaderboard's average: the mean over tasks of each task's mean official metric
  (median over seeds); None without tasks."""
  scores = [statistics.mean(task_metrics[t][m]["median"] for m in OFFICIAL[t])
            for t in task_metrics]
  return statistics.mean(scores) if scores else None


def _spread(values: list[float]) -> dict:
  return {"median": statistics.median(values), "min": min(values), "max": max(values),
          "seeds": values}


def _official_line(task: str, results: dict) -> str:
  return ", ".join(f"{m} {results.get(m, float('nan')):.4f}" for m in OFFICIAL[task])


# ============================================================================ tables


def _cell(stats: dict | None) -> str:
  if not stats:
    return "-"
  if len(stats["seeds"]) == 1:
    return f"{100 * stats['median']:.1f}"
  return f"{100 * stats['median']:.1f} ({100 * stats['min']:.1f}-{100 * stats['max']:.1f})"


def table_lines(summary: dict) -> list[str]:
  """Per task its official metrics (x 100, median (min-max) over seeds), examples, steps."""
  from bert_jax import glue_published
  lines = ["| task | metric | ours: median (min-max) | seeds | train examples | steps | "
           f"wall s (per seed) | {glue_published.HEADER} |", "|---|---|---|---|---|---|---|---|"]
  for task, metrics in summary["tasks"].items():
    run = summary["runs"].get(task, {})
    for m in OFFICIAL[task]:
      stats = metrics.get(m)
      n = len(stats["seeds"]) if stats else 0
      wall = ", ".join(f"{w:.0f}" for w in run.get("wall_s", []) if not math.isnan(w))
      lines.append(f"| {TITLE[task]} | {METRIC_TITLE[m]} | {_cell(stats)} | {n} | "
                   f"{run.get('train_examples') or '-'} | {run.get('steps') or '-'} | "
                   f"{wall or '-'} | {glue_published.cell(task, m)} |")
  tasks = list(summary["tasks"])
  for key, title, row_tasks in (
      ("average", "GLUE average", tasks),
      ("average_without_wnli", "GLUE average without WNLI", [t for t in tasks if t != "wnli"])):
    value = summary.get(key)
    shown = "-" if value is None else f"**{100 * value:.1f}**"
    published = glue_published.average_cell(OFFICIAL, row_tasks)
    lines.append(f"| {title} | | {shown} | | | | | {published} |")
  return lines


def write_report(path: str, summary: dict) -> str:
  """glue_report.md: the table, how it was made and the published numbers' sources."""
  from bert_jax import glue_published, report
  cap = summary.get("max_steps")
  budget = (f"short: at most {cap} steps a task" if cap else
            "full: each task's epochs (experiments/glue.py)")
  lines = ["# GLUE (dev sets)", "", f"- Initialization: `{summary['init_from']}`",
           f"- Budget: {budget}; batches of packed rows holding ~32 examples",
           "- Scores x 100 on the dev sets (GLUE's test labels are not public); median over "
           "seeds, (min-max) when there are several",
           "- GLUE average: the mean over tasks of each task's mean official metric", ""]
  lines += table_lines(summary) + [""] + glue_published.source_lines() + [""]
  return report.write_lines(path, lines)


def compare_lines(workdirs: list[str]) -> list[str]:
  """The official metrics of several suites side by side (one column per suite)."""
  summaries = []
  for w in workdirs:
    s = _read_json(os.path.join(w, RESULTS_FILE))
    if s is None:
      raise ConfigError(f"{w}: no {RESULTS_FILE} (run the suite there first)")
    summaries.append(s)
  tasks = [t for t in OFFICIAL if any(t in s["tasks"] for s in summaries)]
  head = "| task | metric | " + " | ".join(
      f"{os.path.basename(os.path.normpath(w))} ({s['init_from']}, {s['budget']})"
      for w, s in zip(workdirs, summaries)) + " |"
  lines = [head, "|---|---|" + "---|" * len(summaries)]
  for task in tasks:
    for m in OFFICIAL[task]:
      cells = [_cell(s["tasks"].get(task, {}).get(m)) for s in summaries]
      lines.append(f"| {TITLE[task]} | {METRIC_TITLE[m]} | " + " | ".join(cells) + " |")
  for key, title in (("average", "GLUE average"), ("average_without_wnli", "without WNLI")):
    cells = ["-" if s.get(key) is None else f"{100 * s[key]:.1f}" for s in summaries]
    lines.append(f"| {title} | | " + " | ".join(cells) + " |")
  return lines


def _read_json(path: str):
  try:
    return fileio.read_json(path, "delete it to redo the run")
  except FileNotFoundError:
    return None


# ============================================================================ CLI


def main(argv):
  from absl import app
  if FLAGS.compare:  # --compare W1 W2 ... (or --compare=W1,W2)
    print("\n".join(compare_lines(list(FLAGS.compare) + list(argv[1:]))))
    return
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.init_from or not FLAGS.workdir:
    raise app.UsageError("usage: python -m bert_jax.glue --init_from=CKPT --workdir=W "
                         "[--tasks=...] [--seeds=3] [--budget=full|short] (or --compare W1 W2)")
  from bert_jax import xla_flags
  xla_flags.use_native_gpu_atomics()  # before jax starts a backend
  import jax
  if jax.default_backend() == "cpu":  # as bert_jax.main: ~1.4x faster CPU steps
    from bert_jax import malloc
    malloc.retain_freed_memory()
  summary = run_suite(init_from=FLAGS.init_from, workdir=FLAGS.workdir, tasks=FLAGS.tasks,
                      seeds=FLAGS.seeds, budget=FLAGS.budget, glue_dir=FLAGS.glue_dir,
                      data_dir=FLAGS.data_dir, learning_rate=FLAGS.learning_rate,
                      max_steps=FLAGS.max_steps)
  print("\n".join(table_lines(summary)))
  print(f"wrote {os.path.join(FLAGS.workdir, RESULTS_FILE)} and {REPORT_FILE}")


if __name__ == "__main__":
  define_flags()
  errors.run_cli(main)
