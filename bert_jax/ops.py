"""Kernels: how the model's matmuls, lookups, activations and attention are computed.

`model.py` says *what* BERT computes and calls `ops.dense`, `ops.lookup`, `ops.words`,
`ops.gather`, `ops.decoder`, `ops.gelu` and `ops.attention` wherever a backend-specific kernel
pays. Which one runs is decided by the config alone, through one table (`KERNEL_SETS`) and one
dispatch (`kernel_set`), never by the backend at trace time, so a graph lowered ahead of time
for another backend cannot change silently. `BertConfig.kernels` names the set:

  "plain"  textbook ops: tensordot projections, `x @ table.T + b` decoder with autodiff
           gradients, `jnp.take` lookups in the storage dtype, `take_along_axis` gather,
           `jax.nn.gelu`, XLA attention.
  "cpu"    2-D projections whose weight gradients XLA:CPU runs fastest (`flat_matmul_cpu`,
           `weight_grad`), the tied decoder's written-out VJP, one-hot lookups, the word table
           gathered in float32, GELU through erf (`gelu_erf`), XLA attention; with
           attention_impl="blocked", two batch rows and 64 keys a step from 128 keys, XLA's
           below (the measured crossover, benchmarks/RESULTS.md).
  "gpu"    2-D projections with autodiff gradients (visible to remat policies), the tied
           decoder's VJP, one-hot lookups and the float32 word gather (no contended or 16-bit
           scatter-add), `gelu_erf`; cuDNN attention for 16-bit compute, XLA's otherwise.
  "tpu"    the "gpu" set with XLA attention: other accelerators (TPU), where cuDNN is absent.
  "auto"   `resolve(config)` with the default backend: a convenience for eager and interactive
           use. Training, inference and benchmarks resolve once on the host and build the
           model from that.

`BertConfig.attention_impl` names the attention: "xla" (`jax.nn.dot_product_attention`),
"cudnn" (its cuDNN flash kernel, GPU and 16-bit only), "einsum" (explicit softmax), "blocked"
(`blocked_attention`: keys in blocks with a running max and sum, the scores never in full;
how it steps is the kernel set's `Blocking`), or "auto": the kernel set's choice
(`KernelSet.attention`). Dropout on the attention probabilities is computed by the explicit
softmax whatever the choice (the only one with a probabilities tensor to drop from).

Every choice computes the same values and gradients up to float rounding (tests/test_ops.py).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.config import BertConfig

Array = jax.Array
_FUSED_DTYPES = (jnp.bfloat16, jnp.float16)  # cuDNN's flash attention exists for these
_BACKEND_KERNELS = {"cpu": "cpu", "gpu": "gpu"}  # any other backend: "tpu"


@dataclasses.dataclass(frozen=True)
class Blocking:
  """How `blocked_attention` steps: `block` keys at a time, `rows` batch rows at a time (None:
  the whole batch); sequences of fewer than `min_keys` keys go to `xla_attention` instead."""

  block: int = 128
  rows: int | None = None
  min_keys: int = 0


@dataclasses.dataclass(frozen=True)
class KernelSet:
  """One kernel set: what each `ops` entry point computes with (see the module docstring)."""

  dense: Callable[[Array, Array, int], Array]  # x [..., *in], kernel [*in, *out], contract
  lookup: Callable[[Array, Array], Array]  # small table [rows, embed], ids [...]
  words: Callable[[Array, Array], Array]  # word table [vocab, embed], ids [...] -> float32
  gather: Callable[[Array, Array], Array]  # x [batch, length, embed], positions [batch, P]
  decoder: Callable[[Array, Array, Array], Array]  # x [..., embed], table, bias [vocab]
  gelu: Callable[[Array], Array]  # exact GELU, 0.5 x (1 + erf(x / sqrt 2))
  attention: Callable[[BertConfig], str]  # attention_impl="auto" -> a concrete one
  blocking: Blocking  # how attention_impl="blocked" steps


def resolve(config: BertConfig) -> BertConfig:
  """`config` with kernels="auto" and attention_impl="auto" made concrete.

  kernels: "cpu" on CPU, "gpu" on GPU, "tpu" on any other backend; the only place the kernels
  consult `jax.default_backend()`, and only for kernels="auto". attention_impl: the kernel
  set's choice for this config (`KernelSet.attention`). Explicit values are kept; resolving
  twice changes nothing.
  """
  if config.kernels == "auto":
    config = config.replace(kernels=_BACKEND_KERNELS.get(jax.default_backend(), "tpu"))
  if config.attention_impl == "auto":
    config = config.replace(attention_impl=KERNEL_SETS[config.kernels].attention(config))
  return config


def kernel_set(config: BertConfig) -> KernelSet:
  """The one dispatch: the `KernelSet` that `config` (resolved) names."""
  return KERNEL_SETS[kernels(config)]


def kernels(config: BertConfig) -> str:
  """The kernel set `config` selects: "plain", "cpu", "gpu" or "tpu" ("auto" resolved)."""
  return resolve(config).kernels if config.kernels == "auto" else config.kernels


def attention_implementation(config: BertConfig) -> str:
  """The attention `config` selects without dropout: "xla", "cudnn", "einsum" or
  "blocked"."""
  return resolve(config).attention_impl


def _xla_attention_choice(config: BertConfig) -> str:
  del config
  return "xla"


def _gpu_attention_choice(config: BertConfig) -> str:
  return "cudnn" if config.compute_dtype in _FUSED_DTYPES else "xla"


# What the model calls ---------------------------------------------------------------------------

def dense(config: BertConfig, x: Array, kernel: Array, contract: int = 1) -> Array:
  """x [..., *in] @ kernel [*in, *out] -> [..., *out], contracting x's last `contract` axes."""
  return kernel_set(config).dense(x, kernel, contract)


