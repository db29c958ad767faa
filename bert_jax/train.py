"""train_and_evaluate: the one loop for every task (`bert_jax/tasks/`), named by `config.task`.

Reads top-down: config checks -> `_setup` (data, task, model, optimizer, runner, first state)
-> `_train_loop` (train steps; log, evaluate, checkpoint on their schedules; SIGTERM saves
and stops) -> final evaluation and the task's report (`_finish`). The loop never asks which
task it runs: the task builds the model, the batches, the loss and metrics, and writes its
report. Where the first state comes from (resume, `init_from`, fresh) is `bert_jax.restore`.

`config.budget_minutes` > 0 lays the schedule over wall time, as crammed BERT does: each step's
learning rate is the schedule at elapsed / budget (computed on the host, an input of the pure
step: `steps.LEARNING_RATE`), and the run stops once the budget is spent, saving a checkpoint
of its last step and evaluating as at the end of a normal run. Elapsed time is the loop's wall
time (compilation, evaluations and saves included; setup and the final evaluation not), read
once at the start of each step and kept in every checkpoint's meta (`budget_elapsed_s`), so a
resumed run continues the same budget. `num_train_steps` stays an upper bound.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import signal
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from bert_jax import checkpoint as ckpt_lib
from bert_jax import fileio, inference, ops, optim, restore, sharding, steps, tasks
from bert_jax import workdir as workdir_lib
from bert_jax.config import BertConfig
from bert_jax.errors import ConfigError, NonFiniteLossError
from bert_jax.metric_writer import MetricWriter, Progress

# BertConfig fields that choose how to compute, not what: a run may resume with other values.
COMPUTE_FIELDS = ("dtype", "attention_impl", "kernels", "remat_policy")


__all__ = ["ConfigError", "NonFiniteLossError", "train_and_evaluate", "model_config"]


# ============================================================================ config


def model_config(config, vocab_size: int, base: BertConfig | None = None) -> BertConfig:
  """The one place the experiment config becomes a BertConfig.

  `base` (from a pretrained checkpoint) fixes the architecture; the experiment may still set
  dropout and how to compute (dtype, attention, kernels, remat, scan). "auto" kernels and
  attention are resolved here, once, for this backend (`ops.resolve`).
  """
  fields = {k: v for k, v in config.model.to_dict().items()}
  if base is not None:
    keep = ("hidden_dropout_prob", "attention_probs_dropout_prob", "param_dtype",
            "scan_layers") + COMPUTE_FIELDS
    fixed = dataclasses.asdict(base)
    ignored = {k: (v, fixed[k]) for k, v in fields.items()
               if k not in keep and k in fixed and v not in (0, fixed[k])}
    if ignored:
      logging.warning("config.model fields ignored because init_from fixes the architecture "
                      "(config value -> checkpoint value): %s", ", ".join(
                          f"{k}={a!r} -> {b!r}" for k, (a, b) in sorted(ignored.items())))
    fields = {**fixed, **{k: v for k, v in fields.items() if k in keep}}
  fields["vocab_size"] = fields.get("vocab_size") or vocab_size
  try:
    cfg = BertConfig(**fields)
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.model: {e}") from None
  if cfg.vocab_size != vocab_size:
    raise ConfigError(f"model vocab_size={cfg.vocab_size} but the tokenizer's vocabulary has "
                      f"{vocab_size} entries")
  return ops.resolve(cfg)


def _check_config(config) -> type[tasks.Task]:
  """Config mistakes found before any data is read; returns the task class."""
  if config.task not in tasks.names():
    raise ConfigError(f"config.task={config.task!r} is not a task; tasks: "
                      f"{', '.join(tasks.names())}")
  task_cls = tasks.get(config.task)
  for key in ("num_train_steps", "batch_size", "log_every_steps", "eval_every_steps",
              "checkpoint_every_steps"):
    if int(config[key]) <= 0:
      raise ConfigError(f"config.{key} must be positive, got {config[key]!r}")
  _schedule_shape(config)  # a bad schedule or budget is a ConfigError before any data
  if _budget_seconds(config):
    _budget_warmup_ratio(config)
  if config.data.get("packing", False) and int(config.data.get("max_examples_per_row", 1)) < 1:
    raise ConfigError("config.data.max_examples_per_row must be >= 1 with data.packing, got "
                      f"{config.data.max_examples_per_row!r}")
  if config.parallelism not in ("jit", "pmap"):
    raise ConfigError(f"config.parallelism={config.parallelism!r} is not 'jit' or 'pmap'")
  seq, positions = int(config.data.max_seq_length), int(config.model.max_position_embeddings)
  if not config.init_from and seq > positions:
    raise ConfigError(f"config.data.max_seq_length={seq} exceeds "
                      f"config.model.max_position_embeddings={positions}")
  if config.parallelism == "pmap":
    devices, where = jax.device_count(), f"{jax.device_count()} devices (pmap)"
  else:
    try:
      shape = sharding.mesh_shape(dict(config.mesh), jax.device_count())
    except ValueError as e:
      raise ConfigError(f"config.mesh: {e}") from None
    devices = int(np.prod(shape[:2]))  # the batch is split over (data, fsdp)
    where = f"the mesh {dict(zip(sharding.MESH_AXES, shape))} ({devices}-way batch)"
  for key in ("batch_size", "eval_batch_size"):
    if int(config[key]) % devices:
      raise ConfigError(f"config.{key}={config[key]} does not divide over {where}")
  return task_cls


def _warmup_steps(config) -> int:
  """`optim.warmup_steps` of the config (ratio, or the absolute override); warns when warmup
  takes more than half of the run."""
  opt, total = config.optimizer, int(config.num_train_steps)
  try:
    warmup = optim.warmup_steps(total, opt.get("warmup_ratio", 0.0), opt.get("warmup_steps", -1))
  except ValueError as e:
    raise ConfigError(f"config.optimizer: {e}") from None
  if warmup > total / 2:
    logging.warning("Warmup takes %d of the %d steps (more than half of the run): set "
                    "config.optimizer.warmup_ratio, or warmup_steps=-1 to use it.", warmup, total)
  logging.info("Warmup: %d of %d steps", warmup, total)
  return warmup


def _budget_seconds(config) -> float:
  """config.budget_minutes in seconds; 0: off (the schedule runs over num_train_steps)."""
  minutes = float(config.get("budget_minutes", 0) or 0)
  if minutes < 0 or not math.isfinite(minutes):
    raise ConfigError(f"config.budget_minutes must be >= 0 (0: off), got {minutes!r}")
  return 60.0 * minutes


def _schedule_shape(config) -> dict:
  """config.optimizer's schedule and its shape (`optim.schedule_factor`), checked."""
  opt = config.optimizer
  shape = {"decay_ratio": float(opt.get("decay_ratio", 0.2)),
           "cycle_start": float(opt.get("cycle_start", 0.25)),
           "cycle_peak": float(opt.get("cycle_peak", 0.75))}
  name = str(opt.get("schedule", "linear"))
  try:
    optim.check_schedule(name, **shape)
  except ValueError as e:
    raise ConfigError(f"config.optimizer: {e}") from None
  return {"schedule": name, **shape}


