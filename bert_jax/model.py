"""BERT in Flax linen: embeddings, post-LN encoder, pooler, and the MLM / NSP / classifier heads.

Outputs match transformers' PyTorch `BertModel` on the same weights (see `hf.py` and
tests/test_hf.py). Every parameter carries logical axis names (`axes.py`), so the same
module shards under any mesh. Parameter tree of `BertModel`:

  embeddings/{word_embeddings,position_embeddings,token_type_embeddings}/embedding, layer_norm
  encoder/layer_{i}/attention/{query,key,value}/kernel [embed, heads, kv], bias [heads, kv]
  encoder/layer_{i}/attention/out/kernel [heads, kv, embed], bias [embed]
  encoder/layer_{i}/{attention_norm, intermediate [embed, mlp], output [mlp, embed], output_norm}
  pooler/{kernel, bias}
With `scan_layers=True` the layers live under encoder/layers with a leading 'layers' axis.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import axes
from bert_jax.config import BertConfig

Array = jax.Array


def _dense_init(config: BertConfig, names: tuple[str, ...]):
  return nn.with_logical_partitioning(
      nn.initializers.truncated_normal(config.initializer_range), names)


def _zeros(names: tuple[str, ...]):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def _layer_norm(config: BertConfig, name: str) -> nn.LayerNorm:
  # Exact two-pass variance: the fast E[x^2]-E[x]^2 form drifts from PyTorch by ~1e-5.
  return nn.LayerNorm(
      epsilon=config.layer_norm_eps, dtype=config.compute_dtype,
      param_dtype=config.storage_dtype, use_fast_variance=False,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), (axes.EMBED,)),
      bias_init=_zeros((axes.EMBED,)), name=name)


def _gelu_erf(x: Array) -> Array:
  # Exact GELU as PyTorch computes it, 0.5 x (1 + erf(x / sqrt 2)): jax.nn.gelu(approximate=False)
  # goes through erfc, which costs about twice as much elementwise work on CPU.
  return 0.5 * x * (1.0 + jax.lax.erf(x * np.asarray(1 / np.sqrt(2), x.dtype)))


def activation(name: str):
  if name == "gelu":
    return _gelu_erf
  if name in ("gelu_new", "gelu_pytorch_tanh"):
    return functools.partial(jax.nn.gelu, approximate=True)
  return jax.nn.relu


@flax.struct.dataclass
class BertOutput:
  last_hidden_state: Array  # [batch, length, embed]
  pooler_output: Array | None  # [batch, embed]; None without a pooling layer


class BertEmbeddings(nn.Module):
  """Sum of word, position and segment embeddings, then LayerNorm and dropout."""

  config: BertConfig

  def setup(self):
    c = self.config
    # The nn.Embed modules only hold the tables (`__call__` below reads them directly).
    embed = functools.partial(nn.Embed, features=c.hidden_size, param_dtype=c.storage_dtype)
    self.word_embeddings = embed(
        c.vocab_size, embedding_init=_dense_init(c, (axes.VOCAB, axes.EMBED)))
    self.position_embeddings = embed(
        c.max_position_embeddings, embedding_init=_dense_init(c, (axes.POSITIONS, axes.EMBED)))
    self.token_type_embeddings = embed(
        c.type_vocab_size, embedding_init=_dense_init(c, (axes.POSITIONS, axes.EMBED)))
    self.layer_norm = _layer_norm(c, "layer_norm")
    self.dropout = nn.Dropout(c.hidden_dropout_prob)

  def __call__(self, input_ids: Array, token_type_ids: Array, deterministic: bool) -> Array:
    c = self.config
    length = input_ids.shape[1]
    # No lookup here differentiates into a contended low-precision scatter-add. Words are
    # gathered from the float32 table (their gradient is a float32 scatter-add); positions are a
    # slice and segments a one-hot contraction, so their gradients are sums over the batch.
    # Autodiff of a bfloat16 lookup scatter-adds in bfloat16, which XLA:GPU emits as a
    # compare-and-swap loop (openxla/xla#26371) that serializes when every token of a batch
    # adds into segment row 0: the prime suspect for the per-token ~200 ms of a BERT-base step
    # measured on an H200 (benchmarks/RESULTS.md).
    table = self.word_embeddings.embedding.astype(jnp.float32)  # [vocab, embed]
    words = jnp.take(table, input_ids, axis=0)  # [batch, length, embed]
    positions = self.position_embeddings.embedding[:length]  # [length, embed]
    segments = one_hot_lookup(self.token_type_embeddings.embedding, token_type_ids)
    x = (words + positions[None] + segments).astype(c.compute_dtype)
    x = self.layer_norm(x)
    return self.dropout(x, deterministic=deterministic)


def one_hot_lookup(table: Array, ids: Array) -> Array:
  """`table[ids]` as an exact one-hot contraction: [rows, embed], [...] -> [..., embed].

  For small tables (segments): the gradient is a [rows, n] @ [n, embed] product instead of a
  scatter-add into a few rows that every token hits. `HIGHEST` keeps float32 exact on TPU.
  """
  one_hot = jax.nn.one_hot(ids, table.shape[0], dtype=table.dtype)  # [..., rows]
  return jnp.einsum("...r,re->...e", one_hot, table, precision=jax.lax.Precision.HIGHEST)


def attention_implementation(c: BertConfig) -> str | None:
  """The `implementation` for jax.nn.dot_product_attention.

  "auto" picks cuDNN's fused (flash) attention on a GPU with 16-bit compute, where it exists,
  and XLA elsewhere; jax's own None means XLA in jax 0.10 and 0.11.
  """
  if c.attention_impl == "auto":
    fused = jax.default_backend() == "gpu" and c.compute_dtype in (jnp.bfloat16, jnp.float16)
    return "cudnn" if fused else "xla"
  return c.attention_impl


def weight_grad(a: Array, b: Array) -> Array:
  """`a.T @ b` for a [n, p] and b [n, q]: the [p, q] gradient of a weight.

  XLA:CPU runs a product contracting both operands' leading axis through Eigen, about twice
  as fast when the output is wide (p <= q) as when it is tall. For a tall one it computes
  (b.T @ a).T behind an optimization barrier, so XLA cannot fold the transpose back:
  [4096, 512] x [4096, 128] 10.0 -> 5.5 ms, the tied decoder's table gradient 64 -> 52 ms.
  Other backends get the plain product.
  """
  if jax.default_backend() != "cpu" or a.shape[1] <= b.shape[1]:
    return a.T @ b
  return jax.lax.optimization_barrier(b.T @ a).T


def _flat_matmul(x: Array, kernel: Array, contract: int) -> Array:
  k = int(np.prod(kernel.shape[:contract]))
  y = x.reshape(-1, k) @ kernel.reshape(k, -1)  # [n, in] @ [in, out]
  return y.reshape(x.shape[:x.ndim - contract] + kernel.shape[contract:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _flat_matmul_cpu(x: Array, kernel: Array, contract: int) -> Array:
  return _flat_matmul(x, kernel, contract)


def _flat_matmul_cpu_fwd(x, kernel, contract):
  return _flat_matmul(x, kernel, contract), (x, kernel)


def _flat_matmul_cpu_bwd(contract, residuals, g):
  x, kernel = residuals
  k = int(np.prod(kernel.shape[:contract]))
  x2, kernel2 = x.reshape(-1, k), kernel.reshape(k, -1)  # [n, in], [in, out]
  g2 = g.reshape(x2.shape[0], -1)  # [n, out]
  return (g2 @ kernel2.T).reshape(x.shape), weight_grad(x2, g2).reshape(kernel.shape)


_flat_matmul_cpu.defvjp(_flat_matmul_cpu_fwd, _flat_matmul_cpu_bwd)


def flat_matmul(x: Array, kernel: Array, contract: int = 1) -> Array:
  """Contracts x's last `contract` axes with kernel's first ones, as one 2-D matmul.

  [..., *in] x [*in, *out] -> [..., *out]. Flattening before the dot (rather than a
  multi-axis einsum) lets XLA:CPU hand the weight gradient to its fast 2-D matmul path
  instead of a transposed copy plus Eigen contraction: 1.06-1.12x on the CPU MLM step. On
  CPU the gradient is written out to orient the weight gradient well (`weight_grad`);
  elsewhere autodiff's plain dots stay visible to remat policies such as `checkpoint_dots`.
  """
  if jax.default_backend() == "cpu":
    return _flat_matmul_cpu(x, kernel, contract)
  return _flat_matmul(x, kernel, contract)


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

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = self.config
    bias_shape = self.kernel_shape[self.contract:]
    kernel = self.param("kernel", _dense_init(c, self.kernel_axes), self.kernel_shape,
                        c.storage_dtype)
    bias = self.param("bias", _zeros(self.bias_axes), bias_shape, c.storage_dtype)
    dtype = c.compute_dtype
    return flat_matmul(x.astype(dtype), kernel.astype(dtype), self.contract) + bias.astype(dtype)


class SelfAttention(nn.Module):
  """Multi-head self-attention with the output projection (no residual)."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: Array, mask: Array, deterministic: bool) -> Array:
    c = self.config
    heads, head_dim = c.num_attention_heads, c.head_dim
    # b: batch, l: length, e: embed, h: heads, d: head_dim (kv)
    proj = functools.partial(Projection, c, (c.hidden_size, heads, head_dim),
                             (axes.EMBED, axes.HEADS, axes.KV), (axes.HEADS, axes.KV))
    # [batch, length, embed] -> [batch, length, heads, kv]
    q, k, v = proj(name="query")(x), proj(name="key")(x), proj(name="value")(x)
    qkv_axes = (axes.BATCH, axes.LENGTH, axes.HEADS, axes.KV)
    q, k, v = (nn.with_logical_constraint(t, qkv_axes) for t in (q, k, v))

    use_dropout = not deterministic and c.attention_probs_dropout_prob > 0
    if c.attention_impl == "einsum" or use_dropout:
      # Explicit softmax: the only path with dropout on the attention probabilities.
      scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(head_dim).astype(q.dtype)
      scores = jnp.where(mask[:, None, None, :], scores.astype(jnp.float32),
                         jnp.finfo(jnp.float32).min)
      probs = jax.nn.softmax(scores, axis=-1).astype(c.compute_dtype)  # [batch, heads, q, k]
      probs = nn.Dropout(c.attention_probs_dropout_prob)(probs, deterministic=deterministic)
      ctx = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
    else:
      impl = attention_implementation(c)
      if impl == "cudnn":
        # cuDNN's flash kernel takes key lengths, not a [batch, 1, 1, k] mask: BERT inputs
        # (our tokenizer and packing) are right-padded, so the mask is a length per row.
        ctx = jax.nn.dot_product_attention(
            q, k, v, key_value_seq_lengths=jnp.sum(mask, axis=-1, dtype=jnp.int32),
            implementation="cudnn")
      else:
        ctx = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :],
                                           implementation=impl)
    ctx = nn.with_logical_constraint(ctx, qkv_axes)  # [batch, length, heads, kv]
    # [batch, length, heads, kv] -> [batch, length, embed]
    return Projection(c, (heads, head_dim, c.hidden_size), (axes.HEADS, axes.KV, axes.EMBED),
                      (axes.EMBED,), contract=2, name="out")(ctx)


