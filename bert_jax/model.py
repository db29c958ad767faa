"""BERT in Flax linen: embeddings, post-LN encoder, pooler, and the task heads (MLM, NSP,
sequence and token classification, question answering).

Outputs match transformers' PyTorch models on the same weights (see `hf.py` and
tests/test_hf.py). Every parameter carries logical axis names (`axes.py`), so the same
module shards under any mesh. This file is the architecture only: every projection, lookup,
the exact GELU and the attention core go through `ops.*`, which picks the kernel from
`config.kernels` / `config.attention_impl` (see `ops.py`); nothing here asks the backend.
Parameter tree of `BertModel`:

  embeddings/{word_embeddings,position_embeddings,token_type_embeddings}/embedding, layer_norm
  encoder/layer_{i}/attention/{query,key,value}/kernel [embed, heads, kv], bias [heads, kv]
  encoder/layer_{i}/attention/out/kernel [heads, kv, embed], bias [embed]
  encoder/layer_{i}/{attention_norm, intermediate [embed, mlp], output [mlp, embed], output_norm}
  pooler/{kernel, bias}
Heads: mlm_head/{transform, layer_norm, bias}, nsp_head, classifier, qa_outputs/{kernel, bias}.
With `scan_layers=True` the layers live under encoder/layers with a leading 'layers' axis.

The modern options of `BertConfig` (defaults: BERT) change this file's architecture in place:
pre-norm layers (layer 0 without attention_norm after an embedding norm), RMSNorm, no norm or
projection biases, a gated feed-forward (an extra `gate` [embed, mlp] beside `intermediate`),
rotary q/k (`rotary`; no position table), local-window layers (`ops.local_window_mask`), no
token-type table (type_vocab_size=0), a `final_norm`. family="modernbert" drops the pooler and
puts a `head` (`PredictionHead`: transform, layer_norm) before every classifier, as
transformers' ModernBert* models do; `hf.py` maps their weights.

Packed rows (several short examples in one row, `segment_ids`): attention stays inside each
example (a local window too) and positions, absolute or rotary, restart per example, so each
computes what it would alone.

Sentence vectors: `pool(hidden, mask, how)` reduces [batch, length, embed] to [batch, embed] by
one of `POOLINGS` (the sequence classifier's `pooling` and `bert_jax.encode` both use it).
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import axes, ops
from bert_jax.config import BertConfig
from bert_jax.errors import ConfigError

Array = jax.Array


def _dense_init(config: BertConfig, names: tuple[str, ...]):
  return nn.with_logical_partitioning(
      nn.initializers.truncated_normal(config.initializer_range), names)


def _zeros(names: tuple[str, ...]):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def _layer_norm(config: BertConfig, name: str) -> nn.Module:
  """`config.norm_type`: LayerNorm (with a bias when `norm_bias`) or RMSNorm."""
  scale_init = nn.with_logical_partitioning(nn.initializers.ones_init(), (axes.EMBED,))
  if config.norm_type == "rms_norm":
    return nn.RMSNorm(epsilon=config.layer_norm_eps, dtype=config.compute_dtype,
                      param_dtype=config.storage_dtype, scale_init=scale_init, name=name)
  # Exact two-pass variance: the fast E[x^2]-E[x]^2 form drifts from PyTorch by ~1e-5.
  return nn.LayerNorm(
      epsilon=config.layer_norm_eps, dtype=config.compute_dtype,
      param_dtype=config.storage_dtype, use_fast_variance=False, use_bias=config.norm_bias,
      scale_init=scale_init, bias_init=_zeros((axes.EMBED,)), name=name)


def activation(config: BertConfig, name: str | None = None):
  """`config.hidden_act` (or another of `config.ACTIVATIONS`, `name`) as a function: "gelu"
  exact (erf), "gelu_new" / "gelu_pytorch_tanh" the tanh approximation, "relu", "silu"."""
  name = name or config.hidden_act
  if name == "gelu":
    return functools.partial(ops.gelu, config)
  if name in ("gelu_new", "gelu_pytorch_tanh"):
    return functools.partial(jax.nn.gelu, approximate=True)
  if name == "silu":
    return jax.nn.silu
  return jax.nn.relu


def rotary(x: Array, positions: Array, theta: float) -> Array:
  """Rotary position embedding of q or k: x [batch, length, heads, kv] at positions [batch or
  1, length], the pairs (i, i + kv/2) rotated by position / theta^(2i/kv) (transformers'
  rotate-half layout), in float32 -> x's shape and dtype."""
  kv = x.shape[-1]
  inv_freq = 1.0 / (np.float32(theta) ** (np.arange(0, kv, 2, dtype=np.float32) / kv))
  angles = positions[..., None].astype(jnp.float32) * inv_freq  # [batch, length, kv/2]
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # [batch, length, 1, kv]
  x32 = x.astype(jnp.float32)
  first, second = jnp.split(x32, 2, axis=-1)
  rotated = jnp.concatenate([-second, first], axis=-1)
  return (x32 * jnp.cos(angles) + rotated * jnp.sin(angles)).astype(x.dtype)


