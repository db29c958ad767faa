"""BertConfig: the model's hyperparameters, one frozen dataclass.

Field names follow transformers' `BertConfig`, so `config.json` files move both ways with
`from_dict` / `to_dict`. The extra fields (`dtype`, `param_dtype`, `attention_impl`,
`kernels`, `remat_policy`, `scan_layers`) choose how the model computes, never what it computes;
`to_dict` leaves them out.

Modern encoder options (defaults: BERT exactly, so a BERT config is unchanged by them):
`norm_position` post | pre, `norm_type` layer_norm | rms_norm, `norm_bias`, `embedding_norm`,
`final_norm`, `feed_forward` dense | gated (act(x W_in) * (x W_gate): GeGLU with hidden_act
"gelu", SwiGLU with "silu"), `attention_bias` / `mlp_bias` (the projections' biases),
`position_embedding_type` absolute | rotary (`rope_theta`; `local_rope_theta` on local layers),
`local_attention` (a window of that many keys, `local_attention // 2` each side, on every layer
but each `global_attn_every_n_layers`-th, counted from layer 0; 0: every layer global), and the
heads' `classifier_bias`, `classifier_activation` (None: hidden_act), `decoder_bias`,
`classifier_pooling`. `type_vocab_size=0` means no token-type table (token_type_ids ignored).

`family` says which transformers classes the config and weights map to (hf.py) and which heads
the task models carry: "bert" (BertModel...: tanh pooler, heads straight on the encoder) or
"modernbert" (ModernBertModel...: no pooler; every classifier reads the tokens through
ModernBERT's prediction head, dense + activation + norm). `from_dict` picks it from
config.json's model_type; `modernbert()` gives ModernBERT's options at any size.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from bert_jax.errors import ConfigError

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu")
FAMILIES = ("bert", "modernbert")
NORM_POSITIONS = ("post", "pre")
NORM_TYPES = ("layer_norm", "rms_norm")
FEED_FORWARDS = ("dense", "gated")
POSITION_TYPES = ("absolute", "rotary")
CLASSIFIER_POOLINGS = ("cls", "mean")
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
  # Architecture options (module docstring); the defaults are BERT's.
  family: str = "bert"            # bert | modernbert: transformers classes and task heads
  norm_position: str = "post"     # post: x = N(x + f(x)); pre: x = x + f(N(x))
  norm_type: str = "layer_norm"   # layer_norm | rms_norm
  norm_bias: bool = True          # LayerNorm with a bias
  embedding_norm: bool = True     # a norm on the embeddings' sum
  final_norm: bool = False        # a norm after the last layer
  feed_forward: str = "dense"     # dense | gated (GLU)
  attention_bias: bool = True     # biases on q, k, v and the attention output
  mlp_bias: bool = True           # biases on the feed-forward projections
  position_embedding_type: str = "absolute"  # absolute (a learned table) | rotary
  rope_theta: float = 10000.0     # rotary base of the global layers
  local_rope_theta: float | None = None  # rotary base of the local layers (None: rope_theta)
  local_attention: int = 0        # local window width in keys (each side // 2); 0: none
  global_attn_every_n_layers: int = 1  # layer i global when i % n == 0, else local
  classifier_bias: bool = True    # bias of the heads' transform dense
  classifier_activation: str | None = None  # the heads' transform activation (None: hidden_act)
  decoder_bias: bool = True       # the MLM decoder's output bias
  classifier_pooling: str = "cls"  # modernbert: the default sentence vector, cls | mean
  # How to compute (not part of transformers' config.json).
  dtype: str = "float32"          # compute dtype of matmuls and activations
  param_dtype: str = "float32"    # storage dtype of parameters
  attention_impl: str = "auto"    # xla | cudnn | einsum | blocked (ops.py); auto: by kernels
  kernels: str = "auto"           # plain | cpu | gpu | tpu kernel set (ops.py); auto: ops.resolve
  remat_policy: str = "none"      # activation checkpointing of each encoder layer
  scan_layers: bool = False       # nn.scan over layers: params stacked on a leading 'layers' axis

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "max_position_embeddings", "global_attn_every_n_layers"):
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
    for name in ("type_vocab_size", "local_attention"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"BertConfig.{name} must be an integer >= 0, got {value!r}")
    for name in ("rope_theta", "local_rope_theta"):
      value = getattr(self, name)
      if value is not None and not value > 0:
        raise ConfigError(f"BertConfig.{name} must be positive, got {value!r}")
    if self.position_embedding_type == "rotary" and self.head_dim % 2:
      raise ConfigError(f"BertConfig.position_embedding_type='rotary' needs an even head_dim, "
                        f"got {self.head_dim}")
    if self.scan_layers and not self.uniform_layers:
      raise ConfigError("BertConfig.scan_layers=True needs identical layers: local_attention="
                        f"{self.local_attention} with global_attn_every_n_layers="
                        f"{self.global_attn_every_n_layers}, or pre-norm with an embedding norm "
                        "(layer 0 has no attention norm), makes them differ")
    self._check_choice("hidden_act", ACTIVATIONS)
    if self.classifier_activation is not None:
      self._check_choice("classifier_activation", ACTIVATIONS)
    self._check_choice("family", FAMILIES)
    self._check_choice("norm_position", NORM_POSITIONS)
    self._check_choice("norm_type", NORM_TYPES)
    self._check_choice("feed_forward", FEED_FORWARDS)
    self._check_choice("position_embedding_type", POSITION_TYPES)
    self._check_choice("classifier_pooling", CLASSIFIER_POOLINGS)
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

  def is_local(self, layer: int) -> bool:
    """Whether layer `layer` attends in a local window (`local_attention` keys)."""
    return self.local_attention > 0 and layer % self.global_attn_every_n_layers != 0

  def skips_attention_norm(self, layer: int) -> bool:
    """Pre-norm layer 0 reads the embedding norm's output as is (ModernBERT's Identity)."""
    return layer == 0 and self.norm_position == "pre" and self.embedding_norm

  @property
  def uniform_layers(self) -> bool:
    """Whether every layer has the same structure (what scan_layers needs)."""
    n = self.num_hidden_layers
    return (len({self.is_local(i) for i in range(n)}) == 1
            and len({self.skips_attention_norm(i) for i in range(n)}) == 1)

  @property
  def has_pooler(self) -> bool:
    """BERT's tanh [CLS] pooling layer; ModernBERT has none."""
    return self.family == "bert"

  @property
  def head_transform(self) -> bool:
    """Whether the classifier heads read through a dense + activation + norm (ModernBERT)."""
    return self.family == "modernbert"

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  @property
  def storage_dtype(self):
    return DTYPES[self.param_dtype]

  def changed_options(self) -> dict[str, Any]:
    """The architecture options (module docstring) that differ from BERT's: {name: value}."""
    return {k: getattr(self, k) for k, v in _OPTIONS.items() if getattr(self, k) != v}

  def identity(self) -> dict[str, Any]:
    """The fields as a dict, the architecture options only where they differ from BERT's: a
    BERT config's identity is what it was before the options existed (checkpoints' meta)."""
    d = dataclasses.asdict(self)
    return {k: v for k, v in d.items() if k not in _OPTIONS or k in self.changed_options()}

  def replace(self, **changes) -> "BertConfig":
    return dataclasses.replace(self, **changes)

  # transformers' config.json ------------------------------------------------------------------

  @classmethod
  def from_dict(cls, d: dict[str, Any], **overrides) -> "BertConfig":
    """Builds a config from transformers' `config.json` contents (unknown BERT keys rejected);
    model_type "modernbert" reads ModernBertConfig's keys (`modernbert_config.from_hf`)."""
    if d.get("model_type") == "modernbert":
      from bert_jax import modernbert_config  # pylint: disable=import-outside-toplevel
      return cls(**{**modernbert_config.from_hf(d), **overrides})
    names = {f.name for f in dataclasses.fields(cls)} - set(_OPTIONS)
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
    """transformers' `config.json` contents for `BertModel` / `BertForMaskedLM` (family
    "modernbert": for `ModernBertModel`..., `modernbert_config.to_hf`)."""
    if self.family == "modernbert":
      from bert_jax import modernbert_config  # pylint: disable=import-outside-toplevel
      return modernbert_config.to_hf(self)
    changed = sorted(self.changed_options())
    if changed or self.type_vocab_size == 0:
      raise ConfigError(f"transformers' BertConfig cannot express the options "
                        f"{changed or ['type_vocab_size']}; family='bert' writes BERT only")
    d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    for name in ("dtype", "param_dtype", "attention_impl", "kernels", "remat_policy",
                 "scan_layers", *_OPTIONS):
      d.pop(name)
    d.update(model_type="bert", architectures=["BertForMaskedLM"],
             position_embedding_type="absolute", dtype="float32")
    return d


# The architecture options and their BERT values (transformers' BertConfig has none of them).
_OPTIONS = {f.name: f.default for f in dataclasses.fields(BertConfig)
            if f.name in ("family", "norm_position", "norm_type", "norm_bias", "embedding_norm",
                          "final_norm", "feed_forward", "attention_bias", "mlp_bias",
                          "position_embedding_type", "rope_theta", "local_rope_theta",
                          "local_attention", "global_attn_every_n_layers", "classifier_bias",
                          "classifier_activation", "decoder_bias", "classifier_pooling")}