def _budget_warmup_ratio(config) -> float:
  """With budget_minutes: warmup is optimizer.warmup_ratio of the budget (not steps)."""
  opt = config.optimizer
  if int(opt.get("warmup_steps", -1)) >= 0:
    raise ConfigError(f"config.optimizer.warmup_steps={opt.warmup_steps} counts steps; with "
                      "budget_minutes set warmup_ratio (a fraction of the budget) and "
                      "warmup_steps=-1")
  ratio = float(opt.get("warmup_ratio", 0.0))
  if not 0.0 <= ratio <= 1.0:
    raise ConfigError(f"config.optimizer: warmup_ratio must be in [0, 1], got {ratio!r}")
  return ratio


def _optimizer_args(config) -> dict:
  """`optim.make_optimizer`'s keyword arguments from config.optimizer (and budget_minutes)."""
  opt = config.optimizer
  args = dict(learning_rate=opt.learning_rate, total_steps=config.num_train_steps,
              name=opt.name, weight_decay=opt.weight_decay, b1=opt.b1, b2=opt.b2,
              eps=opt.eps, clip_norm=opt.clip_norm, **_schedule_shape(config))
  if not _budget_seconds(config):
    return {**args, "warmup_steps": _warmup_steps(config)}
  return {**args, "external_learning_rate": True, "warmup_ratio": _budget_warmup_ratio(config)}