@flax.struct.dataclass
class BertOutput:
  last_hidden_state: Array  # [batch, length, embed]
  pooler_output: Array | None  # [batch, embed]; None without a pooling layer


class BertEmbeddings(nn.Module):
  """Sum of word, position and segment embeddings, then LayerNorm and dropout. Without
  absolute positions (rotary) or token types (type_vocab_size=0) those tables are absent;
  the LayerNorm only with `embedding_norm`."""

  config: BertConfig

  def setup(self):
    c = self.config
    # The nn.Embed modules only hold the tables (`__call__` below reads them directly).
    embed = functools.partial(nn.Embed, features=c.hidden_size, param_dtype=c.storage_dtype)
    self.word_embeddings = embed(
        c.vocab_size, embedding_init=_dense_init(c, (axes.VOCAB, axes.EMBED)))
    if c.position_embedding_type == "absolute":
      self.position_embeddings = embed(
          c.max_position_embeddings, embedding_init=_dense_init(c, (axes.POSITIONS, axes.EMBED)))
    if c.type_vocab_size:
      self.token_type_embeddings = embed(
          c.type_vocab_size, embedding_init=_dense_init(c, (axes.POSITIONS, axes.EMBED)))
    if c.embedding_norm:
      self.layer_norm = _layer_norm(c, "layer_norm")
    self.dropout = nn.Dropout(c.hidden_dropout_prob)

  def __call__(self, input_ids: Array, token_type_ids: Array, deterministic: bool,
               position_ids: Array | None = None) -> Array:
    c = self.config
    length = input_ids.shape[1]
    x = ops.words(c, self.word_embeddings.embedding, input_ids)  # [b, l, embed] float32
    if c.position_embedding_type == "absolute":
      if position_ids is None:  # a slice: the gradient is a sum over the batch
        x = x + self.position_embeddings.embedding[:length][None]  # [1, length, embed]
      else:  # packed rows: positions restart at every example
        x = x + ops.lookup(c, self.position_embeddings.embedding, position_ids)  # [b, l, e]
    if c.type_vocab_size:
      x = x + ops.lookup(c, self.token_type_embeddings.embedding, token_type_ids)
    x = x.astype(c.compute_dtype)
    if c.embedding_norm:
      x = self.layer_norm(x)
    return self.dropout(x, deterministic=deterministic)


