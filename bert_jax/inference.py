"""Loading a trained model for use: a bert_jax workdir or a transformers BERT directory."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from bert_jax.config import BertConfig


@dataclasses.dataclass
class Loaded:
  config: BertConfig
  params: dict[str, Any]   # the task model's tree: {"bert", "mlm_head"?, "nsp_head"?, "classifier"?}
  task: str                # "pretraining" | "classification" | "transformers"
  vocab_file: str
  label_names: list[str]
  max_seq_length: int


def is_transformers_dir(path: str) -> bool:
  return os.path.exists(os.path.join(path, "config.json")) and any(
      os.path.exists(os.path.join(path, f))
      for f in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"))


def load(path: str, *, head: str | None = None) -> Loaded:
  """Reads a bert_jax workdir (or its checkpoints/ folder) or a transformers directory.

  For a transformers directory `head` is passed to `hf.load_hf_checkpoint` ("mlm" for
  fill-mask, "classification" for a fine-tuned classifier); its vocab.txt is used when present.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint {path} does not exist")
  if is_transformers_dir(path):
    from bert_jax import hf
    from bert_jax.tokenizer import default_vocab_file
    config, params = hf.load_hf_checkpoint(path, head=head)
    if head is None:
      params = {"bert": params}
    vocab = os.path.join(path, "vocab.txt")
    return Loaded(config, params, "transformers", vocab if os.path.exists(vocab)
                  else default_vocab_file(), [], config.max_position_embeddings)
  from bert_jax import checkpoint
  params, meta = checkpoint.restore_params(path)
  from bert_jax.tokenizer import resolve_vocab_file
  return Loaded(BertConfig(**meta["model"]), params, meta["task"],
                resolve_vocab_file(meta.get("vocab_file") or ""), meta.get("label_names") or [],
                int(meta.get("max_seq_length", 128)))
