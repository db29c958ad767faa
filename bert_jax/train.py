"""train_and_evaluate: the one loop for every task (`bert_jax/tasks/`), named by `config.task`.

Sections: config -> data -> model and optimizer -> mesh and state (restore order) ->
step functions -> loop (log, eval, checkpoint, preemption) -> final evaluation and report.
The loop never asks which task it runs: the task builds the model, the batches, the loss and
metrics, and writes its report.

Restore order (logged): resume from `workdir/checkpoints` if it holds a checkpoint; else
`config.init_from` (a bert_jax workdir/checkpoint or a transformers BERT directory; the
encoder goes into the task's model with a fresh head unless the head matches); else fresh
initialization from `config.seed`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import signal
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from bert_jax import checkpoint as ckpt_lib
from bert_jax import inference, ops, optim, sharding, steps, tasks
from bert_jax import workdir as workdir_lib
from bert_jax.config import BertConfig
from bert_jax.errors import ConfigError, NonFiniteLossError
from bert_jax.metric_writer import MetricWriter, Progress

# Checkpoint metadata format: 2 = task modules (task name + task settings in "task_info").
CHECKPOINT_FORMAT = 2
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


def _run_identity(config, model_cfg: BertConfig) -> dict:
  """What a workdir's checkpoints must agree with to be resumed."""
  model = {k: v for k, v in dataclasses.asdict(model_cfg).items() if k not in COMPUTE_FIELDS}
  return {"task": config.task, "model": model, "max_seq_length": int(config.data.max_seq_length)}


# ============================================================================ model + state


def _init_fn(model, dummy_batch: dict, tx) -> Callable[[jax.Array], steps.TrainState]:
  """rng -> boxed TrainState (logical axis names on every parameter and moment)."""
  def init(rng):
    b = dummy_batch
    variables = model.init(rng, jnp.asarray(b["input_ids"]), jnp.asarray(b["attention_mask"]),
                           jnp.asarray(b["token_type_ids"]))
    return steps.create_train_state(variables["params"], tx)
  return init


def _merge_pretrained(fresh: dict, pretrained: dict, where: str) -> tuple[dict, list[str]]:
  """Takes every pretrained leaf (host array) whose path exists in `fresh`; shapes must agree.

  Leaves without a pretrained value stay the fresh (device) arrays.
  """
  loaded = []
  flat_pre = {jax.tree_util.keystr(p): v
              for p, v in jax.tree_util.tree_leaves_with_path(pretrained)}

  def take(path, x):
    key = jax.tree_util.keystr(path)
    if key not in flat_pre:
      return x
    y = flat_pre[key]
    if tuple(y.shape) != tuple(x.shape):
      raise ConfigError(f"init_from {where}: {key} has shape {tuple(y.shape)}, the model "
                        f"expects {tuple(x.shape)}")
    loaded.append(key)
    return np.asarray(y, x.dtype)
  merged = jax.tree_util.tree_map_with_path(take, fresh)
  return merged, loaded


def load_pretrained(config, task_cls: type[tasks.Task]
                    ) -> tuple[BertConfig | None, dict | None, str]:
  """Reads `config.init_from`: (architecture, params in our model's layout, description).

  A transformers directory gives its encoder, plus the head when it has this task's head; a
  bert_jax checkpoint of the same task gives everything, of another task only its encoder.
  """
  path = config.init_from
  if not path:
    return None, None, ""
  if not os.path.exists(path):
    raise ConfigError(f"config.init_from={path!r} does not exist")
  from bert_jax import hf, inference
  if hf.is_transformers_dir(path):
    head = task_cls.init_head(config)
    try:
      base, params = hf.load_hf_checkpoint(path, head=head)
    except (KeyError, ValueError):
      head = None
      base, params = hf.load_hf_checkpoint(path)
    if head is None:  # BertModel's tree is our models' "bert" subtree
      params = {"bert": params}
    return base, params, f"transformers checkpoint {path}"
  loaded = inference.load(path)
  params = loaded.params
  if loaded.task_name != config.task:
    params = {"bert": params["bert"]}
  return loaded.config, params, f"bert_jax checkpoint {path} ({loaded.task_name})"


def pretrained_vocab_file(config) -> str:
  """The vocabulary a bert_jax `init_from` checkpoint was trained with, when it is not the
  default one ("" otherwise, or for a transformers directory, which uses the default)."""
  from bert_jax import hf
  from bert_jax.tokenizer import default_vocab_file, resolve_vocab_file
  path = config.init_from
  if not path or not os.path.exists(path) or hf.is_transformers_dir(path):
    return ""
  try:
    vocab = ckpt_lib.read_newest_meta(path).get("vocab_file") or ""
  except FileNotFoundError:
    return ""  # load_pretrained says what is wrong with init_from
  vocab = resolve_vocab_file(vocab) if vocab else ""
  if not vocab or vocab == default_vocab_file():
    return ""
  if not os.path.isfile(vocab):
    raise ConfigError(f"config.init_from={path!r} was trained with vocabulary {vocab}, which "
                      "no longer exists; pass it as --config.data.vocab_file")
  return vocab


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


