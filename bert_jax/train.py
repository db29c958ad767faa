"""train_and_evaluate: the one loop for MLM pretraining and classification fine-tuning.

Sections: config -> data -> model and optimizer -> mesh and state (restore order) ->
step functions -> loop (log, eval, checkpoint, preemption) -> final evaluation.

Restore order (logged): resume from `workdir/checkpoints` if it holds a checkpoint; else
`config.init_from` (a bert_jax workdir/checkpoint or a transformers BERT directory; an encoder
goes into a classifier with a fresh head); else fresh initialization from `config.seed`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import signal
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from bert_jax import checkpoint as ckpt_lib
from bert_jax import optim, sharding, steps
from bert_jax.config import BertConfig
from bert_jax.metric_writer import MetricWriter, Progress
from bert_jax.model import BertForMaskedLM, BertForPreTraining, BertForSequenceClassification


class ConfigError(ValueError):
  """A mistake in the experiment config or workdir, reported in one line."""


class NonFiniteLossError(RuntimeError):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


# ============================================================================ config


def model_config(config, vocab_size: int, base: BertConfig | None = None) -> BertConfig:
  """The one place the experiment config becomes a BertConfig.

  `base` (from a pretrained checkpoint) fixes the architecture; the experiment may still set
  dropout and how to compute (dtype, attention, remat, scan).
  """
  fields = {k: v for k, v in config.model.to_dict().items()}
  if base is not None:
    keep = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dtype", "param_dtype",
            "attention_impl", "remat_policy", "scan_layers")
    fields = {**dataclasses.asdict(base), **{k: v for k, v in fields.items() if k in keep}}
  fields["vocab_size"] = fields.get("vocab_size") or vocab_size
  try:
    cfg = BertConfig(**fields)
  except TypeError as e:
    raise ConfigError(f"config.model: {e}") from None
  if cfg.vocab_size != vocab_size:
    raise ConfigError(f"model vocab_size={cfg.vocab_size} but the tokenizer's vocabulary has "
                      f"{vocab_size} entries")
  return cfg


def _check_config(config):
  if config.task not in ("pretraining", "classification"):
    raise ConfigError(f"config.task={config.task!r} is not 'pretraining' or 'classification'")
  for key in ("num_train_steps", "batch_size", "log_every_steps", "eval_every_steps",
              "checkpoint_every_steps"):
    if int(config[key]) <= 0:
      raise ConfigError(f"config.{key} must be positive, got {config[key]!r}")
  if config.parallelism not in ("jit", "pmap"):
    raise ConfigError(f"config.parallelism={config.parallelism!r} is not 'jit' or 'pmap'")


def _run_identity(config, model_cfg: BertConfig) -> dict:
  """What a workdir's checkpoints must agree with to be resumed."""
  return {"task": config.task, "model": {k: v for k, v in dataclasses.asdict(model_cfg).items()},
          "max_seq_length": int(config.data.max_seq_length)}


def _check_workdir(workdir: str, identity: dict):
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    previous = json.load(f).get("_run", {})
  for key in ("task", "max_seq_length"):
    if key in previous and previous[key] != identity[key]:
      raise ConfigError(f"workdir {workdir} holds a run with {key}={previous[key]!r}, this "
                        f"config has {identity[key]!r}; use another --workdir")
  if "model" in previous and previous["model"] != identity["model"]:
    diff = {k: (previous["model"].get(k), v) for k, v in identity["model"].items()
            if previous["model"].get(k) != v}
    raise ConfigError(f"workdir {workdir} holds a run of another model config (was, now): "
                      f"{diff}; use another --workdir")


# ============================================================================ data


def _data_dir(config) -> str | None:
  return config.data.get("data_dir") or None


def make_train_iterator(config):
  from bert_jax import input_pipeline
  make = (input_pipeline.make_pretraining_iterator if config.task == "pretraining"
          else input_pipeline.make_classification_iterator)
  return make(config.data, split=config.data.train_split, global_batch_size=config.batch_size,
              seed=config.seed, shuffle=True, num_epochs=None,
              process_index=jax.process_index(), process_count=jax.process_count(),
              data_dir=_data_dir(config))