class _Budget:
  """budget_minutes: elapsed wall time (from `clock`, plus `elapsed_before` a resumed run had
  spent) -> the schedule's progress, this step's learning rate, and when to stop."""

  def __init__(self, seconds: float, schedule: Callable[[float], float],
               elapsed_before: float = 0.0, clock: Callable[[], float] = time.monotonic):
    self.seconds, self.schedule, self.clock = seconds, schedule, clock
    self.before, self.t0 = float(elapsed_before), clock()
    self.elapsed_s = self.before

  def measure(self) -> float:
    """Reads the clock (once a step): the elapsed seconds, also kept in `elapsed_s`. With
    several processes, process 0's reading is everyone's, so all stop at the same step."""
    elapsed = self.before + (self.clock() - self.t0)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      elapsed = float(multihost_utils.broadcast_one_to_all(np.float64(elapsed)))
    self.elapsed_s = elapsed
    return elapsed

  def learning_rate(self) -> float:
    return self.schedule(self.elapsed_s / self.seconds)

  def meta(self) -> dict:
    return {"budget_elapsed_s": self.elapsed_s}


def _run_identity(config, model_cfg: BertConfig) -> dict:
  """What a workdir's checkpoints must agree with to be resumed."""
  # The architecture options enter only where they differ from BERT's, so workdirs written
  # before they existed still resume.
  model = {k: v for k, v in model_cfg.identity().items() if k not in COMPUTE_FIELDS}
  return {"task": config.task, "model": model, "max_seq_length": int(config.data.max_seq_length)}


# ============================================================================ setup


@dataclasses.dataclass
class _Run:
  """One run as `_setup` builds it: what the loop, the evaluations and the saves read."""
  config: Any
  workdir: str
  task: tasks.Task
  model: Any                            # the task's Flax model
  model_cfg: BertConfig
  tokenizer: Any
  runner: Any                           # sharding.MeshRunner or sharding.PmapRunner
  checkpointer: ckpt_lib.Checkpointer   # workdir/checkpoints: resume from here
  best: ckpt_lib.Checkpointer | None    # workdir/best: the best evaluation (task.best_metric)
  meta: dict                            # saved with every checkpoint; a resume must agree
  has_eval: bool
  eval_rng: jax.Array
  split_args: dict                      # seed and process split of every iterator
  host_schedule: Callable | None        # budget_minutes: progress -> learning rate

  @property
  def is_lead(self) -> bool:
    return jax.process_index() == 0

  def diverged(self, step: int, what: str) -> NonFiniteLossError:
    return _divergence_error(step, what, self.checkpointer, self.config.optimizer.learning_rate)

  def close(self):
    for checkpointer in (self.checkpointer, self.best):
      if checkpointer is not None:
        checkpointer.wait()
        checkpointer.close()


def _init_fn(model, dummy_batch: dict, tx) -> Callable[[jax.Array], steps.TrainState]:
  """rng -> boxed TrainState (logical axis names on every parameter and moment)."""
  def init(rng):
    b = dummy_batch
    variables = model.init(rng, jnp.asarray(b["input_ids"]), jnp.asarray(b["attention_mask"]),
                           jnp.asarray(b["token_type_ids"]))
    return steps.create_train_state(variables["params"], tx)
  return init


def _read_data(config, task_cls) -> tuple[dict, Any, bool]:
  """(data info, tokenizer, has_eval): the task's data, prepared once (cached under data_dir)
  and read through grain; an `init_from` checkpoint's own vocabulary unless one is named."""
  from bert_jax.datasets.base import check_enough_examples
  from bert_jax.tokenizer import Tokenizer
  if config.init_from and not config.data.vocab_file:
    vocab = restore.pretrained_vocab_file(config)
    if vocab:
      logging.info("data.vocab_file: %s (the vocabulary of init_from)", vocab)
      config.data.vocab_file = vocab
  data_info = task_cls.data_info(config)
  logging.info("Data: %s, examples %s", data_info["name"], data_info["split_sizes"])
  check_enough_examples(data_info, config.data.train_split, int(config.batch_size))
  has_eval = data_info["split_sizes"].get(config.data.eval_split, 0) > 0
  if not has_eval:
    logging.warning("No evaluation: %s has no examples in eval split %r (splits: %s); "
                    "training without evaluation.", data_info["name"], config.data.eval_split,
                    data_info["split_sizes"])
  return data_info, Tokenizer(data_info["vocab_file"]), has_eval