class Projection(nn.Module):
  """x [..., *in] @ kernel [*in, *out] + bias [*out], the kernel at its full (unflattened) shape.

  nn.DenseGeneral initializes a flattened 2-D kernel, which breaks logical sharding constraints
  under `jax.set_mesh`; this keeps every parameter at its named rank.
  """

  config: BertConfig
  kernel_shape: tuple[int, ...]
  kernel_axes: tuple[str, ...]
  bias_axes: tuple[str, ...]
  contract: int = 1  # trailing axes of x contracted with the kernel's leading ones
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = self.config
    kernel = self.param("kernel", _dense_init(c, self.kernel_axes), self.kernel_shape,
                        c.storage_dtype)
    dtype = c.compute_dtype
    y = ops.dense(c, x.astype(dtype), kernel.astype(dtype), self.contract)
    if not self.use_bias:
      return y
    bias_shape = self.kernel_shape[self.contract:]
    bias = self.param("bias", _zeros(self.bias_axes), bias_shape, c.storage_dtype)
    return y + bias.astype(dtype)


class SelfAttention(nn.Module):
  """Multi-head self-attention with the output projection (no residual); rotary positions
  on q and k with `rope_theta` (`theta`) when position_embedding_type="rotary"."""

  config: BertConfig
  theta: float = 10000.0

  @nn.compact
  def __call__(self, x: Array, mask: Array, deterministic: bool,
               positions: Array | None = None) -> Array:
    """x [batch, length, embed]; mask [batch, keys] or, for packed rows or a local window,
    [batch, queries, keys] (True = attend); positions [batch or 1, length] (rotary)."""
    c = self.config
    heads, head_dim = c.num_attention_heads, c.head_dim
    # b: batch, l: length, e: embed, h: heads, d: head_dim (kv)
    proj = functools.partial(Projection, c, (c.hidden_size, heads, head_dim),
                             (axes.EMBED, axes.HEADS, axes.KV), (axes.HEADS, axes.KV),
                             use_bias=c.attention_bias)
    # [batch, length, embed] -> [batch, length, heads, kv]
    q, k, v = proj(name="query")(x), proj(name="key")(x), proj(name="value")(x)
    if c.position_embedding_type == "rotary":
      q, k = rotary(q, positions, self.theta), rotary(k, positions, self.theta)
    qkv_axes = (axes.BATCH, axes.LENGTH, axes.HEADS, axes.KV)
    q, k, v = (nn.with_logical_constraint(t, qkv_axes) for t in (q, k, v))

    # softmax(q k^T / sqrt(kv)) v, dropout on the [batch, heads, q, k] probabilities in training
    dropout = nn.Dropout(c.attention_probs_dropout_prob)
    train = not deterministic and c.attention_probs_dropout_prob > 0
    ctx = ops.attention(c, q, k, v, mask,
                        functools.partial(dropout, deterministic=False) if train else None)
    ctx = nn.with_logical_constraint(ctx, qkv_axes)  # [batch, length, heads, kv]
    # [batch, length, heads, kv] -> [batch, length, embed]
    return Projection(c, (heads, head_dim, c.hidden_size), (axes.HEADS, axes.KV, axes.EMBED),
                      (axes.EMBED,), contract=2, use_bias=c.attention_bias, name="out")(ctx)


def _feed_forward(c: BertConfig, x: Array) -> Array:
  """act(x W_in) W_out, or gated (feed_forward="gated"; GeGLU, SwiGLU) act(x W_in) * (x W_gate)
  W_out, its projections made in the calling module: [batch, length, embed] -> [batch, length,
  mlp] -> [batch, length, embed]."""
  mlp = functools.partial(Projection, c, (c.hidden_size, c.intermediate_size),
                          (axes.EMBED, axes.MLP), (axes.MLP,), use_bias=c.mlp_bias)
  h = activation(c)(mlp(name="intermediate")(x))
  if c.feed_forward == "gated":
    h = h * mlp(name="gate")(x)
  h = nn.with_logical_constraint(h, (axes.BATCH, axes.LENGTH, axes.MLP))
  return Projection(c, (c.intermediate_size, c.hidden_size), (axes.MLP, axes.EMBED),
                    (axes.EMBED,), use_bias=c.mlp_bias, name="output")(h)