def make_eval_iterator(config):
  from bert_jax import input_pipeline
  make = (input_pipeline.make_pretraining_iterator if config.task == "pretraining"
          else input_pipeline.make_classification_iterator)
  return make(config.data, split=config.data.eval_split,
              global_batch_size=config.eval_batch_size, seed=config.seed, shuffle=False,
              num_epochs=1, process_index=jax.process_index(),
              process_count=jax.process_count(), data_dir=_data_dir(config))


# ============================================================================ model + state


@dataclasses.dataclass
class Task:
  """The model and the pure step functions of one experiment, before any parallelism."""

  model: nn.Module
  train_step: Callable   # (state, batch, rng) -> (state, metrics)
  eval_step: Callable    # (params, batch, rng) -> metric sums
  tx: Any
  schedule: Any
  dummy_batch: dict[str, np.ndarray]


def build_task(config, model_cfg: BertConfig, data_info: dict, axis_name: str | None) -> Task:
  tx, schedule = optim.make_optimizer(
      learning_rate=config.optimizer.learning_rate, total_steps=config.num_train_steps,
      warmup_steps=config.optimizer.warmup_steps, name=config.optimizer.name,
      weight_decay=config.optimizer.weight_decay, b1=config.optimizer.b1,
      b2=config.optimizer.b2, eps=config.optimizer.eps,
      clip_norm=config.optimizer.clip_norm)
  seq = int(config.data.max_seq_length)
  dummy = {k: np.zeros((1, seq), np.int32) for k in ("input_ids", "attention_mask",
                                                     "token_type_ids")}
  if config.task == "pretraining":
    nsp = bool(config.data.nsp)
    model = BertForPreTraining(model_cfg) if nsp else BertForMaskedLM(model_cfg)
    masking = steps.MaskingConfig(
        vocab_size=model_cfg.vocab_size, mask_token_id=int(data_info["mask_token_id"]),
        mask_prob=config.masking.mask_prob,
        max_predictions=config.masking.max_predictions_per_seq,
        whole_word=config.masking.whole_word)
    train_step = functools.partial(
        steps.pretrain_step, model=model, tx=tx, masking=masking, nsp=nsp, schedule=schedule,
        grad_accum_steps=config.grad_accum_steps, axis_name=axis_name)
    eval_step = functools.partial(steps.pretrain_eval_step, model=model, masking=masking,
                                  nsp=nsp, axis_name=axis_name)
  else:
    model = BertForSequenceClassification(model_cfg, int(data_info["num_labels"]))
    train_step = functools.partial(
        steps.classification_step, model=model, tx=tx, schedule=schedule,
        grad_accum_steps=config.grad_accum_steps, axis_name=axis_name)
    eval_step = lambda params, batch, rng: steps.classification_eval_step(  # noqa: E731
        params, batch, model=model, axis_name=axis_name)
  return Task(model, train_step, eval_step, tx, schedule, dummy)


def _init_fn(task: Task) -> Callable[[jax.Array], steps.TrainState]:
  """rng -> boxed TrainState (logical axis names on every parameter and moment)."""
  def init(rng):
    b = task.dummy_batch
    variables = task.model.init(rng, jnp.asarray(b["input_ids"]),
                                jnp.asarray(b["attention_mask"]),
                                jnp.asarray(b["token_type_ids"]))
    return steps.create_train_state(variables["params"], task.tx)
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


def load_pretrained(config, task_name: str) -> tuple[BertConfig | None, dict | None, str]:
  """Reads `config.init_from`: (architecture, params in our task's layout, description)."""
  path = config.init_from
  if not path:
    return None, None, ""
  if not os.path.exists(path):
    raise ConfigError(f"config.init_from={path!r} does not exist")
  if os.path.exists(os.path.join(path, "config.json")) and any(
      os.path.exists(os.path.join(path, f)) for f in ("model.safetensors", "pytorch_model.bin")):
    from bert_jax import hf
    head = "mlm" if task_name == "pretraining" else None
    try:
      base, params = hf.load_hf_checkpoint(path, head=head)
    except (KeyError, ValueError):
      base, params = hf.load_hf_checkpoint(path)
      head = None
    if head is None:
      params = {"bert": params}
    return base, params, f"transformers checkpoint {path}"
  params, meta = ckpt_lib.restore_params(path)
  return BertConfig(**meta["model"]), params, f"bert_jax checkpoint {path} ({meta['task']})"


