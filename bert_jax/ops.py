"""Kernels: how the model's matmuls, lookups and attention are computed, chosen by config.

`model.py` says *what* BERT computes and calls `ops.dense`, `ops.lookup`, `ops.gather`,
`ops.decoder` and `ops.attention` where a backend-specific kernel pays. Which one runs is
decided by the string `BertConfig.kernels` alone, never by the backend at trace time, so a
graph lowered ahead of time for another backend cannot change silently:

  "plain"  textbook ops: tensordot projections and `x @ table.T + b` decoder with autodiff
           gradients, `jnp.take` lookups, `take_along_axis` gather, XLA attention.
  "cpu"    2-D projections whose weight gradients XLA:CPU runs fastest (`flat_matmul_cpu`,
           `weight_grad`), the tied decoder's written-out VJP, one-hot lookups.
  "gpu"    the accelerator path (also TPU's): 2-D projections with autodiff gradients (visible
           to remat policies), the tied decoder's VJP, one-hot lookups (no contended
           scatter-add), cuDNN attention for 16-bit compute when attention_impl="auto".
  "auto"   `resolve(config)` with the default backend: a convenience for eager and interactive
           use. Training and benchmarks resolve once on the host and build the model from that.

Every choice computes the same values and gradients up to float rounding (tests/test_ops.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.config import BertConfig

Array = jax.Array
_FUSED_DTYPES = (jnp.bfloat16, jnp.float16)  # cuDNN's flash attention exists for these


def resolve(config: BertConfig) -> BertConfig:
  """`config` with kernels="auto" and attention_impl="auto" made concrete for this backend.

  kernels: "cpu" on CPU, "gpu" elsewhere (GPU, TPU). attention_impl: "cudnn" on a GPU with
  16-bit compute and "gpu" kernels, else "xla". Explicit values are kept; resolving twice
  changes nothing. The only place the kernels consult `jax.default_backend()`.
  """
  backend = jax.default_backend()
  if config.kernels == "auto":
    config = config.replace(kernels="cpu" if backend == "cpu" else "gpu")
  if config.attention_impl == "auto":
    fused = backend == "gpu" and _fused_attention(config)
    config = config.replace(attention_impl="cudnn" if fused else "xla")
  return config


def kernels(config: BertConfig) -> str:
  """The kernel set `config` selects: "plain", "cpu" or "gpu" ("auto" resolved)."""
  return resolve(config).kernels if config.kernels == "auto" else config.kernels


def _fused_attention(config: BertConfig) -> bool:
  return config.kernels == "gpu" and config.compute_dtype in _FUSED_DTYPES


def attention_implementation(config: BertConfig) -> str:
  """The attention `config` selects: "xla", "cudnn" or "einsum" (explicit softmax)."""
  if config.kernels == "auto":
    config = resolve(config)
  if config.attention_impl != "auto":
    return config.attention_impl
  return "cudnn" if _fused_attention(config) else "xla"


# What the model calls ---------------------------------------------------------------------------

def dense(config: BertConfig, x: Array, kernel: Array, contract: int = 1) -> Array:
  """x [..., *in] @ kernel [*in, *out] -> [..., *out], contracting x's last `contract` axes."""
  name = kernels(config)
  if name == "cpu":
    return flat_matmul_cpu(x, kernel, contract)
  if name == "gpu":
    return flat_matmul(x, kernel, contract)
  return jnp.tensordot(x, kernel, axes=contract)


def lookup(config: BertConfig, table: Array, ids: Array) -> Array:
  """`table[ids]` for a small table (segments): [rows, embed], [...] -> [..., embed]."""
  if kernels(config) == "plain":
    return jnp.take(table, ids, axis=0)
  return one_hot_lookup(table, ids)


def gather(config: BertConfig, x: Array, positions: Array) -> Array:
  """x [batch, length, embed] at positions [batch, P] -> [batch, P, embed]."""
  if kernels(config) == "plain":
    return jnp.take_along_axis(x, positions[..., None], axis=1)
  return one_hot_gather(x, positions)


def decoder(config: BertConfig, x: Array, table: Array, bias: Array) -> Array:
  """The tied MLM output layer: [..., embed] x [vocab, embed] + [vocab] -> [..., vocab]."""
  name = kernels(config)
  if name == "plain":
    return x @ table.T + bias
  return tied_decoder(x, table, bias, name == "cpu")


def attention_mask_4d(mask: Array) -> Array:
  """[batch, keys] or [batch, queries, keys] -> [batch, 1 (heads), queries or 1, keys]."""
  return mask[:, None, None, :] if mask.ndim == 2 else mask[:, None]


def attention(config: BertConfig, q: Array, k: Array, v: Array, mask: Array) -> Array:
  """Softmax attention without dropout: q, k, v [batch, length, heads, kv], mask [batch, keys]
  or, for packed rows, [batch, queries, keys] (True = attend) -> [batch, length, heads, kv], by
  `attention_implementation(config)`."""
  impl = attention_implementation(config)
  if impl == "cudnn" and mask.ndim == 3:
    # Packed rows: cuDNN's flash kernel takes the block-diagonal mask as a bias operand.
    return jax.nn.dot_product_attention(q, k, v, mask=attention_mask_4d(mask),
                                        implementation="cudnn")
  if impl == "cudnn":
    # cuDNN's flash kernel takes key lengths, not a [batch, 1, 1, k] mask: BERT inputs (our
    # tokenizer and packing) are right-padded, so the mask is a length per row.
    return jax.nn.dot_product_attention(
        q, k, v, key_value_seq_lengths=jnp.sum(mask, axis=-1, dtype=jnp.int32),
        implementation="cudnn")
  if impl != "xla":
    raise ValueError(f"ops.attention computes attention_impl 'xla' or 'cudnn', got {impl!r}")
  return jax.nn.dot_product_attention(q, k, v, mask=attention_mask_4d(mask), implementation="xla")


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