class BertLayer(nn.Module):
  """One post-LN encoder layer: x = LN(x + Attn(x)); x = LN(x + MLP(x))."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: Array, mask: Array, deterministic: bool) -> Array:
    c = self.config
    dropout = nn.Dropout(c.hidden_dropout_prob)
    act_axes = (axes.BATCH, axes.LENGTH, axes.EMBED)

    h = SelfAttention(c, name="attention")(x, mask, deterministic)
    x = _layer_norm(c, "attention_norm")(x + dropout(h, deterministic=deterministic))
    x = nn.with_logical_constraint(x, act_axes)

    # [batch, length, embed] -> [batch, length, mlp] -> [batch, length, embed]
    h = Projection(c, (c.hidden_size, c.intermediate_size), (axes.EMBED, axes.MLP), (axes.MLP,),
                   name="intermediate")(x)
    h = nn.with_logical_constraint(activation(c.hidden_act)(h),
                                   (axes.BATCH, axes.LENGTH, axes.MLP))
    h = Projection(c, (c.intermediate_size, c.hidden_size), (axes.MLP, axes.EMBED), (axes.EMBED,),
                   name="output")(h)
    x = _layer_norm(c, "output_norm")(x + dropout(h, deterministic=deterministic))
    return nn.with_logical_constraint(x, act_axes)


_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class BertEncoder(nn.Module):
  """A stack of `num_hidden_layers` BertLayers, optionally rematerialized and scanned."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: Array, mask: Array, deterministic: bool) -> Array:
    c = self.config
    layer = BertLayer
    if c.remat_policy != "none":
      layer = nn.remat(layer, policy=_REMAT_POLICIES[c.remat_policy], static_argnums=(3,))
    if c.scan_layers:
      def body(module, carry, _):
        return module(carry, mask, deterministic), None
      scanned = nn.scan(
          body, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
          length=c.num_hidden_layers, metadata_params={nn.PARTITION_NAME: axes.LAYERS})
      x, _ = scanned(layer(c, name="layers"), x, None)
      return x
    for i in range(c.num_hidden_layers):
      x = layer(c, name=f"layer_{i}")(x, mask, deterministic)
    return x