def _make_runner(config, task, model):
  """(runner, tx, host schedule): the optimizer and the pure steps, run by jit on the mesh or
  by pmap; the host schedule (progress -> learning rate) with budget_minutes, else None."""
  args = _optimizer_args(config)
  tx, schedule = optim.make_optimizer(**args)
  host_schedule = schedule if args.get("external_learning_rate") else None
  axis_name = sharding.PMAP_AXIS if config.parallelism == "pmap" else None
  train_fn = functools.partial(steps.train_step, task=task, model=model, tx=tx,
                               schedule=None if host_schedule else schedule,
                               grad_accum_steps=config.grad_accum_steps, axis_name=axis_name)
  eval_fn = functools.partial(steps.eval_step, task=task, model=model, axis_name=axis_name)
  if axis_name is not None:
    return sharding.PmapRunner(train_fn, eval_fn), tx, host_schedule
  rules = tuple((k, tuple(v) if isinstance(v, list) else v)
                for k, v in config.logical_axis_rules)
  mesh = sharding.make_mesh(dict(config.mesh))
  return sharding.MeshRunner(mesh, rules, train_fn, eval_fn), tx, host_schedule


class _Start(NamedTuple):
  """Where the loop starts (`_setup`)."""
  state: steps.TrainState   # the first state (`restore.first_state`), sharded
  step: int                 # its step: 0, or the resumed checkpoint's
  train_iter: Any           # the training batches, at that step's data position
  step_rng: jax.Array       # the base key of every train step, on the devices
  elapsed_s: float          # budget_minutes: the wall time the resumed checkpoint had spent


def _setup(config, workdir: str, task_cls) -> tuple[_Run, _Start]:
  """Data, task, model, optimizer and runner; the first state from `restore.first_state`."""
  data_info, tokenizer, has_eval = _read_data(config, task_cls)
  resume = workdir_lib.has_checkpoint(workdir)
  pretrained = restore.load_pretrained(config, task_cls)
  model_cfg = model_config(config, data_info["vocab_size"], pretrained and pretrained.config)
  task = task_cls.from_config(config, data_info)
  identity = {**_run_identity(config, model_cfg), "task_info": task.checkpoint_info()}
  workdir_lib.check_run(workdir, identity, resume)
  model = task.model(model_cfg)
  runner, tx, host_schedule = _make_runner(config, task, model)
  init_rng, step_rng, eval_rng = jax.random.split(jax.random.key(config.seed), 3)
  dummy = task.dummy_batch(int(config.data.max_seq_length))
  fresh = runner.init(_init_fn(model, dummy, tx), init_rng)  # created sharded
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                       max_to_keep=config.keep_checkpoints)
  meta = {"format": ckpt_lib.FORMAT, "task": config.task, "task_info": identity["task_info"],
          "model": identity["model"], "seed": config.seed, "vocab_file": data_info["vocab_file"],
          "max_seq_length": identity["max_seq_length"],
          "rng": np.asarray(jax.random.key_data(step_rng)).tolist()}
  split_args = dict(seed=config.seed, process_index=jax.process_index(),
                    process_count=jax.process_count())
  train_iter = task.iterator(config, split=config.data.train_split,
                             global_batch_size=config.batch_size, shuffle=True,
                             num_epochs=None, packed=bool(config.data.get("packing", False)),
                             **split_args)
  state, start_step, restored_meta = restore.first_state(
      runner, fresh, checkpointer, meta=meta, resume=resume, pretrained=pretrained, tx=tx,
      train_iter=train_iter, seed=config.seed)
  if jax.process_index() == 0:  # everything is validated: this workdir now holds this run
    workdir_lib.record_run(workdir, config.to_dict(), identity)
  best = (ckpt_lib.Checkpointer(os.path.join(workdir, "best"), max_to_keep=1,
                                best_metric=task.best_metric)
          if task.best_metric and has_eval else None)
  run = _Run(config, workdir, task, model, model_cfg, tokenizer, runner, checkpointer, best,
             meta, has_eval, eval_rng, split_args, host_schedule)
  return run, _Start(state, start_step, train_iter, runner.put_rng(step_rng),
                     float(restored_meta.get("budget_elapsed_s", 0.0)))