class BertLayer(nn.Module):
  """One encoder layer. Post-norm (BERT): x = N(x + Attn(x)); x = N(x + MLP(x)). Pre-norm:
  x = x + Attn(N(x)); x = x + MLP(N(x)), where layer 0 reads the embedding norm's output as
  is when there is one (`skips_attention_norm`, ModernBERT). N is `attention_norm` on the
  attention branch, `output_norm` on the feed-forward one."""

  config: BertConfig
  index: int = 0  # the layer's number: local or global, its rotary base, layer 0's norm

  @nn.compact
  def __call__(self, x: Array, mask: Array, deterministic: bool,
               positions: Array | None = None) -> Array:
    c = self.config
    dropout = nn.Dropout(c.hidden_dropout_prob)
    act_axes = (axes.BATCH, axes.LENGTH, axes.EMBED)
    local = c.is_local(self.index) and c.local_rope_theta is not None
    attention = SelfAttention(c, c.local_rope_theta if local else c.rope_theta, name="attention")

    if c.norm_position == "post":
      h = attention(x, mask, deterministic, positions)
      x = _layer_norm(c, "attention_norm")(x + dropout(h, deterministic=deterministic))
      x = nn.with_logical_constraint(x, act_axes)
      h = _feed_forward(c, x)
      x = _layer_norm(c, "output_norm")(x + dropout(h, deterministic=deterministic))
      return nn.with_logical_constraint(x, act_axes)

    h = x if c.skips_attention_norm(self.index) else _layer_norm(c, "attention_norm")(x)
    x = x + dropout(attention(h, mask, deterministic, positions), deterministic=deterministic)
    x = nn.with_logical_constraint(x, act_axes)
    h = _feed_forward(c, _layer_norm(c, "output_norm")(x))
    x = x + dropout(h, deterministic=deterministic)
    return nn.with_logical_constraint(x, act_axes)