def _check_inputs(config: BertConfig, input_ids, attention_mask, token_type_ids):
  """Shape errors at trace time; id-range errors when the ids are concrete."""
  if input_ids.ndim != 2:
    raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
  if input_ids.shape[1] > config.max_position_embeddings:
    raise ValueError(f"input length {input_ids.shape[1]} exceeds max_position_embeddings="
                     f"{config.max_position_embeddings}")
  for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
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
  """The BERT encoder: `last_hidden_state` [batch, length, embed], `pooler_output` [batch, embed]."""

  config: BertConfig
  add_pooling_layer: bool = True

  def setup(self):
    c = self.config
    self.embeddings = BertEmbeddings(c)
    self.encoder = BertEncoder(c)
    if self.add_pooling_layer:
      self.pooler = nn.Dense(
          c.hidden_size, dtype=c.compute_dtype, param_dtype=c.storage_dtype,
          kernel_init=_dense_init(c, (axes.EMBED, axes.MLP)), bias_init=_zeros((axes.MLP,)))

  def __call__(self, input_ids: Array, attention_mask: Array | None = None,
               token_type_ids: Array | None = None, *, deterministic: bool = True) -> BertOutput:
    _check_inputs(self.config, input_ids, attention_mask, token_type_ids)
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    x = self.embeddings(input_ids, token_type_ids, deterministic)  # [batch, length, embed]
    x = nn.with_logical_constraint(x, (axes.BATCH, axes.LENGTH, axes.EMBED))
    x = self.encoder(x, attention_mask.astype(bool), deterministic)
    pooled = None
    if self.add_pooling_layer:
      pooled = jnp.tanh(self.pooler(x[:, 0]))  # [batch, embed] from [CLS]
    return BertOutput(last_hidden_state=x, pooler_output=pooled)

  def word_embedding_table(self) -> Array:
    """The [vocab, embed] word-embedding table (the tied MLM decoder's weight)."""
    return self.embeddings.word_embeddings.embedding