# ============================================================================ evaluate, save


@dataclasses.dataclass
class _Eval:
  metrics: dict[str, float]
  outputs: dict[str, np.ndarray]      # the task's per-example outputs (real examples only)
  rows: dict[str, np.ndarray]         # the host fields of those examples (task.host_keys)
  first_batch: dict[str, np.ndarray]  # model inputs of the first batch (inference cost)


def _gather(tree):
  """Per-row arrays of every process, in global row order, as host numpy."""
  if jax.process_count() == 1:
    return jax.tree_util.tree_map(np.asarray, tree)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)


def _concat(chunks: list[dict]) -> dict[str, np.ndarray]:
  if not chunks:
    return {}
  return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def _evaluate(run: _Run, state) -> _Eval:
  """The task's metrics over the eval split (at most config.num_eval_batches batches)."""
  config, task, runner = run.config, run.task, run.runner
  sums, outputs, rows, first_batch = [], [], [], {}
  it = task.iterator(config, split=config.data.eval_split,
                     global_batch_size=config.eval_batch_size, shuffle=False, num_epochs=1,
                     **run.split_args)
  for i, batch in enumerate(it):
    if 0 <= config.num_eval_batches <= i:
      break
    first_batch = first_batch or {k: batch[k] for k in inference.FIELDS}
    s, o = runner.eval_step(runner.params(state), runner.put_batch(task.device_keys(batch)),
                            runner.put_rng(jax.random.fold_in(run.eval_rng, i)))
    sums.append(s)
    if o:
      outputs.append(o)
      rows.append({"example_mask": batch["example_mask"],
                   **{k: batch[k] for k in task.host_keys}})
  metrics = task.summarize(steps.accumulate_metrics(sharding.fetch(sums)))
  outputs, rows = _concat(_gather(outputs)), _concat(_gather(rows))
  if outputs:
    real = rows.pop("example_mask").astype(bool)
    outputs = {k: v[real] for k, v in outputs.items()}
    rows = {k: v[real] for k, v in rows.items()}
    metrics.update(task.host_metrics(config, outputs, rows))
  return _Eval(metrics, outputs, rows, first_batch)


def _evaluate_and_record(run: _Run, state, step: int, writer, *, final: bool) -> _Eval:
  """Evaluates, writes and logs the eval row, and offers the state to `best`; a non-finite
  loss in an evaluation during training stops the run."""
  result = _evaluate(run, state)
  writer.write(step, result.metrics, split="eval")
  logging.info("%s at step %d: %s", "final eval" if final else "eval", step,
               _fmt(result.metrics))
  loss = result.metrics.get("loss", 0.0)
  if not final and not math.isfinite(loss):
    raise run.diverged(step, f"the evaluation loss is {loss} at step {step}")
  if run.best is not None:
    run.best.save(step, run.runner.host_state(state), data_state=None, meta=run.meta,
                  metrics=result.metrics)
  return result


def _save(run: _Run, state, step: int, data_state: dict, last_batch, *, force: bool = False,
          meta: dict | None = None):
  """Saves `step` once the state's own loss on its last training batch (on device) is finite:
  a huge update can leave finite parameters whose next loss is NaN (issue 23), and a saved
  state must resume. `meta`: added to the run's (the budget's elapsed time)."""
  runner = run.runner
  if last_batch is not None:
    sums, _ = runner.eval_step(runner.params(state), last_batch,
                               runner.put_rng(jax.random.fold_in(run.eval_rng, step)))
    loss = run.task.summarize(steps.accumulate_metrics(sharding.fetch([sums])))["loss"]
    if not math.isfinite(loss):
      raise run.diverged(step, f"the state after step {step} gives loss {loss} on its own "
                               "training batch")
  run.checkpointer.save(step, runner.host_state(state), data_state=data_state,
                        meta={**run.meta, **(meta or {})}, force=force)


