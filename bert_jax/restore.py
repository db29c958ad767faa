"""Where a run's first state comes from, in one place, in this order:

  1. resume    `workdir/checkpoints` holds a checkpoint of this run: its state, step and data
               position (a checkpoint of another config is refused, naming the difference);
  2. init_from `config.init_from` is a bert_jax workdir / step folder or a transformers BERT
               directory: its encoder goes into the task's model, and its head too when it is
               this task's head (`load_pretrained`); the rest is freshly initialized;
  3. fresh     initialization from `config.seed`.

`pretrained_vocab_file` is the vocabulary an `init_from` checkpoint was trained with, which a
fine-tuning run uses unless it names its own. Weights are read here straight from
`checkpoint` (bert_jax) and `hf` (transformers), not through the inference module.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np
from absl import logging

from bert_jax import checkpoint as ckpt_lib
from bert_jax import steps
from bert_jax.config import BertConfig
from bert_jax.errors import ConfigError


@dataclasses.dataclass
class Pretrained:
  """`config.init_from` read: its architecture and parameters in the task model's layout."""
  config: BertConfig
  params: dict[str, Any]   # {"bert": encoder, and the head's subtree when it was loaded}
  description: str         # e.g. "transformers checkpoint /path" (for the log)


def load_pretrained(config, task_cls) -> Pretrained | None:
  """Reads `config.init_from` (None when unset).

  A transformers directory gives its encoder, plus the head when it has this task's head; a
  bert_jax checkpoint of the same task gives everything, of another task only its encoder.
  """
  from bert_jax import hf
  path = config.init_from
  if not path:
    return None
  if not os.path.exists(path):
    raise ConfigError(f"config.init_from={path!r} does not exist")
  if hf.is_transformers_dir(path):
    head = task_cls.init_head(config)
    try:
      base, params = hf.load_hf_checkpoint(path, head=head)
    except (KeyError, ValueError):
      head = None
      base, params = hf.load_hf_checkpoint(path)
    if head is None:  # BertModel's tree is our models' "bert" subtree
      params = {"bert": params}
    return Pretrained(base, params, f"transformers checkpoint {path}")
  params, meta = ckpt_lib.restore_run(path)
  if meta["task"] != config.task:
    params = {"bert": params["bert"]}
  return Pretrained(BertConfig(**meta["model"]), params,
                    f"bert_jax checkpoint {path} ({meta['task']})")


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


def merge_pretrained(fresh: dict, pretrained: dict, where: str) -> tuple[dict, list[str]]:
  """Takes every pretrained leaf (host array) whose path exists in `fresh`; shapes must agree.

  Returns (merged tree, the paths taken); leaves without a pretrained value stay the fresh
  (device) arrays.
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


def first_state(runner, fresh_state, checkpointer, *, meta: dict, resume: bool,
                pretrained: Pretrained | None, tx, train_iter, seed: int):
  """(state, step, meta): the run's first state, in the module's order, and the resumed
  checkpoint's meta ({} when not resumed); logs which one it took.

  `fresh_state` is the freshly initialized, sharded state (it also gives the shardings a
  resumed checkpoint lands in); `train_iter` is moved to the resumed data position.
  """
  if resume and checkpointer.latest_step() is not None:
    try:
      step, restored, data_state, restored_meta = checkpointer.restore(
          runner.abstract(fresh_state), expect_meta=meta)
    except ckpt_lib.CheckpointMismatchError as e:
      raise ConfigError(str(e)) from None
    if data_state:
      train_iter.set_state(data_state)
    logging.info("Restore: resumed from %s at step %d", checkpointer.directory, step)
    return runner.place(restored), step, restored_meta
  if pretrained is not None:
    params, loaded = merge_pretrained(runner.host_state(fresh_state).params,
                                      pretrained.params, pretrained.description)
    logging.info("Restore: initialized %d parameter arrays from %s; %d fresh", len(loaded),
                 pretrained.description, len(jax.tree_util.tree_leaves(params)) - len(loaded))
    return runner.place(steps.create_train_state(params, tx)), 0, {}
  logging.info("Restore: fresh initialization from seed %d", seed)
  return fresh_state, 0, {}