@jax.custom_vjp
def tied_decoder(x: Array, table: Array, bias: Array) -> Array:
  """[..., embed] x [vocab, embed] + [vocab] -> [..., vocab]: the tied MLM output layer.

  Values and gradients of `x @ table.T + bias`; the backward is written out so that XLA keeps
  the [n, vocab] cotangent in its natural layout. Autodiff's bias gradient was a column reduce
  over it (YNNPACK's slowest path on CPU) and its table gradient read a transposed copy of it.
  """
  return jnp.einsum("...e,ve->...v", x, table) + bias


def _tied_decoder_fwd(x, table, bias):
  return tied_decoder(x, table, bias), (x, table)


def _tied_decoder_bwd(residuals, g):
  x, table = residuals
  g2 = g.reshape(-1, g.shape[-1])  # [n, vocab]
  x2 = x.reshape(-1, x.shape[-1])  # [n, embed]
  dx = (g2 @ table).reshape(x.shape)  # [n, vocab] @ [vocab, embed]
  dtable = weight_grad(g2, x2)  # [vocab, n] @ [n, embed] -> [vocab, embed]
  dbias = jnp.ones((g2.shape[0],), g.dtype) @ g2  # a matvec, not a column reduce
  return dx, dtable, dbias


tied_decoder.defvjp(_tied_decoder_fwd, _tied_decoder_bwd)