def lookup(config: BertConfig, table: Array, ids: Array) -> Array:
  """`table[ids]` for a small table (segments, positions): [rows, embed], [...] ->
  [..., embed]."""
  return kernel_set(config).lookup(table, ids)


def words(config: BertConfig, table: Array, ids: Array) -> Array:
  """`table[ids]` for the word table, in float32: [vocab, embed], [...] -> [..., embed]."""
  return kernel_set(config).words(table, ids)


def gather(config: BertConfig, x: Array, positions: Array) -> Array:
  """x [batch, length, embed] at positions [batch, P] -> [batch, P, embed]."""
  return kernel_set(config).gather(x, positions)


def decoder(config: BertConfig, x: Array, table: Array, bias: Array) -> Array:
  """The tied MLM output layer: [..., embed] x [vocab, embed] + [vocab] -> [..., vocab]."""
  return kernel_set(config).decoder(x, table, bias)


def gelu(config: BertConfig, x: Array) -> Array:
  """Exact (erf) GELU, as transformers' "gelu": [...] -> [...]."""
  return kernel_set(config).gelu(x)


def attention(config: BertConfig, q: Array, k: Array, v: Array, mask: Array,
              dropout: Callable[[Array], Array] | None = None) -> Array:
  """Softmax attention: q, k, v [batch, length, heads, kv], mask [batch, keys] or, for packed
  rows, [batch, queries, keys] (True = attend) -> [batch, length, heads, kv].

  `dropout` (training) is applied to the [batch, heads, queries, keys] probabilities, by the
  explicit softmax ("einsum"); without it, `attention_implementation(config)` runs.
  """
  impl = "einsum" if dropout is not None else attention_implementation(config)
  if impl == "einsum":
    return einsum_attention(q, k, v, mask, dropout)
  if impl == "blocked":
    blocking = kernel_set(config).blocking
    if k.shape[1] >= blocking.min_keys:
      return blocked_attention(q, k, v, mask, blocking.block, blocking.rows)
    impl = "xla"
  return _ATTENTIONS[impl](q, k, v, mask)


# The kernels ------------------------------------------------------------------------------------