# ============================================================================ the loop


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Trains `config.num_train_steps` steps in `workdir`; returns the final eval metrics.

  The config is checked before any data is read; the workdir is locked for the whole run (a
  second run on it stops at once, naming this one's pid).
  """
  t_start = time.time()
  task_cls = _check_config(config)
  workdir = os.path.abspath(workdir)
  with workdir_lib.lock(workdir, is_lead=jax.process_index() == 0):
    return _train_and_evaluate(config, workdir, task_cls, t_start)


def _train_and_evaluate(config, workdir: str, task_cls, t_start: float) -> dict[str, float]:
  is_lead = jax.process_index() == 0
  if config.init_from and not config.data.vocab_file:
    vocab = pretrained_vocab_file(config)  # fine-tune with the vocabulary it was trained on
    if vocab:
      logging.info("data.vocab_file: %s (the vocabulary of init_from)", vocab)
      config.data.vocab_file = vocab

  # --- data: prepared once (cached under data_dir), read through grain.
  from bert_jax.datasets.base import check_enough_examples
  from bert_jax.tokenizer import Tokenizer
  data_info = task_cls.data_info(config)
  tokenizer = Tokenizer(data_info["vocab_file"])
  logging.info("Data: %s, examples %s", data_info["name"], data_info["num_examples"])
  check_enough_examples(data_info, config.data.train_split, int(config.batch_size))
  has_eval = data_info["num_examples"].get(config.data.eval_split, 0) > 0
  if not has_eval:
    logging.warning("No evaluation: %s has no examples in eval split %r (splits: %s); "
                    "training without evaluation.", data_info["name"], config.data.eval_split,
                    data_info["num_examples"])

  # --- task, model and optimizer.
  base_cfg, pretrained, pretrained_desc = (None, None, "")
  resume_dir = os.path.join(workdir, "checkpoints")
  has_checkpoint = workdir_lib.has_checkpoint(workdir)
  if config.init_from:
    base_cfg, pretrained, pretrained_desc = load_pretrained(config, task_cls)
  model_cfg = model_config(config, data_info["vocab_size"], base_cfg)
  task = task_cls.from_config(config, data_info)
  identity = {**_run_identity(config, model_cfg), "task_info": task.checkpoint_info()}
  workdir_lib.check_run(workdir, identity, has_checkpoint)

  pmap = config.parallelism == "pmap"
  axis_name = sharding.PMAP_AXIS if pmap else None
  model = task.model(model_cfg)
  warmup = _warmup_steps(config)
  tx, schedule = optim.make_optimizer(
      learning_rate=config.optimizer.learning_rate, total_steps=config.num_train_steps,
      warmup_steps=warmup, name=config.optimizer.name,
      weight_decay=config.optimizer.weight_decay, b1=config.optimizer.b1,
      b2=config.optimizer.b2, eps=config.optimizer.eps,
      clip_norm=config.optimizer.clip_norm)
  train_fn = functools.partial(steps.train_step, task=task, model=model, tx=tx,
                               schedule=schedule, grad_accum_steps=config.grad_accum_steps,
                               axis_name=axis_name)
  eval_fn = functools.partial(steps.eval_step, task=task, model=model, axis_name=axis_name)
  rules = tuple((k, tuple(v) if isinstance(v, list) else v)
                for k, v in config.logical_axis_rules)
  rng = jax.random.key(config.seed)
  init_rng, step_rng, eval_rng = jax.random.split(rng, 3)

  # --- state: created sharded; restore order: workdir, init_from, fresh.
  if pmap:
    runner = sharding.PmapRunner(train_fn, eval_fn)
  else:
    runner = sharding.MeshRunner(sharding.make_mesh(dict(config.mesh)), rules, train_fn,
                                 eval_fn)
  dummy = task.dummy_batch(int(config.data.max_seq_length))
  state = runner.init(_init_fn(model, dummy, tx), init_rng)
  checkpointer = ckpt_lib.Checkpointer(resume_dir, max_to_keep=config.keep_checkpoints)
  meta = {"format": CHECKPOINT_FORMAT, "task": config.task,
          "task_info": task.checkpoint_info(), "model": identity["model"],
          "seed": config.seed, "vocab_file": data_info["vocab_file"],
          "max_seq_length": identity["max_seq_length"],
          "rng": np.asarray(jax.random.key_data(step_rng)).tolist()}
  split_args = dict(seed=config.seed, process_index=jax.process_index(),
                    process_count=jax.process_count())
  train_iter = task.iterator(config, split=config.data.train_split,
                             global_batch_size=config.batch_size, shuffle=True,
                             num_epochs=None, packed=bool(config.data.get("packing", False)),
                             **split_args)
  start_step = 0
  if has_checkpoint and checkpointer.latest_step() is not None:
    try:
      start_step, restored, data_state, _ = checkpointer.restore(
          runner.abstract(state), expect_meta=meta)
    except ckpt_lib.CheckpointMismatchError as e:
      raise ConfigError(str(e)) from None
    state = runner.place(restored)
    if data_state:
      train_iter.set_state(data_state)
    logging.info("Restore: resumed from %s at step %d", resume_dir, start_step)
  elif pretrained is not None:
    params, loaded = _merge_pretrained(runner.host_state(state).params, pretrained,
                                       pretrained_desc)
    state = runner.place(steps.create_train_state(params, tx))
    logging.info("Restore: initialized %d parameter arrays from %s; %d fresh", len(loaded),
                 pretrained_desc, len(jax.tree_util.tree_leaves(params)) - len(loaded))
  else:
    logging.info("Restore: fresh initialization from seed %d", config.seed)
  if is_lead:  # everything is validated: this workdir now holds this run
    workdir_lib.record_run(workdir, config.to_dict(), identity)
  best = (ckpt_lib.Checkpointer(os.path.join(workdir, "best"), max_to_keep=1,
                                best_metric=task.best_metric)
          if task.best_metric and has_eval else None)

  first_batch: dict[str, np.ndarray] = {}  # of the last evaluation (inference cost)

  def evaluate() -> tuple[dict[str, float], dict, dict]:
    """(metrics, outputs, host rows) over the eval split; outputs/rows of real rows only."""
    sums, outputs, rows = [], [], []
    first_batch.clear()
    it = task.iterator(config, split=config.data.eval_split,
                       global_batch_size=config.eval_batch_size, shuffle=False, num_epochs=1,
                       **split_args)
    for i, batch in enumerate(it):
      if 0 <= config.num_eval_batches <= i:
        break
      if not first_batch:
        first_batch.update({k: batch[k] for k in inference.FIELDS})
      s, o = runner.eval_step(runner.params(state), runner.put_batch(task.device_keys(batch)),
                              runner.put_rng(jax.random.fold_in(eval_rng, i)))
      sums.append(s)
      if o:
        outputs.append(o)
        rows.append({"example_mask": batch["example_mask"],
                     **{k: batch[k] for k in task.host_keys}})
    result = task.summarize(steps.accumulate_metrics(sharding.fetch(sums)))
    outputs, rows = _concat(_gather(outputs)), _concat(_gather(rows))
    if outputs:
      real = rows.pop("example_mask").astype(bool)
      outputs = {k: v[real] for k, v in outputs.items()}
      rows = {k: v[real] for k, v in rows.items()}
      result.update(task.host_metrics(config, outputs, rows))
    return result, outputs, rows

  last_batch: dict = {}  # the newest training batch on device: the save check runs on it

  def diverged(step: int, what: str) -> NonFiniteLossError:
    return _divergence_error(step, what, checkpointer, config.optimizer.learning_rate)

  def save(step: int, data_state: dict, force: bool = False):
    """Saves `step` once the state's own loss on its last training batch is finite: a huge
    update can leave finite parameters whose next loss is NaN (issue 23), and a saved state
    must resume."""
    if last_batch:
      sums, _ = runner.eval_step(runner.params(state), last_batch["batch"],
                                 runner.put_rng(jax.random.fold_in(eval_rng, step)))
      loss = task.summarize(steps.accumulate_metrics(sharding.fetch([sums])))["loss"]
      if not math.isfinite(loss):
        raise diverged(step, f"the state after step {step} gives loss {loss} on its own "
                             "training batch")
    checkpointer.save(step, runner.host_state(state), data_state=data_state, meta=meta,
                      force=force)

  # --- the loop.
  writer = MetricWriter(workdir, enabled=is_lead, resume_step=start_step,
                        final_step=config.num_train_steps)
  progress = Progress(config.num_train_steps, start_step)
  stop = {"signal": None}

  def on_sigterm(signum, _frame):
    stop["signal"] = signum
  previous_handler = signal.signal(signal.SIGTERM, on_sigterm)

  pending: list[tuple[int, dict]] = []  # (step, device metrics) not yet fetched
  window = {"t": time.time()}

  def flush(step: int):
    """Fetches pending metrics, stops on a non-finite loss or state, writes one train row."""
    if not pending:
      return
    fetched = sharding.fetch([m for _, m in pending])
    for (s, _), m in zip(pending, fetched):
      summary = task.summarize(steps.accumulate_metrics([m]))
      # The loss is taken before step s's update, the norms after it: a finite loss with
      # non-finite parameters means the state after step s is already lost.
      bad = {k: summary[k] for k in ("loss", "param_norm", "grad_norm")
             if k in summary and not math.isfinite(summary[k])}
      if bad:
        raise diverged(s, ", ".join(f"{k} is {v}" for k, v in bad.items()) + f" at step {s}")
    pending.clear()
    summary = task.summarize(steps.accumulate_metrics(fetched))
    elapsed = time.time() - window["t"]
    summary["tokens_per_sec"] = summary.pop("num_tokens", 0.0) / max(elapsed, 1e-9)
    summary["steps_per_sec"] = len(fetched) / max(elapsed, 1e-9)
    window["t"] = time.time()
    writer.write(step, summary)
    if is_lead:
      logging.info("%s", progress.line(step, summary))

  data_state = train_iter.get_state()
  step_rng = runner.put_rng(step_rng)
  step = start_step
  try:
    with runner.context():
      while step < config.num_train_steps:
        if stop["signal"] is not None:
          flush(step)
          save(step, data_state, force=True)
          checkpointer.wait()
          logging.warning("Preempted (signal %d): saved step %d to %s; exiting.",
                          stop["signal"], step, resume_dir)
          return {"preempted_at_step": step}
        batch = next(train_iter)
        data_state = train_iter.get_state()
        t = time.time()
        last_batch["batch"] = runner.put_batch(task.device_keys(batch))
        state, metrics = runner.train_step(state, last_batch["batch"], step_rng)
        step += 1
        checkpointer.check()  # a failed asynchronous save stops the run at once
        pending.append((step, metrics))
        if step == start_step + 1:
          jax.block_until_ready(metrics)
          logging.info("First step (compile + run) took %.1f s", time.time() - t)
          progress.start_timing(step)
          flush(step)
        if step % config.log_every_steps == 0 or step == config.num_train_steps:
          flush(step)
        if (has_eval and step % config.eval_every_steps == 0
            and step < config.num_train_steps):
          result, _, _ = evaluate()
          writer.write(step, result, split="eval")
          logging.info("eval at step %d: %s", step, _fmt(result))
          if not math.isfinite(result.get("loss", 0.0)):
            raise diverged(step, f"the evaluation loss is {result['loss']} at step {step}")
          if best is not None:
            best.save(step, runner.host_state(state), data_state=None, meta=meta, metrics=result)
          window["t"] = time.time()  # tokens/s measures training only
        if step % config.checkpoint_every_steps == 0 or step == config.num_train_steps:
          flush(step)  # never checkpoint a state whose loss went non-finite
          save(step, data_state, force=step == config.num_train_steps)
          window["t"] = time.time()
      if not has_eval:
        if is_lead:
          _write_json(os.path.join(workdir, "eval_results.json"),
                      {"step": step, "evaluated": False})
        return {}
      result, outputs, rows = evaluate()
      writer.write(step, result, split="eval")
      logging.info("final eval at step %d: %s", step, _fmt(result))
      if best is not None:
        best.save(step, runner.host_state(state), data_state=None, meta=meta, metrics=result)
      if is_lead:
        _write_json(os.path.join(workdir, "eval_results.json"), {"step": step, **result})
        from bert_jax.model import count_params
        params = jax.device_get(runner.host_state(state).params)
        cost = None
        if task.measures_inference and first_batch:
          cost = inference.measure_cost(model, params, first_batch)
          logging.info("Inference cost: %.1f examples/s at batch %d x %d; batch-1 p50 %.1f ms",
                       cost["examples_per_s"], cost["batch"], cost["length"], cost["p50_ms"])
        finished = tasks.FinishedRun(
            workdir=workdir, config=config, model_config=model_cfg, params=params,
            num_params=count_params(params), tokenizer=tokenizer,
            eval_results={"step": step, **result}, outputs=outputs, rows=rows,
            wall_time_s=time.time() - t_start,
            device=f"{jax.device_count()} x {jax.devices()[0].device_kind}",
            inference_cost=cost)
        for path in task.finish(finished):
          logging.info("Wrote %s", path)
      return result
  finally:
    checkpointer.wait()
    checkpointer.close()
    if best is not None:
      best.wait()
      best.close()
    writer.close()
    signal.signal(signal.SIGTERM, previous_handler)


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


def _write_json(path: str, value) -> None:
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2)
  os.replace(tmp, path)


def _fmt(metrics: dict[str, float]) -> str:
  return ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