class _TrainMetrics:
  """Training metrics on their way to the log: fetched from the devices at each `flush` (not
  every step, which would wait for every step), checked for a divergence, written as one row."""

  def __init__(self, run: _Run, writer: MetricWriter, progress: Progress):
    self.run, self.writer, self.progress = run, writer, progress
    self.pending: list[tuple[int, dict]] = []  # (step, device metrics) not yet fetched
    self.restart_clock()

  def restart_clock(self):
    """tokens/s and steps/s measure training only: evaluations and saves restart the clock."""
    self.t = time.time()

  def add(self, step: int, metrics: dict):
    self.pending.append((step, metrics))

  def flush(self, step: int):
    """Fetches pending metrics, stops on a non-finite loss or state, writes one train row."""
    if not self.pending:
      return
    task = self.run.task
    fetched = sharding.fetch([m for _, m in self.pending])
    for (s, _), m in zip(self.pending, fetched):
      summary = task.summarize(steps.accumulate_metrics([m]))
      # The loss is taken before step s's update, the norms after it: a finite loss with
      # non-finite parameters means the state after step s is already lost.
      bad = {k: summary[k] for k in ("loss", "param_norm", "grad_norm")
             if k in summary and not math.isfinite(summary[k])}
      if bad:
        raise self.run.diverged(
            s, ", ".join(f"{k} is {v}" for k, v in bad.items()) + f" at step {s}")
    self.pending.clear()
    summary = task.summarize(steps.accumulate_metrics(fetched))
    elapsed = max(time.time() - self.t, 1e-9)
    summary["tokens_per_sec"] = summary.pop("num_tokens", 0.0) / elapsed
    summary["steps_per_sec"] = len(fetched) / elapsed
    self.restart_clock()
    self.writer.write(step, summary)
    if self.run.is_lead:
      logging.info("%s", self.progress.line(step, summary))


class _Preemption:
  """While active, SIGTERM (a preempted VM, a scheduler's stop) is noted instead of killing
  the process: the loop saves and stops at the next step."""

  signal: int | None = None

  def __enter__(self):
    self._previous = signal.signal(signal.SIGTERM, self._note)
    return self

  def _note(self, signum, _frame):
    self.signal = signum

  def __exit__(self, *exc_info):
    signal.signal(signal.SIGTERM, self._previous)


# ============================================================================ the loop


def train_and_evaluate(config, workdir: str, *, clock: Callable[[], float] | None = None
                       ) -> dict[str, float]:
  """Trains `config.num_train_steps` steps (or `config.budget_minutes` of wall time, at most
  that many steps) in `workdir`; returns the final eval metrics.

  The config is checked before any data is read; the workdir is locked for the whole run (a
  second run on it stops at once, naming this one's pid). `clock`: the budget's clock
  (seconds; time.monotonic), read once a step; tests inject a fake one.
  """
  t_start = time.time()
  task_cls = _check_config(config)
  workdir = os.path.abspath(workdir)
  with workdir_lib.lock(workdir, is_lead=jax.process_index() == 0):
    return _train_and_evaluate(config, workdir, task_cls, t_start, clock or time.monotonic)


def _train_and_evaluate(config, workdir: str, task_cls, t_start: float, clock
                        ) -> dict[str, float]:
  run, start = _setup(config, workdir, task_cls)
  total = int(config.num_train_steps)
  writer = MetricWriter(workdir, enabled=run.is_lead, resume_step=start.step, final_step=total)
  metrics = _TrainMetrics(run, writer, Progress(total, start.step))
  budget = (_Budget(_budget_seconds(config), run.host_schedule, start.elapsed_s, clock)
            if run.host_schedule else None)
  if budget is not None:
    metrics.progress.budget_left = lambda: budget.seconds - budget.elapsed_s
  with _Preemption() as preemption:
    try:
      with run.runner.context():
        state, step, done = _train_loop(run, start, metrics, preemption, budget)
        if not done:
          return {"preempted_at_step": step}
        if not run.has_eval:
          if run.is_lead:
            fileio.write_json_atomic(os.path.join(workdir, "eval_results.json"),
                                   {"step": step, "evaluated": False}, indent=2)
          return {}
        result = _evaluate_and_record(run, state, step, writer, final=True)
        if run.is_lead:
          _finish(run, state, step, result, t_start)
        return result.metrics
    finally:
      run.close()
      writer.close()