# ============================================================================ the loop


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Trains `config.num_train_steps` steps in `workdir`; returns the final eval metrics."""
  t_start = time.time()
  _check_config(config)
  workdir = os.path.abspath(workdir)
  is_lead = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)

  # --- data: prepared once (cached under data_dir), read through grain.
  from bert_jax import input_pipeline
  from bert_jax.tokenizer import Tokenizer
  data_info = input_pipeline.dataset_info(config.data, _data_dir(config))
  tokenizer = Tokenizer(data_info["vocab_file"])
  data_info["mask_token_id"] = tokenizer.mask_id
  logging.info("Data: %s, examples %s", data_info["name"], data_info["num_examples"])

  # --- model and optimizer.
  base_cfg, pretrained, pretrained_desc = (None, None, "")
  resume_dir = os.path.join(workdir, "checkpoints")
  has_checkpoint = os.path.isdir(resume_dir) and any(
      name.isdigit() for name in os.listdir(resume_dir))
  if config.init_from:
    base_cfg, pretrained, pretrained_desc = load_pretrained(config, config.task)
  model_cfg = model_config(config, data_info["vocab_size"], base_cfg)
  identity = _run_identity(config, model_cfg)
  _check_workdir(workdir, identity)
  if is_lead:
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
      json.dump({**config.to_dict(), "_run": identity}, f, indent=2, default=str)

  pmap = config.parallelism == "pmap"
  task = build_task(config, model_cfg, data_info, sharding.PMAP_AXIS if pmap else None)
  rules = tuple((k, tuple(v) if isinstance(v, list) else v)
                for k, v in config.logical_axis_rules)
  rng = jax.random.key(config.seed)
  init_rng, step_rng, eval_rng = jax.random.split(rng, 3)

  # --- state: created sharded; restore order: workdir, init_from, fresh.
  if pmap:
    runner = sharding.PmapRunner(task.train_step, task.eval_step)
  else:
    runner = sharding.MeshRunner(sharding.make_mesh(dict(config.mesh)), rules,
                                 task.train_step, task.eval_step)
  state = runner.init(_init_fn(task), init_rng)
  checkpointer = ckpt_lib.Checkpointer(resume_dir, max_to_keep=config.keep_checkpoints)
  meta = {"task": config.task, "model": identity["model"], "seed": config.seed,
          "vocab_file": data_info["vocab_file"], "label_names": data_info.get("label_names"),
          "max_seq_length": identity["max_seq_length"],
          "rng": np.asarray(jax.random.key_data(step_rng)).tolist()}
  train_iter = make_train_iterator(config)
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
    state = runner.place(steps.create_train_state(params, task.tx))
    logging.info("Restore: initialized %d parameter arrays from %s; %d fresh", len(loaded),
                 pretrained_desc, len(jax.tree_util.tree_leaves(params)) - len(loaded))
  else:
    logging.info("Restore: fresh initialization from seed %d", config.seed)
  best = (ckpt_lib.Checkpointer(os.path.join(workdir, "best"), max_to_keep=1,
                                best_metric="accuracy")
          if config.task == "classification" else None)

  def evaluate() -> dict[str, float]:
    sums, it = [], make_eval_iterator(config)
    for i, batch in enumerate(it):
      if 0 <= config.num_eval_batches <= i:
        break
      sums.append(runner.eval_step(runner.params(state), runner.put_batch(batch),
                                   runner.put_rng(jax.random.fold_in(eval_rng, i))))
    return steps.summarize(steps.accumulate_metrics(sharding.fetch(sums)))

  def save(step: int, data_state: dict, force: bool = False):
    checkpointer.save(step, runner.host_state(state), data_state=data_state, meta=meta,
                      force=force)

  # --- the loop.
  writer = MetricWriter(workdir, enabled=is_lead)
  progress = Progress(config.num_train_steps, start_step)
  stop = {"signal": None}

  def on_sigterm(signum, _frame):
    stop["signal"] = signum
  previous_handler = signal.signal(signal.SIGTERM, on_sigterm)

  pending: list[tuple[int, dict]] = []  # (step, device metrics) not yet fetched
  window = {"t": time.time()}

  def flush(step: int):
    """Fetches pending metrics, stops on a non-finite loss, writes one train row."""
    if not pending:
      return
    fetched = sharding.fetch([m for _, m in pending])
    for (s, _), m in zip(pending, fetched):
      loss = steps.summarize(steps.accumulate_metrics([m])).get("loss", 0.0)
      if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"loss is {loss} at step {s}; stopping. The last good checkpoint "
            f"(step {checkpointer.latest_step()}) in {resume_dir} is kept.")
    pending.clear()
    summary = steps.summarize(steps.accumulate_metrics(fetched))
    elapsed = time.time() - window["t"]
    summary["tokens_per_sec"] = summary.pop("tokens", 0.0) / max(elapsed, 1e-9)
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
        state, metrics = runner.train_step(state, runner.put_batch(batch), step_rng)
        step += 1
        pending.append((step, metrics))
        if step == start_step + 1:
          jax.block_until_ready(metrics)
          logging.info("First step (compile + run) took %.1f s", time.time() - t)
          progress.start_timing(step)
          flush(step)
        if step % config.log_every_steps == 0 or step == config.num_train_steps:
          flush(step)
        if step % config.eval_every_steps == 0 and step < config.num_train_steps:
          result = evaluate()
          writer.write(step, result, split="eval")
          logging.info("eval at step %d: %s", step, _fmt(result))
          if best is not None:
            best.save(step, runner.host_state(state), data_state=None, meta=meta, metrics=result)
          window["t"] = time.time()  # tokens/s measures training only
        if step % config.checkpoint_every_steps == 0 or step == config.num_train_steps:
          flush(step)  # never checkpoint a state whose loss went non-finite
          save(step, data_state, force=step == config.num_train_steps)
          window["t"] = time.time()
      result = evaluate()
      writer.write(step, result, split="eval")
      logging.info("final eval at step %d: %s", step, _fmt(result))
      if best is not None:
        best.save(step, runner.host_state(state), data_state=None, meta=meta, metrics=result)
      if is_lead:
        with open(os.path.join(workdir, "eval_results.json"), "w", encoding="utf-8") as f:
          json.dump({"step": step, **result}, f, indent=2)
        if config.task == "classification" and jax.process_count() == 1:
          path = _write_report(config, workdir, task, model_cfg,
                               runner.host_state(state).params, tokenizer, data_info,
                               {"step": step, **result}, time.time() - t_start)
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


def _write_report(config, workdir: str, task: Task, model_cfg: BertConfig, params, tokenizer,
                  data_info: dict, eval_results: dict, wall_time_s: float) -> str:
  """report.md after the final classification eval: predictions over the whole eval split."""
  from bert_jax import report
  from bert_jax.model import count_params
  params = jax.device_get(params)
  keys = ("input_ids", "attention_mask", "token_type_ids")
  probs_fn = jax.jit(lambda p, b: jax.nn.softmax(task.model.apply(
      {"params": p}, *(b[k] for k in keys)).astype(jnp.float32), -1))  # [batch, labels]
  texts, labels, probs = [], [], []
  for batch in make_eval_iterator(config):
    real = np.asarray(batch["example_mask"]).astype(bool)  # padding rows are 0
    probs.append(np.asarray(probs_fn(params, {k: batch[k] for k in keys}))[real])
    labels.append(np.asarray(batch["label"])[real])
    texts += [tokenizer.decode(ids) for ids in np.asarray(batch["input_ids"])[real]]
  analysis = report.error_analysis(texts, np.concatenate(labels), np.concatenate(probs),
                                   data_info["label_names"])
  return report.write_report(
      workdir, config_dict=config.to_dict(), model_config=model_cfg,
      num_params=count_params(params), tokenizer=tokenizer, analysis=analysis,
      eval_results=eval_results, wall_time_s=wall_time_s,
      tokens_per_sec=report.train_tokens_per_sec(os.path.join(workdir, "metrics.jsonl")),
      command=report.command_line(),
      device=f"{jax.device_count()} x {jax.devices()[0].device_kind}")


def _fmt(metrics: dict[str, float]) -> str:
  return ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