_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class BertEncoder(nn.Module):
  """A stack of `num_hidden_layers` BertLayers, optionally rematerialized and scanned; the
  local layers (`BertConfig.is_local`) attend with `local_mask`."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: Array, mask: Array, deterministic: bool,
               positions: Array | None = None, local_mask: Array | None = None) -> Array:
    c = self.config
    layer = BertLayer
    if c.remat_policy != "none":
      layer = nn.remat(layer, policy=_REMAT_POLICIES[c.remat_policy], static_argnums=(3,))
    if c.scan_layers:
      def body(module, carry, _):  # identical layers (BertConfig.uniform_layers): all global
        return module(carry, mask, deterministic, positions), None
      scanned = nn.scan(
          body, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
          length=c.num_hidden_layers, metadata_params={nn.PARTITION_NAME: axes.LAYERS})
      x, _ = scanned(layer(c, name="layers"), x, None)
      return x
    for i in range(c.num_hidden_layers):
      x = layer(c, index=i, name=f"layer_{i}")(
          x, local_mask if c.is_local(i) else mask, deterministic, positions)
    return x


def _check_inputs(config: BertConfig, input_ids, attention_mask, token_type_ids,
                  segment_ids=None):
  """Shape errors at trace time; id-range errors when the ids are concrete."""
  if input_ids.ndim != 2:
    raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
  if input_ids.shape[1] > config.max_position_embeddings:
    raise ValueError(f"input length {input_ids.shape[1]} exceeds max_position_embeddings="
                     f"{config.max_position_embeddings}")
  for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids),
                  ("segment_ids", segment_ids)):
    if t is not None and tuple(t.shape) != tuple(input_ids.shape):
      raise ValueError(f"{name} has shape {tuple(t.shape)}, input_ids has "
                       f"{tuple(input_ids.shape)}")
  if not isinstance(input_ids, jax.core.Tracer) and input_ids.size:
    ids = np.asarray(input_ids)  # eager call: the ids are on hand, check them
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= config.vocab_size:
      bad = lo if lo < 0 else hi
      raise ValueError(f"input_ids contain {bad}, outside the vocabulary [0, {config.vocab_size})")


class BertModel(nn.Module):
  """The BERT encoder: `last_hidden_state` [batch, length, embed], `pooler_output`
  [batch, embed] (None for a family without a pooler, ModernBERT)."""

  config: BertConfig
  add_pooling_layer: bool = True

  def setup(self):
    c = self.config
    self.embeddings = BertEmbeddings(c)
    self.encoder = BertEncoder(c)
    if self.add_pooling_layer and c.has_pooler:
      self.pooler = Projection(c, (c.hidden_size, c.hidden_size), (axes.EMBED, axes.MLP),
                               (axes.MLP,))
    if c.final_norm:
      self.final_norm = _layer_norm(c, "final_norm")

  def __call__(self, input_ids: Array, attention_mask: Array | None = None,
               token_type_ids: Array | None = None, *, segment_ids: Array | None = None,
               deterministic: bool = True) -> BertOutput:
    """input_ids, attention_mask, token_type_ids [batch, length]. Packed rows (several examples
    a row) also give `segment_ids` [batch, length] (1, 2, ... per example, 0 on padding): each
    example then attends only to itself and its positions restart at 0, so it computes what it
    would alone (`segment_attention_mask`, `segment_positions`); a local window
    (`ops.local_window_mask`) never reaches across examples. Without a token-type table
    (type_vocab_size=0, ModernBERT) token_type_ids are ignored."""
    c = self.config
    _check_inputs(c, input_ids, attention_mask, token_type_ids, segment_ids)
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    mask, positions = attention_mask.astype(bool), None  # mask [batch, keys]
    if segment_ids is not None:
      mask = segment_attention_mask(segment_ids)  # [batch, queries, keys]
      positions = segment_positions(segment_ids)  # [batch, length]
    x = self.embeddings(input_ids, token_type_ids, deterministic, positions)  # [b, l, embed]
    x = nn.with_logical_constraint(x, (axes.BATCH, axes.LENGTH, axes.EMBED))
    rope_positions, local_mask = None, None
    if c.position_embedding_type == "rotary":  # [batch or 1, length]
      rope_positions = jnp.arange(input_ids.shape[1])[None] if positions is None else positions
    if any(c.is_local(i) for i in range(c.num_hidden_layers)):
      local_mask = ops.local_window_mask(mask, c.local_attention)  # [batch, queries, keys]
    x = self.encoder(x, mask, deterministic, rope_positions, local_mask)
    if c.final_norm:
      x = self.final_norm(x)
    pooled = None
    if self.add_pooling_layer and c.has_pooler:
      pooled = self.pool_cls(x[:, 0])  # [batch, embed] from [CLS]
    return BertOutput(last_hidden_state=x, pooler_output=pooled)

  def pool_cls(self, cls: Array) -> Array:
    """The pooling layer, tanh(dense([CLS] state)): [..., embed] -> [..., embed]."""
    return jnp.tanh(self.pooler(cls))

  def word_embedding_table(self) -> Array:
    """The [vocab, embed] word-embedding table (the tied MLM decoder's weight)."""
    return self.embeddings.word_embeddings.embedding


# Packed rows ------------------------------------------------------------------------------------

def segment_attention_mask(segment_ids: Array) -> Array:
  """[batch, length] example numbers (0 = padding) -> [batch, queries, keys] bool: a token
  attends to the real tokens of its own example; a padding query to every real token of its
  row (its output is never read; this keeps a one-example row equal to the unpacked one)."""
  q, k = segment_ids[:, :, None], segment_ids[:, None, :]
  return (k > 0) & ((q == k) | (q == 0))


def segment_positions(segment_ids: Array) -> Array:
  """[batch, length] example numbers of contiguous examples -> position ids restarting at 0
  where each example starts (padding continues the last count; its embedding is never read)."""
  length = segment_ids.shape[1]
  index = jnp.arange(length, dtype=jnp.int32)[None]  # [1, length]
  previous = jnp.pad(segment_ids[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
  starts = jnp.where(segment_ids != previous, index, 0)  # index where an example starts
  return index - jax.lax.cummax(starts, axis=1)


# Sentence vectors -------------------------------------------------------------------------------

# "cls_pooler": BERT's tanh dense over [CLS] (what transformers' BertForSequenceClassification
# uses); "cls": the raw [CLS] state; "mean" / "max": over the real tokens ([CLS] and [SEP]
# included, padding excluded), as sentence-transformers pools.
POOLINGS = ("cls_pooler", "cls", "mean", "max")


def pool(hidden: Array, mask: Array, how: str, pooler_output: Array | None = None) -> Array:
  """Sentence vectors: hidden [batch, length, embed], mask [batch, length] (1 = real token)
  -> [batch, embed] in hidden's dtype. `how` is one of `POOLINGS`; "cls_pooler" returns
  `pooler_output` (`BertOutput.pooler_output`), which must then be given.

  Padding never reaches "mean" or "max", so a text gives the same vector at any padded
  length; a row with no real token gives zeros.
  """
  if how == "cls_pooler":
    if pooler_output is None:
      raise ValueError("pooling='cls_pooler' needs the pooler output (a model with a pooling "
                       "layer); use 'cls', 'mean' or 'max'")
    return pooler_output
  if how == "cls":
    return hidden[:, 0]
  real = mask.astype(bool)[..., None]  # [batch, length, 1]
  if how == "mean":
    # Summed in float32: a bfloat16 sum over hundreds of tokens loses the low bits.
    total = jnp.sum(jnp.where(real, hidden.astype(jnp.float32), 0.0), axis=1)  # [batch, embed]
    count = jnp.maximum(jnp.sum(real, axis=1), 1).astype(jnp.float32)  # [batch, 1]
    return (total / count).astype(hidden.dtype)
  if how == "max":
    lowest = jnp.finfo(hidden.dtype).min
    best = jnp.max(jnp.where(real, hidden, lowest), axis=1)  # [batch, embed]
    return jnp.where(jnp.any(real, axis=1), best, jnp.zeros_like(best))
  raise ValueError(f"pooling={how!r} is not one of {', '.join(POOLINGS)}")


def pool_segments(hidden: Array, segment_ids: Array, num_segments: int, how: str) -> Array:
  """`pool` per example of packed rows: hidden [batch, length, embed], segment_ids [batch,
  length] -> [batch, num_segments, embed] ("mean" / "max"; an absent example gives zeros)."""
  numbers = jnp.arange(1, num_segments + 1, dtype=segment_ids.dtype)
  masks = segment_ids[:, None, :] == numbers[None, :, None]  # [batch, segments, length]
  return jax.vmap(lambda m: pool(hidden, m, how), in_axes=1, out_axes=1)(masks)


# Heads ------------------------------------------------------------------------------------------

def _transform(c: BertConfig, x: Array, names: tuple[str, ...]) -> Array:
  """Dense + activation + norm, [..., embed] -> [..., embed] (`names`: x's logical axes), its
  parameters `transform` and `layer_norm` made in the calling module."""
  x = Projection(c, (c.hidden_size, c.hidden_size), (axes.EMBED, axes.MLP), (axes.MLP,),
                 use_bias=c.classifier_bias, name="transform")(x)
  x = nn.with_logical_constraint(x, names[-x.ndim:])
  return _layer_norm(c, "layer_norm")(activation(c, c.classifier_activation)(x))


class PredictionHead(nn.Module):
  """ModernBERT's head before each classifier: dense + activation + norm on the pooled vector
  or on every token, [..., embed] -> [..., embed] (BertConfig.head_transform)."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return _transform(self.config, x, (axes.BATCH, axes.LENGTH, axes.EMBED))


class MLMHead(nn.Module):
  """Dense + activation + LayerNorm, then the tied word-embedding decoder plus an output bias
  (none without `decoder_bias`)."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: Array, table: Array) -> Array:
    """x [..., embed] and the [vocab, embed] word embeddings -> logits [..., vocab]."""
    c = self.config
    x = _transform(c, x, (axes.BATCH, axes.PREDICTIONS, axes.EMBED))  # [..., embed]
    if c.decoder_bias:
      bias = self.param("bias", _zeros((axes.VOCAB,)), (c.vocab_size,), c.storage_dtype)
    else:
      bias = jnp.zeros((c.vocab_size,), c.storage_dtype)
    dtype = c.compute_dtype
    logits = ops.decoder(c, x.astype(dtype), table.astype(dtype), bias.astype(dtype))  # [b, P, V]
    return nn.with_logical_constraint(logits, (axes.BATCH, axes.PREDICTIONS, axes.VOCAB)[-x.ndim:])


class ClassificationHead(nn.Module):
  """Dropout + linear: [..., embed] -> [..., num_labels] (a pooled [CLS] vector or every token)."""

  num_labels: int
  dropout_rate: float = 0.1
  config: BertConfig | None = None  # dtypes and init range; BERT-base defaults when None

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool = True) -> Array:
    c = self.config or BertConfig()
    x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    kernel = self.param("kernel", _dense_init(c, (axes.EMBED, axes.LABELS)),
                        (x.shape[-1], self.num_labels), c.storage_dtype)
    bias = self.param("bias", _zeros((axes.LABELS,)), (self.num_labels,), c.storage_dtype)
    dtype = c.compute_dtype
    return ops.dense(c, x.astype(dtype), kernel.astype(dtype)) + bias.astype(dtype)


def gather_positions(config: BertConfig, x: Array, positions: Array) -> Array:
  """[batch, length, embed] at positions [batch, P] -> [batch, P, embed] (the MLM head's input)."""
  x = ops.gather(config, x, positions)
  return nn.with_logical_constraint(x, (axes.BATCH, axes.PREDICTIONS, axes.EMBED))


class BertForMaskedLM(nn.Module):
  """BERT with the MLM head; logits only at `masked_positions` when given ([batch, P, vocab])."""

  config: BertConfig

  def setup(self):
    self.bert = BertModel(self.config, add_pooling_layer=False)
    self.mlm_head = MLMHead(self.config)

  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, masked_positions=None,
               *, segment_ids=None, deterministic: bool = True) -> Array:
    x = self.bert(input_ids, attention_mask, token_type_ids, segment_ids=segment_ids,
                  deterministic=deterministic).last_hidden_state
    if masked_positions is not None:
      x = gather_positions(self.config, x, masked_positions)  # gather first: [batch, P, embed]
    return self.mlm_head(x, self.bert.word_embedding_table())


class BertForPreTraining(nn.Module):
  """BERT with MLM and next-sentence heads: returns (mlm_logits, nsp_logits [batch, 2])."""

  config: BertConfig

  def setup(self):
    c = self.config
    if not c.has_pooler:
      raise ConfigError(f"BertForPreTraining needs a pooler for next-sentence prediction; "
                        f"family={c.family!r} has none: use BertForMaskedLM")
    self.bert = BertModel(c)
    self.mlm_head = MLMHead(c)
    self.nsp_head = ClassificationHead(2, dropout_rate=0.0, config=c)

  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, masked_positions=None,
               *, segment_ids=None, deterministic: bool = True) -> tuple[Array, Array]:
    out = self.bert(input_ids, attention_mask, token_type_ids, segment_ids=segment_ids,
                    deterministic=deterministic)
    x = out.last_hidden_state
    if masked_positions is not None:
      x = gather_positions(self.config, x, masked_positions)
    return self.mlm_head(x, self.bert.word_embedding_table()), self.nsp_head(out.pooler_output)