def _train_loop(run: _Run, start: _Start, metrics: _TrainMetrics, preemption: _Preemption,
                budget: _Budget | None = None):
  """Steps from `start` to config.num_train_steps (or the end of the `budget`), logging,
  evaluating and checkpointing on their schedules; returns (state, step, done), stopping
  early (saved, done False) on SIGTERM."""
  config, runner, task = run.config, run.runner, run.task
  state, step, train_iter, step_rng, _ = start
  total, start_step = int(config.num_train_steps), step
  data_state, batch, saved = train_iter.get_state(), None, step
  budget_meta = budget.meta if budget else dict
  while step < total:
    if budget is not None and budget.measure() >= budget.seconds:
      metrics.flush(step)
      if step != saved:
        _save(run, state, step, data_state, batch, force=True, meta=budget_meta())
      logging.info("Budget of %.1f min spent (%.1f s) at step %d.", budget.seconds / 60,
                   budget.elapsed_s, step)
      return state, step, True
    if preemption.signal is not None:
      metrics.flush(step)
      _save(run, state, step, data_state, batch, force=True, meta=budget_meta())
      run.checkpointer.wait()
      logging.warning("Preempted (signal %d): saved step %d to %s; exiting.",
                      preemption.signal, step, run.checkpointer.directory)
      return state, step, False
    host_batch = next(train_iter)
    data_state = train_iter.get_state()
    t = time.time()
    device_batch = task.device_keys(host_batch)
    if budget is not None:  # this step's learning rate, as an input of the pure step
      rows = len(next(iter(device_batch.values())))
      device_batch[steps.LEARNING_RATE] = np.full(rows, budget.learning_rate(), np.float32)
    batch = runner.put_batch(device_batch)
    state, step_metrics = runner.train_step(state, batch, step_rng)
    step += 1
    run.checkpointer.check()  # a failed asynchronous save stops the run at once
    metrics.add(step, step_metrics)
    if step == start_step + 1:
      jax.block_until_ready(step_metrics)
      logging.info("First step (compile + run) took %.1f s", time.time() - t)
      metrics.progress.start_timing(step)
      metrics.flush(step)
    if step % config.log_every_steps == 0 or step == total:
      metrics.flush(step)
    if run.has_eval and step % config.eval_every_steps == 0 and step < total:
      _evaluate_and_record(run, state, step, metrics.writer, final=False)
      metrics.restart_clock()
    if step % config.checkpoint_every_steps == 0 or step == total:
      metrics.flush(step)  # never checkpoint a state whose loss went non-finite
      _save(run, state, step, data_state, batch, force=step == total, meta=budget_meta())
      saved = step
      metrics.restart_clock()
  return state, step, True


def _finish(run: _Run, state, step: int, result: _Eval, t_start: float):
  """The lead process's outputs: eval_results.json, the inference cost, the task's report."""
  from bert_jax.model import count_params
  fileio.write_json_atomic(os.path.join(run.workdir, "eval_results.json"),
                           {"step": step, **result.metrics}, indent=2)
  params = jax.device_get(run.runner.host_state(state).params)
  cost = None
  if run.task.measures_inference and result.first_batch:
    cost = inference.measure_cost(run.model, params, result.first_batch)
    logging.info("Inference cost: %.1f examples/s at batch %d x %d; batch-1 p50 %.1f ms",
                 cost["examples_per_s"], cost["batch"], cost["length"], cost["p50_ms"])
  finished = tasks.FinishedRun(
      workdir=run.workdir, config=run.config, model_config=run.model_cfg, params=params,
      num_params=count_params(params), tokenizer=run.tokenizer,
      eval_results={"step": step, **result.metrics}, outputs=result.outputs, rows=result.rows,
      wall_time_s=time.time() - t_start,
      device=f"{jax.device_count()} x {jax.devices()[0].device_kind}", inference_cost=cost)
  for path in run.task.finish(finished):
    logging.info("Wrote %s", path)


def _divergence_error(step: int, what: str, checkpointer, learning_rate: float
                      ) -> NonFiniteLossError:
  """The one line after a divergence: what went non-finite, and the newest checkpoint (every
  saved state was checked to give a finite loss) or, when none was written, the advice."""
  last = checkpointer.latest_step()
  if last is not None:
    return NonFiniteLossError(
        f"training diverged: {what}; stopping without saving it. The last good checkpoint "
        f"is step {last} in {checkpointer.directory} (its own loss was finite).")
  return NonFiniteLossError(
      f"training diverged: {what}; stopping. No checkpoint was written yet: lower "
      f"optimizer.learning_rate (now {learning_rate:g}) or warm up longer "
      "(optimizer.warmup_ratio).")


def _fmt(metrics: dict[str, float]) -> str:
  return ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
