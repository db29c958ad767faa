"""BertConfig: the model's hyperparameters, one frozen dataclass.

Field names follow transformers' `BertConfig`, so `config.json` files move both ways with
`from_dict` / `to_dict`. The extra fields (`dtype`, `param_dtype`, `attention_impl`,
`kernels`, `remat_policy`, `scan_layers`) choose how the model computes, never what it computes;
`to_dict` leaves them out.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from bert_jax.errors import ConfigError

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")
ATTENTION_IMPLS = ("auto", "xla", "cudnn", "einsum", "blocked")
KERNELS = ("auto", "plain", "cpu", "gpu", "tpu")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

# Keys of transformers' config.json that carry no information for this model.
_HF_IGNORED = {
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype",
    "position_embedding_type", "use_cache", "classifier_dropout", "gradient_checkpointing",
    "is_decoder", "add_cross_attention", "chunk_size_feed_forward", "output_attentions",
    "output_hidden_states", "return_dict", "_name_or_path", "id2label", "label2id",
    "problem_type", "tie_word_embeddings", "bos_token_id", "eos_token_id",
    "is_encoder_decoder",
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Hyperparameters of a BERT encoder (defaults: bert-base-uncased)."""

  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  initializer_range: float = 0.02
  layer_norm_eps: float = 1e-12
  pad_token_id: int = 0
  # How to compute (not part of transformers' config.json).
  dtype: str = "float32"          # compute dtype of matmuls and activations
  param_dtype: str = "float32"    # storage dtype of parameters
  attention_impl: str = "auto"    # xla | cudnn | einsum | blocked (ops.py); auto: by kernels
  kernels: str = "auto"           # plain | cpu | gpu | tpu kernel set (ops.py); auto: ops.resolve
  remat_policy: str = "none"      # activation checkpointing of each encoder layer
  scan_layers: bool = False       # nn.scan over layers: params stacked on a leading 'layers' axis

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "max_position_embeddings", "type_vocab_size"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"BertConfig.{name} must be a positive integer, got {value!r}")
    if self.hidden_size % self.num_attention_heads:
      raise ConfigError(
          f"BertConfig.hidden_size={self.hidden_size} is not divisible by "
          f"num_attention_heads={self.num_attention_heads}")
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
      value = getattr(self, name)
      if not 0.0 <= value < 1.0:
        raise ConfigError(f"BertConfig.{name} must be in [0, 1), got {value!r}")
    if self.initializer_range <= 0 or self.layer_norm_eps <= 0:
      raise ConfigError(
          f"BertConfig.initializer_range={self.initializer_range!r} and "
          f"layer_norm_eps={self.layer_norm_eps!r} must be positive")
    if not 0 <= self.pad_token_id < self.vocab_size:
      raise ConfigError(f"BertConfig.pad_token_id={self.pad_token_id} is outside the vocabulary "
                        f"of size {self.vocab_size}")
    self._check_choice("hidden_act", ACTIVATIONS)
    self._check_choice("attention_impl", ATTENTION_IMPLS)
    self._check_choice("kernels", KERNELS)
    self._check_choice("remat_policy", REMAT_POLICIES)
    self._check_choice("dtype", tuple(DTYPES))
    self._check_choice("param_dtype", tuple(DTYPES))

  def _check_choice(self, name: str, choices: tuple[str, ...]):
    value = getattr(self, name)
    if value not in choices:
      raise ConfigError(f"BertConfig.{name}={value!r} is not one of {', '.join(choices)}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  @property
  def storage_dtype(self):
    return DTYPES[self.param_dtype]

  def replace(self, **changes) -> "BertConfig":
    return dataclasses.replace(self, **changes)

  # transformers' config.json ------------------------------------------------------------------

  @classmethod
  def from_dict(cls, d: dict[str, Any], **overrides) -> "BertConfig":
    """Builds a config from transformers' `config.json` contents (unknown BERT keys rejected)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in d if k not in names and k not in _HF_IGNORED)
    if unknown:
      raise ConfigError(f"config.json has keys BertConfig does not know: {unknown}")
    if d.get("position_embedding_type", "absolute") != "absolute":
      raise ConfigError("only position_embedding_type='absolute' is supported, got "
                        f"{d['position_embedding_type']!r}")
    kwargs = {k: v for k, v in d.items() if k in names}
    # transformers writes its storage dtype as "dtype"/"torch_dtype"; ours lives in param_dtype.
    kwargs.pop("dtype", None)
    kwargs.update(overrides)
    return cls(**kwargs)

  def to_dict(self) -> dict[str, Any]:
    """transformers' `config.json` contents for `BertModel` / `BertForMaskedLM`."""
    d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    for name in ("dtype", "param_dtype", "attention_impl", "kernels", "remat_policy",
                 "scan_layers"):
      d.pop(name)
    d.update(model_type="bert", architectures=["BertForMaskedLM"],
             position_embedding_type="absolute", dtype="float32")
    return d