class BertForSequenceClassification(nn.Module):
  """BERT + a sentence vector (`pool`) + classifier: [batch, length] ids -> [batch, num_labels]
  logits.

  The encoder keeps its pooling layer whatever `pooling` is, so the parameter tree (and the
  transformers export) is the same for every choice; only "cls_pooler" reads it.
  A family without a pooler (ModernBERT) reads the sentence vector through its head
  (`PredictionHead`), and there "cls_pooler" (the default) means the config's
  `classifier_pooling`, as transformers' ModernBertForSequenceClassification pools.
  """

  config: BertConfig
  num_labels: int = 2
  pooling: str = "cls_pooler"  # one of POOLINGS

  def setup(self):
    self.bert = BertModel(self.config)
    if self.config.head_transform:
      self.head = PredictionHead(self.config)
    self.classifier = ClassificationHead(
        self.num_labels, dropout_rate=self.config.hidden_dropout_prob, config=self.config)

  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, *,
               segment_ids=None, cls_positions=None, deterministic: bool = True) -> Array:
    """-> [batch, num_labels]; packed rows (`segment_ids` and each example's [CLS] position
    `cls_positions` [batch, examples]) -> [batch, examples, num_labels]."""
    out = self.bert(input_ids, attention_mask, token_type_ids, segment_ids=segment_ids,
                    deterministic=deterministic)
    x = out.last_hidden_state  # [batch, length, embed]
    c, pooling = self.config, self.pooling
    if not c.has_pooler and pooling == "cls_pooler":
      pooling = c.classifier_pooling
    if cls_positions is not None:
      if pooling in ("cls", "cls_pooler"):
        pooled = gather_positions(c, x, cls_positions)  # [batch, examples, embed]
        if pooling == "cls_pooler":
          pooled = self.bert.pool_cls(pooled)
      else:
        pooled = pool_segments(x, segment_ids, cls_positions.shape[1], pooling)
    else:
      if attention_mask is None:
        attention_mask = jnp.ones_like(input_ids)
      pooled = pool(x, attention_mask, pooling, out.pooler_output)  # [batch, embed]
    if c.head_transform:
      pooled = self.head(pooled)
    return self.classifier(pooled, deterministic=deterministic)