def weight_grad(a: Array, b: Array) -> Array:
  """`a.T @ b` for a [n, p] and b [n, q]: the [p, q] gradient of a weight, oriented for CPU.

  XLA:CPU runs a product contracting both operands' leading axis through Eigen, about twice
  as fast when the output is wide (p <= q) as when it is tall. For a tall one it computes
  (b.T @ a).T behind an optimization barrier, so XLA cannot fold the transpose back:
  [4096, 512] x [4096, 128] 10.0 -> 5.5 ms, the tied decoder's table gradient 64 -> 52 ms.
  """
  if a.shape[1] <= b.shape[1]:
    return a.T @ b
  return jax.lax.optimization_barrier(b.T @ a).T


def flat_matmul(x: Array, kernel: Array, contract: int = 1) -> Array:
  """Contracts x's last `contract` axes with kernel's first ones, as one 2-D matmul.

  [..., *in] x [*in, *out] -> [..., *out]. Flattening before the dot (rather than a
  multi-axis einsum) lets XLA:CPU hand the weight gradient to its fast 2-D matmul path
  instead of a transposed copy plus Eigen contraction: 1.06-1.12x on the CPU MLM step.
  Autodiff's plain dots stay visible to remat policies such as `checkpoint_dots`.
  """
  k = int(np.prod(kernel.shape[:contract]))
  y = x.reshape(-1, k) @ kernel.reshape(k, -1)  # [n, in] @ [in, out]
  return y.reshape(x.shape[:x.ndim - contract] + kernel.shape[contract:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def flat_matmul_cpu(x: Array, kernel: Array, contract: int = 1) -> Array:
  """`flat_matmul` whose weight gradient is oriented by `weight_grad` (CPU)."""
  return flat_matmul(x, kernel, contract)


def _flat_matmul_cpu_fwd(x, kernel, contract):
  return flat_matmul(x, kernel, contract), (x, kernel)


def _flat_matmul_cpu_bwd(contract, residuals, g):
  x, kernel = residuals
  k = int(np.prod(kernel.shape[:contract]))
  x2, kernel2 = x.reshape(-1, k), kernel.reshape(k, -1)  # [n, in], [in, out]
  g2 = g.reshape(x2.shape[0], -1)  # [n, out]
  return (g2 @ kernel2.T).reshape(x.shape), weight_grad(x2, g2).reshape(kernel.shape)


flat_matmul_cpu.defvjp(_flat_matmul_cpu_fwd, _flat_matmul_cpu_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def tied_decoder(x: Array, table: Array, bias: Array, cpu: bool = False) -> Array:
  """[..., embed] x [vocab, embed] + [vocab] -> [..., vocab]: the tied MLM output layer.

  Values and gradients of `x @ table.T + bias`; the backward is written out so that XLA keeps
  the [n, vocab] cotangent in its natural layout. Autodiff's bias gradient was a column reduce
  over it (YNNPACK's slowest path on CPU) and its table gradient read a transposed copy of it.
  `cpu` orients the table gradient with `weight_grad`.
  """
  return jnp.einsum("...e,ve->...v", x, table) + bias


def _tied_decoder_fwd(x, table, bias, cpu):
  return tied_decoder(x, table, bias, cpu), (x, table)


def _tied_decoder_bwd(cpu, residuals, g):
  x, table = residuals
  g2 = g.reshape(-1, g.shape[-1])  # [n, vocab]
  x2 = x.reshape(-1, x.shape[-1])  # [n, embed]
  dx = (g2 @ table).reshape(x.shape)  # [n, vocab] @ [vocab, embed]
  dtable = weight_grad(g2, x2) if cpu else g2.T @ x2  # [vocab, n] @ [n, embed]
  dbias = jnp.ones((g2.shape[0],), g.dtype) @ g2  # a matvec, not a column reduce
  return dx, dtable, dbias


tied_decoder.defvjp(_tied_decoder_fwd, _tied_decoder_bwd)


def one_hot_lookup(table: Array, ids: Array) -> Array:
  """`table[ids]` as an exact one-hot contraction: [rows, embed], [...] -> [..., embed].

  For small tables (segments): the gradient is a [rows, n] @ [n, embed] product instead of a
  scatter-add into a few rows that every token hits, which XLA:GPU emits as a compare-and-swap
  loop in bfloat16 (openxla/xla#26371) that serializes when every token adds into segment row
  0 (benchmarks/RESULTS.md, GPU). `HIGHEST` keeps float32 exact on TPU.
  """
  one_hot = jax.nn.one_hot(ids, table.shape[0], dtype=table.dtype)  # [..., rows]
  return jnp.einsum("...r,re->...e", one_hot, table, precision=jax.lax.Precision.HIGHEST)


def one_hot_gather(x: Array, positions: Array) -> Array:
  """[batch, length, embed], [batch, P] -> [batch, P, embed], as an exact one-hot contraction.

  `take_along_axis` would differentiate into a scatter-add in the compute dtype, with the
  padding predictions (position 0) colliding; the [batch, P, length] one-hot product costs
  2·P·length·embed FLOPs per row, noise next to the encoder.
  """
  one_hot = jax.nn.one_hot(positions, x.shape[1], dtype=x.dtype)  # [batch, P, length]
  return jnp.einsum("bpl,ble->bpe", one_hot, x, precision=jax.lax.Precision.HIGHEST)


def gelu_erf(x: Array) -> Array:
  """Exact GELU as PyTorch computes it, 0.5 x (1 + erf(x / sqrt 2)).

  `jax.nn.gelu(approximate=False)` goes through erfc, which costs about twice as much
  elementwise work on CPU.
  """
  return 0.5 * x * (1.0 + jax.lax.erf(x * np.asarray(1 / np.sqrt(2), x.dtype)))


def float32_take(table: Array, ids: Array) -> Array:
  """`table[ids]` gathered from the float32 table: [vocab, embed], [...] -> [..., embed].

  The gradient is then a float32 scatter-add into the word table: a bfloat16 one is a
  compare-and-swap loop on GPU (see `one_hot_lookup`) and drops the low bits of every add.
  """
  return jnp.take(table.astype(jnp.float32), ids, axis=0)


def _plain_words(table: Array, ids: Array) -> Array:
  return jnp.take(table, ids, axis=0).astype(jnp.float32)


def _plain_lookup(table: Array, ids: Array) -> Array:
  return jnp.take(table, ids, axis=0)


def _plain_gather(x: Array, positions: Array) -> Array:
  return jnp.take_along_axis(x, positions[..., None], axis=1)


def _plain_dense(x: Array, kernel: Array, contract: int) -> Array:
  return jnp.tensordot(x, kernel, axes=contract)


def _plain_decoder(x: Array, table: Array, bias: Array) -> Array:
  return x @ table.T + bias


def _decoder(x: Array, table: Array, bias: Array) -> Array:
  return tied_decoder(x, table, bias, False)


def _decoder_cpu(x: Array, table: Array, bias: Array) -> Array:
  return tied_decoder(x, table, bias, True)


# Attention: q, k, v [batch, length, heads, kv], mask [batch, keys] or [batch, queries, keys]
# (True = attend) -> [batch, length, heads, kv].

def local_window_mask(mask: Array, window: int) -> Array:
  """The padding mask [batch, keys] or packed rows' segment mask [batch, queries, keys] (True =
  attend), narrowed to a local window of `window` keys: |query - key| <= window // 2 (as
  ModernBERT's `local_attention`) -> [batch, queries, keys]. Packed examples are contiguous,
  so within one the index distance is the position distance, and the segment mask keeps a
  window from reaching into the next example. Every attention kernel takes the result."""
  index = jnp.arange(mask.shape[-1])
  band = jnp.abs(index[:, None] - index[None, :]) <= window // 2  # [queries, keys]
  mask = mask[:, None, :] if mask.ndim == 2 else mask  # [batch, 1 or queries, keys]
  return mask & band[None]


def attention_mask_4d(mask: Array) -> Array:
  """[batch, keys] or [batch, queries, keys] -> [batch, 1 (heads), queries or 1, keys]."""
  return mask[:, None, None, :] if mask.ndim == 2 else mask[:, None]


def xla_attention(q: Array, k: Array, v: Array, mask: Array) -> Array:
  """XLA's `dot_product_attention`: the [batch, heads, q, k] scores in full, softmax in f32."""
  return jax.nn.dot_product_attention(q, k, v, mask=attention_mask_4d(mask), implementation="xla")


def cudnn_attention(q: Array, k: Array, v: Array, mask: Array) -> Array:
  """cuDNN's flash attention (GPU, 16-bit compute)."""
  if mask.ndim == 3:
    # Packed rows: cuDNN's flash kernel takes the block-diagonal mask as a bias operand.
    return jax.nn.dot_product_attention(q, k, v, mask=attention_mask_4d(mask),
                                        implementation="cudnn")
  # cuDNN's flash kernel takes key lengths, not a [batch, 1, 1, k] mask: BERT inputs (our
  # tokenizer and packing) are right-padded, so the mask is a length per row.
  return jax.nn.dot_product_attention(
      q, k, v, key_value_seq_lengths=jnp.sum(mask, axis=-1, dtype=jnp.int32),
      implementation="cudnn")


def einsum_attention(q: Array, k: Array, v: Array, mask: Array,
                     dropout: Callable[[Array], Array] | None = None) -> Array:
  """Explicit softmax, the only attention with dropout on the probabilities (`dropout`, a
  function of the [batch, heads, q, k] probabilities)."""
  scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
  scores = jnp.where(attention_mask_4d(mask), scores.astype(jnp.float32),
                     jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)  # [batch, heads, q, k]
  if dropout is not None:
    probs = dropout(probs)
  return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


_MASKED = -0.7 * float(np.finfo(np.float32).max)  # a masked score, as dot_product_attention's


def _key_blocks(length: int, block: int) -> tuple[int, int]:
  """(number of blocks, keys per block): as few blocks of at most `block` keys as cover
  `length`, balanced (384 -> 3 x 128, 192 -> 2 x 96, 300 -> 3 x 100)."""
  n = -(-length // block)
  return n, -(-length // n)


def blocked_attention(q: Array, k: Array, v: Array, mask: Array, block: int = 128,
                      rows: int | None = None) -> Array:
  """Softmax attention over `block` keys at a time, flash-style: a running max and sum per
  query, so at most [rows, heads, queries, block] scores exist at once, never the full
  [batch, heads, queries, keys]. Values and gradients are `xla_attention`'s up to float32
  rounding (the backward recomputes each block's probabilities from the saved max and sum).

  `rows` batch rows per step (None: all): on CPU one row's scores stay in cache between the
  dot, the exponentials and the second dot. A key block that no query of the step attends to
  (right padding) is skipped, so padding costs nothing past its first partial block. No
  dropout (`attention` falls back to the explicit softmax for it). A fully masked query row
  averages every value, as XLA's does. `rows` steps through the batch axis in sequence: meant
  for one device, not for a batch sharded over several.
  """
  batch = q.shape[0]
  rows = batch if rows is None else int(np.gcd(batch, rows))
  if rows == batch:
    return _blocked(q, k, v, mask, block)
  chunks = batch // rows

  def split(t):  # [batch, ...] -> [chunks, rows, ...]
    return t.reshape(chunks, rows, *t.shape[1:])
  out = jax.lax.map(lambda a: _blocked(*a, block), (split(q), split(k), split(v), split(mask)))
  return out.reshape(q.shape)


class _KeyBlocks(NamedTuple):
  """Keys, values and masks cut into `n` blocks of `size` keys, for `jax.lax.scan` over n."""

  k: Array  # [n, b, h, size, d], filled up with `pad` zero keys
  v: Array  # [n, b, h, size, d]
  masks: Array  # [n, b, 1, 1 or q, size]
  valid: Array  # [n, size]: False on the filler keys
  live: Array  # [n]: whether the block is computed at all
  pad: int  # filler keys at the end

  def scanned(self) -> tuple[Array, ...]:
    """What a scan step takes per block: (k, v, masks, valid, live)."""
    return self.k, self.v, self.masks, self.valid, self.live


def _blocks(k: Array, v: Array, mask: Array, block: int) -> _KeyBlocks:
  """k, v [b, keys, h, d] and mask [b, keys] or [b, q, keys] in blocks (`_KeyBlocks`)."""
  b, length = k.shape[:2]
  n, size = _key_blocks(length, block)
  pad = n * size - length
  mask = mask[:, None, :] if mask.ndim == 2 else mask  # [b, 1 or q, keys]
  if pad:
    k, v = (jnp.pad(t, ((0, 0), (0, pad), (0, 0), (0, 0))) for t in (k, v))
    mask = jnp.pad(mask, ((0, 0), (0, 0), (0, pad)))

  def split(t):  # [b, n * size, h, d] -> [n, b, h, size, d]
    return jnp.transpose(t.reshape(b, n, size, *t.shape[2:]), (1, 0, 3, 2, 4))
  masks = jnp.moveaxis(mask.reshape(b, mask.shape[1], n, size), 2, 0)[:, :, None]
  valid = (jnp.arange(n * size) < length).reshape(n, size)
  # A block no query attends to adds exactly nothing and is skipped, unless some query attends
  # to no key at all (a padding row): XLA's attention averages all values there.
  live = jnp.any(masks.reshape(n, -1), axis=1) | ~jnp.all(jnp.any(mask, axis=-1))  # [n]
  return _KeyBlocks(split(k), split(v), masks, valid, live, pad)


def _block_scores(q, kj, mj, validj, pad):
  """Scaled, masked float32 scores of one key block: q [b, h, q, d], kj [b, h, s, d] ->
  [b, h, q, s]; filler keys -inf, so a fully masked row still averages only the given keys."""
  s = jnp.einsum("bhqd,bhkd->bhqk", q, kj, preferred_element_type=jnp.float32)
  s = jnp.where(mj, s * np.float32(1 / np.sqrt(q.shape[-1])), _MASKED)
  return jnp.where(validj, s, -jnp.inf) if pad else s


def _blocked_forward(q, k, v, mask, block):
  """-> out [b, l, h, d], and per query the running max and 1 / sum, [b, h, l] float32."""
  b, length, h, d = q.shape
  blocks = _blocks(k, v, mask, block)
  qt = jnp.transpose(q, (0, 2, 1, 3))  # [b, h, l, d]

  def update(carry, kj, vj, mj, validj):
    m, total, acc = carry  # [b, h, l], [b, h, l], [b, h, l, d]
    s = _block_scores(qt, kj, mj, validj, blocks.pad)  # [b, h, l, size]
    m_new = jnp.maximum(m, jnp.max(s, axis=-1))
    correction = jnp.exp(m - m_new)
    p = jnp.exp(s - m_new[..., None])
    total = total * correction + jnp.sum(p, axis=-1)
    acc = acc * correction[..., None] + jnp.einsum(
        "bhqk,bhkd->bhqd", p.astype(v.dtype), vj, preferred_element_type=jnp.float32)
    return m_new, total, acc

  def step(carry, xs):
    return jax.lax.cond(xs[-1], update, lambda carry, *_: carry, carry, *xs[:-1]), None
  init = (jnp.full((b, h, length), -jnp.inf, jnp.float32),
          jnp.zeros((b, h, length), jnp.float32), jnp.zeros((b, h, length, d), jnp.float32))
  (m, total, acc), _ = jax.lax.scan(step, init, blocks.scanned())
  inv = 1 / total
  out = jnp.transpose(acc * inv[..., None], (0, 2, 1, 3)).astype(q.dtype)
  return out, (m, inv)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _blocked(q, k, v, mask, block):
  return _blocked_forward(q, k, v, mask, block)[0]


def _blocked_fwd(q, k, v, mask, block):
  out, stats = _blocked_forward(q, k, v, mask, block)
  return out, (q, k, v, mask, out, stats)


def _blocked_bwd(block, residuals, g):
  q, k, v, mask, out, (m, inv) = residuals
  b, length, h, d = q.shape
  blocks = _blocks(k, v, mask, block)
  scale = np.float32(1 / np.sqrt(d))
  qt = jnp.transpose(q, (0, 2, 1, 3))  # [b, h, l, d]
  gt = jnp.transpose(g, (0, 2, 1, 3))  # [b, h, l, d]
  # delta = sum_k p dp = (g . out) per query: the softmax backward's row term.
  delta = jnp.einsum("bqhd,bqhd->bhq", g.astype(jnp.float32), out.astype(jnp.float32))

  def update(dq, kj, vj, mj, validj):
    p = jnp.exp(_block_scores(qt, kj, mj, validj, blocks.pad) - m[..., None]) * inv[..., None]
    dv = jnp.einsum("bhqk,bhqd->bhkd", p.astype(g.dtype), gt, preferred_element_type=jnp.float32)
    dp = jnp.einsum("bhqd,bhkd->bhqk", gt, vj, preferred_element_type=jnp.float32)
    # The mask blocks the gradient of masked scores (it matters only in fully masked rows).
    ds = (jnp.where(mj, p * (dp - delta[..., None]), 0.0) * scale).astype(q.dtype)  # d(q.k)
    dq = dq + jnp.einsum("bhqk,bhkd->bhqd", ds, kj, preferred_element_type=jnp.float32)
    dk = jnp.einsum("bhqk,bhqd->bhkd", ds, qt, preferred_element_type=jnp.float32)
    return dq, (dk.astype(k.dtype), dv.astype(v.dtype))

  def skip(dq, kj, vj, *_):
    return dq, (jnp.zeros_like(kj), jnp.zeros_like(vj))

  def step(dq, xs):
    return jax.lax.cond(xs[-1], update, skip, dq, *xs[:-1])
  dq, (dk, dv) = jax.lax.scan(step, jnp.zeros((b, h, length, d), jnp.float32),
                              blocks.scanned())

  def unblock(t):  # [n, b, h, size, d] -> [b, keys, h, d]
    n, _, _, size, _ = t.shape
    return jnp.transpose(t, (1, 0, 3, 2, 4)).reshape(b, n * size, h, d)[:, :k.shape[1]]
  dq = jnp.transpose(dq, (0, 2, 1, 3)).astype(q.dtype)
  return dq, unblock(dk), unblock(dv), None


_blocked.defvjp(_blocked_fwd, _blocked_bwd)


_ATTENTIONS = {"xla": xla_attention, "cudnn": cudnn_attention, "einsum": einsum_attention}


# The table --------------------------------------------------------------------------------------

_ACCELERATOR = dict(  # "gpu" and "tpu"; blocked attention opt-in, never measured there
    dense=flat_matmul, lookup=one_hot_lookup, words=float32_take, gather=one_hot_gather,
    decoder=_decoder, gelu=gelu_erf, blocking=Blocking(block=128))

KERNEL_SETS: dict[str, KernelSet] = {
    "plain": KernelSet(
        dense=_plain_dense, lookup=_plain_lookup, words=_plain_words, gather=_plain_gather,
        decoder=_plain_decoder, gelu=functools.partial(jax.nn.gelu, approximate=False),
        attention=_xla_attention_choice, blocking=Blocking(block=128)),
    # attention_impl="blocked": two batch rows and 64 keys a step, their [2, heads, queries, 64]
    # scores stay in cache; below 128 keys XLA's attention is as fast (benchmarks/attention.py,
    # RESULTS.md). Opt-in until the whole suite has run with it as the default.
    "cpu": KernelSet(
        dense=flat_matmul_cpu, lookup=one_hot_lookup, words=float32_take,
        gather=one_hot_gather, decoder=_decoder_cpu, gelu=gelu_erf,
        attention=_xla_attention_choice, blocking=Blocking(block=64, rows=2, min_keys=128)),
    "gpu": KernelSet(**_ACCELERATOR, attention=_gpu_attention_choice),
    "tpu": KernelSet(**_ACCELERATOR, attention=_xla_attention_choice),
}