def gather_positions(x: Array, positions: Array) -> Array:
  """[batch, length, embed], [batch, P] -> [batch, P, embed], as an exact one-hot contraction.

  `take_along_axis` would differentiate into a scatter-add in the compute dtype, with the
  padding predictions (position 0) colliding; the [batch, P, length] one-hot product costs
  2·P·length·embed FLOPs per row, noise next to the encoder.
  """
  one_hot = jax.nn.one_hot(positions, x.shape[1], dtype=x.dtype)  # [batch, P, length]
  x = jnp.einsum("bpl,ble->bpe", one_hot, x, precision=jax.lax.Precision.HIGHEST)
  return nn.with_logical_constraint(x, (axes.BATCH, axes.PREDICTIONS, axes.EMBED))


class MLMHead(nn.Module):
  """Dense + activation + LayerNorm, then the tied word-embedding decoder plus an output bias."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: Array, table: Array) -> Array:
    """x [..., embed] and the [vocab, embed] word embeddings -> logits [..., vocab]."""
    c = self.config
    x = nn.Dense(c.hidden_size, dtype=c.compute_dtype, param_dtype=c.storage_dtype,
                 kernel_init=_dense_init(c, (axes.EMBED, axes.MLP)),
                 bias_init=_zeros((axes.MLP,)), name="transform")(x)
    x = nn.with_logical_constraint(x, (axes.BATCH, axes.PREDICTIONS, axes.EMBED)[-x.ndim:])
    x = _layer_norm(c, "layer_norm")(activation(c.hidden_act)(x))
    bias = self.param("bias", _zeros((axes.VOCAB,)), (c.vocab_size,), c.storage_dtype)
    dtype = c.compute_dtype
    logits = tied_decoder(x.astype(dtype), table.astype(dtype), bias.astype(dtype))  # [b, P, vocab]
    return nn.with_logical_constraint(logits, (axes.BATCH, axes.PREDICTIONS, axes.VOCAB)[-x.ndim:])


class BertForMaskedLM(nn.Module):
  """BERT with the MLM head; logits only at `masked_positions` when given ([batch, P, vocab])."""

  config: BertConfig

  def setup(self):
    self.bert = BertModel(self.config, add_pooling_layer=False)
    self.mlm_head = MLMHead(self.config)

  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, masked_positions=None,
               *, deterministic: bool = True) -> Array:
    x = self.bert(input_ids, attention_mask, token_type_ids,
                  deterministic=deterministic).last_hidden_state
    if masked_positions is not None:
      x = gather_positions(x, masked_positions)  # gather first: [batch, P, embed]
    return self.mlm_head(x, self.bert.word_embedding_table())


class BertForPreTraining(nn.Module):
  """BERT with MLM and next-sentence heads: returns (mlm_logits, nsp_logits [batch, 2])."""

  config: BertConfig

  def setup(self):
    c = self.config
    self.bert = BertModel(c)
    self.mlm_head = MLMHead(c)
    self.nsp_head = ClassificationHead(2, dropout_rate=0.0, config=c)

  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, masked_positions=None,
               *, deterministic: bool = True) -> tuple[Array, Array]:
    out = self.bert(input_ids, attention_mask, token_type_ids, deterministic=deterministic)
    x = out.last_hidden_state
    if masked_positions is not None:
      x = gather_positions(x, masked_positions)
    return self.mlm_head(x, self.bert.word_embedding_table()), self.nsp_head(out.pooler_output)


class ClassificationHead(nn.Module):
  """Dropout + linear over a pooled [CLS] vector: [batch, embed] -> [batch, num_labels]."""

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
    x = x.astype(c.compute_dtype)
    return x @ kernel.astype(c.compute_dtype) + bias.astype(c.compute_dtype)


class BertForSequenceClassification(nn.Module):
  """BERT + pooler + classifier: [batch, length] ids -> [batch, num_labels] logits."""

  config: BertConfig
  num_labels: int = 2

  def setup(self):
    self.bert = BertModel(self.config)
    self.classifier = ClassificationHead(
        self.num_labels, dropout_rate=self.config.hidden_dropout_prob, config=self.config)

  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, *,
               deterministic: bool = True) -> Array:
    pooled = self.bert(input_ids, attention_mask, token_type_ids,
                       deterministic=deterministic).pooler_output
    return self.classifier(pooled, deterministic=deterministic)


def count_params(params: Any) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