class BertForTokenClassification(nn.Module):
  """BERT (no pooler) + dropout + linear on every token: -> [batch, length, num_labels] logits."""

  config: BertConfig
  num_labels: int = 2

  def setup(self):
    self.bert = BertModel(self.config, add_pooling_layer=False)
    if self.config.head_transform:
      self.head = PredictionHead(self.config)
    self.classifier = ClassificationHead(
        self.num_labels, dropout_rate=self.config.hidden_dropout_prob, config=self.config)

  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, *,
               segment_ids=None, deterministic: bool = True) -> Array:
    x = self.bert(input_ids, attention_mask, token_type_ids, segment_ids=segment_ids,
                  deterministic=deterministic).last_hidden_state
    if self.config.head_transform:
      x = self.head(x)  # [batch, length, embed]
    logits = self.classifier(x, deterministic=deterministic)  # [batch, length, num_labels]
    return nn.with_logical_constraint(logits, (axes.BATCH, axes.LENGTH, axes.LABELS))


class BertForQuestionAnswering(nn.Module):
  """BERT (no pooler) + a linear [embed, 2] on every token, no dropout (as transformers):
  returns (start_logits, end_logits), each [batch, length]."""

  config: BertConfig

  def setup(self):
    self.bert = BertModel(self.config, add_pooling_layer=False)
    if self.config.head_transform:
      self.head = PredictionHead(self.config)
    self.qa_outputs = ClassificationHead(2, dropout_rate=0.0, config=self.config)

  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, *,
               segment_ids=None, deterministic: bool = True) -> tuple[Array, Array]:
    x = self.bert(input_ids, attention_mask, token_type_ids, segment_ids=segment_ids,
                  deterministic=deterministic).last_hidden_state
    if self.config.head_transform:
      x = self.head(x)  # [batch, length, embed]
    logits = self.qa_outputs(x)  # [batch, length, 2]
    return logits[..., 0], logits[..., 1]


def count_params(params: Any) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
