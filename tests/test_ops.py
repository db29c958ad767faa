"""ops.py: each kernel against its textbook form, the kernel sets against each other, resolve."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import BertConfig, BertForMaskedLM, ops
from bert_jax.config import KERNELS
from bert_jax.model import segment_attention_mask

TINY = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=16)
# Row 0: two segments; row 1: padded after 5 tokens.
IDS = np.array([[2, 15, 16, 17, 3, 18, 19, 3], [2, 21, 22, 23, 3, 0, 0, 0]], np.int32)
MASK = (IDS != 0).astype(np.int32)
SEGMENTS = np.array([[0, 0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0]], np.int32)
MASKED = np.array([[1, 6], [2, 0]], np.int32)  # position 0 twice: a padding prediction


@pytest.mark.parametrize("matmul", [ops.flat_matmul, ops.flat_matmul_cpu])
@pytest.mark.parametrize("x_shape,kernel_shape,contract", [
    ((3, 5, 8), (8, 32), 1),      # wide weight gradient
    ((3, 5, 32), (32, 8), 1),     # tall: computed transposed by weight_grad
    ((3, 5, 4, 6), (4, 6, 16), 2),  # attention output: heads x kv contracted
])
def test_flat_matmul_values_and_gradients_match_tensordot(matmul, x_shape, kernel_shape,
                                                          contract):
  kx, kk, kg = jax.random.split(jax.random.key(0), 3)
  x, kernel = jax.random.normal(kx, x_shape), jax.random.normal(kk, kernel_shape)
  out_shape = x_shape[:len(x_shape) - contract] + kernel_shape[contract:]
  g = jax.random.normal(kg, out_shape)
  ours, ours_vjp = jax.vjp(lambda a, b: matmul(a, b, contract), x, kernel)
  ref, ref_vjp = jax.vjp(lambda a, b: jnp.tensordot(a, b, axes=contract), x, kernel)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
  for a, b in zip(ours_vjp(g), ref_vjp(g)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_weight_grad_is_a_transpose_product_in_both_orientations():
  a, b = jax.random.normal(jax.random.key(3), (2, 6, 9))
  tall, wide = (a, b[:, :4]), (a[:, :4], b)  # [9, 4] and [4, 9] outputs
  for p, q in (tall, wide):
    np.testing.assert_allclose(ops.weight_grad(p, q), p.T @ q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cpu", [False, True])
def test_tied_decoder_matches_autodiff_of_the_plain_form(cpu):
  kx, kt, kb, kg = jax.random.split(jax.random.key(1), 4)
  x, table = jax.random.normal(kx, (2, 3, 8)), jax.random.normal(kt, (50, 8))
  bias, g = jax.random.normal(kb, (50,)), jax.random.normal(kg, (2, 3, 50))
  ours = jax.vjp(lambda a, t, b: ops.tied_decoder(a, t, b, cpu), x, table, bias)
  ref = jax.vjp(lambda a, t, b: a @ t.T + b, x, table, bias)
  np.testing.assert_allclose(ours[0], ref[0], rtol=1e-5, atol=1e-5)
  for a, b in zip(ours[1](g), ref[1](g)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_one_hot_lookups_are_exact():
  table = jax.random.normal(jax.random.key(2), (3, 8))
  ids = jnp.array([[0, 1, 1], [2, 0, 1]])
  assert jnp.array_equal(ops.one_hot_lookup(table, ids), table[ids])  # exact, not close
  x = jax.random.normal(jax.random.key(4), (2, 3, 8))
  positions = jnp.array([[2, 0], [1, 1]])
  assert jnp.array_equal(ops.one_hot_gather(x, positions),
                         jnp.take_along_axis(x, positions[..., None], axis=1))


def test_gelu_and_word_lookup_kernels_match_the_textbook():
  x = jnp.linspace(-6.0, 6.0, 97)
  # 1 + erf(x) cancels in the negative tail: absolute float32 rounding of ~|x| * 6e-8 there.
  np.testing.assert_allclose(ops.gelu_erf(x), jax.nn.gelu(x, approximate=False), rtol=1e-6,
                             atol=1e-6)
  table = jax.random.normal(jax.random.key(6), (7, 4)).astype(jnp.bfloat16)
  ids = jnp.array([[0, 6, 6], [3, 0, 1]])
  for name in ("plain", "cpu", "gpu", "tpu"):
    words = ops.words(TINY.replace(kernels=name), table, ids)
    assert words.dtype == jnp.float32 and jnp.array_equal(words, table[ids].astype(jnp.float32))
  # The float32 gather differentiates into a float32 scatter-add (the word-table gradient).
  grad = jax.grad(lambda t: jnp.sum(ops.float32_take(t, ids)))(table)
  assert grad.dtype == jnp.bfloat16 and float(grad[6, 0]) == 2.0


def test_one_table_of_kernel_sets():
  assert set(ops.KERNEL_SETS) == set(KERNELS) - {"auto"}
  for name, kernel_set in ops.KERNEL_SETS.items():
    assert ops.kernel_set(TINY.replace(kernels=name)) is kernel_set
    for field in dataclasses.fields(kernel_set):
      value = getattr(kernel_set, field.name)
      assert isinstance(value, ops.Blocking) if field.name == "blocking" else callable(value)


def test_model_code_is_the_architecture_only():
  import inspect

  from bert_jax import model
  source = inspect.getsource(model)
  for word in ("jax.default_backend", "jax.devices", "attention_impl ==", "kernels ==",
               "jnp.einsum(", "dot_product_attention(", "jax.nn.softmax(", "lax.erf(",
               "nn.Dense("):
    assert word not in source, word  # backend checks and kernels live in ops.py


def _attention_inputs(length, packed, seed=0, batch=3, heads=2, head_dim=8):
  """q, k, v [batch, length, heads, kv] and a padded or packed mask (True = attend); row 3,
  if any, is all padding (a fully masked row, as a batch padded with empty rows has)."""
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  shape = (batch, length, heads, head_dim)
  q, k, v = (jax.random.normal(key, shape) for key in (kq, kk, kv))
  lengths = np.array([length, max(1, length - 5), max(1, length // 3), 0])[:batch]
  real = np.arange(length)[None] < lengths[:, None]  # [batch, length]
  if not packed:
    return q, k, v, jnp.asarray(real)
  # Packed rows: two examples where there is room, then padding.
  segments = np.where(real, 1 + (np.arange(length)[None] >= lengths[:, None] // 2), 0)
  return q, k, v, segment_attention_mask(jnp.asarray(segments))


@pytest.mark.parametrize("packed", [False, True])
def test_einsum_attention_matches_xla_attention(packed):
  q, k, v, mask = _attention_inputs(11, packed)
  g = jax.random.normal(jax.random.key(9), q.shape)
  ours, ours_vjp = jax.vjp(lambda *a: ops.einsum_attention(*a, mask), q, k, v)
  ref, ref_vjp = jax.vjp(lambda *a: ops.xla_attention(*a, mask), q, k, v)
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
  for a, b in zip(ours_vjp(g), ref_vjp(g)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_attention_dropout_goes_through_the_explicit_softmax():
  q, k, v, mask = _attention_inputs(6, False)
  seen = []

  def dropout(probs):
    seen.append(probs.shape)
    return probs * 0.5
  for impl in ("xla", "einsum", "blocked"):
    seen.clear()
    config = TINY.replace(kernels="cpu", attention_impl=impl)
    out = ops.attention(config, q, k, v, mask, dropout)
    assert seen == [(3, 2, 6, 6)], impl  # [batch, heads, q, k]
    np.testing.assert_allclose(out, 0.5 * ops.xla_attention(q, k, v, mask), rtol=1e-5,
                               atol=1e-6)


def _max_diffs(ours, ref):
  return [float(jnp.max(jnp.abs(a - b))) for a, b in zip(ours, ref)]


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("length, block, rows", [
    (5, 128, None),   # one block
    (37, 16, None),   # 3 blocks of 13, the last with 2 padding keys
    (64, 16, 1),      # 4 blocks of 16, one batch row at a time
    (130, 128, 2),    # 2 blocks of 65, two rows at a time
])
def test_blocked_attention_matches_xla_attention(packed, length, block, rows):
  q, k, v, mask = _attention_inputs(length, packed, batch=4)
  g = jax.random.normal(jax.random.key(8), q.shape)
  ours, ours_vjp = jax.vjp(lambda *a: ops.blocked_attention(*a, mask, block, rows), q, k, v)
  ref, ref_vjp = jax.vjp(lambda *a: ops.xla_attention(*a, mask), q, k, v)
  diffs = _max_diffs((ours, *ours_vjp(g)), (ref, *ref_vjp(g)))
  print(f"length {length}, block {block}, rows {rows}, packed {packed}: out, dq, dk, dv max "
        f"diff {', '.join(f'{d:.2g}' for d in diffs)}")
  assert max(diffs) <= 2e-6  # float32 rounding of O(1) values and gradients
  np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
  assert not np.any(np.isnan(ours))  # the fully masked row too


def test_blocked_attention_in_bfloat16_is_close_to_xla():
  q, k, v, mask = (t.astype(jnp.bfloat16) if t.dtype == jnp.float32 else t
                   for t in _attention_inputs(40, False))
  ours = ops.blocked_attention(q, k, v, mask, 16)
  ref = ops.xla_attention(q, k, v, mask)
  assert ours.dtype == jnp.bfloat16
  np.testing.assert_allclose(ours.astype(jnp.float32), ref.astype(jnp.float32), atol=2e-2)


def test_blocked_kernels_step_from_the_crossover_length():
  config = TINY.replace(kernels="cpu", attention_impl="blocked")
  assert ops.attention_implementation(TINY.replace(kernels="cpu")) == "xla"  # opt-in
  min_keys = ops.kernel_set(config).blocking.min_keys
  for length, loops in ((min_keys - 1, False), (min_keys, True)):
    q, k, v, mask = _attention_inputs(length, False, batch=2)
    jaxpr = str(jax.make_jaxpr(lambda *a: ops.attention(config, *a))(q, k, v, mask))
    assert ("scan" in jaxpr or "while" in jaxpr) == loops, length


@pytest.mark.parametrize("packed", [False, True])
def test_blocked_attention_in_the_model_matches_xla(packed):
  # Long enough for the "cpu" kernels to block (3 key blocks of 48): values and gradients.
  config = TINY.replace(kernels="cpu", max_position_embeddings=160)
  rng = np.random.RandomState(1)
  ids = rng.randint(5, 100, size=(2, 144)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 100:] = 0
  segments = np.where(np.arange(144) < 60, 1, 2)[None].repeat(2, 0) * mask
  model = BertForMaskedLM(config)
  params = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), ids))["params"]
  params = jax.tree.map(lambda p: 0.1 * rng.standard_normal(p.shape).astype(np.float32), params)
  weights = jax.random.normal(jax.random.key(5), (2, 144, config.vocab_size))

  def run(impl):
    m = BertForMaskedLM(config.replace(attention_impl=impl))

    def loss(p):
      logits = m.apply({"params": p}, ids, mask, segment_ids=segments if packed else None)
      return jnp.sum(logits * weights), logits
    return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  (_, logits), grads = run("blocked")
  (_, ref_logits), ref_grads = run("xla")
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(ref_grads))
  diff = float(jnp.max(jnp.abs(logits - ref_logits)))
  grad_diff = max(_max_diffs(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)))
  print(f"blocked vs xla in the model (packed {packed}): logits {diff:.3g}, grads {grad_diff:.3g}"
        f" (largest {scale:.3g})")
  assert diff <= 1e-5 and grad_diff <= 1e-5 * scale


def _mlm_value_and_grads(config, params):
  model = BertForMaskedLM(config)
  weights = jax.random.normal(jax.random.key(5), (2, 2, config.vocab_size))

  def loss(p):
    logits = model.apply({"params": p}, IDS, MASK, SEGMENTS, masked_positions=MASKED)
    return jnp.sum(logits * weights), logits
  (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  return logits, grads


def test_kernel_sets_give_the_same_values_and_gradients():
  config = TINY.replace(attention_impl="xla")
  rng = np.random.RandomState(0)
  shapes = jax.eval_shape(BertForMaskedLM(config).init, jax.random.key(0), IDS)
  params = jax.tree_util.tree_map_with_path(  # LayerNorm scales around 1, the rest around 0
      lambda path, leaf: ("['scale']" in jax.tree_util.keystr(path))
      + 0.1 * rng.standard_normal(leaf.shape).astype(np.float32),
      nn.meta.unbox(shapes)["params"])
  logits, grads = _mlm_value_and_grads(config.replace(kernels="plain"), params)
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads))
  for name in ("cpu", "gpu", "tpu"):
    other_logits, other_grads = _mlm_value_and_grads(config.replace(kernels=name), params)
    diff = float(jnp.max(jnp.abs(other_logits - logits)))
    grad_diff = max(float(jnp.max(jnp.abs(a - b)))
                    for a, b in zip(jax.tree.leaves(other_grads), jax.tree.leaves(grads)))
    print(f"kernels={name} vs plain: logits max diff {diff:.3g}, grads {grad_diff:.3g} "
          f"(largest gradient {scale:.3g})")
    assert diff <= 1e-5, name
    assert grad_diff <= 1e-5 * scale, name
    assert jax.tree.structure(other_grads) == jax.tree.structure(grads)


def test_resolve_by_backend(monkeypatch):
  bf16 = TINY.replace(dtype="bfloat16")
  for backend, kernels, f32_attention, bf16_attention in [
      ("cpu", "cpu", "xla", "xla"), ("gpu", "gpu", "xla", "cudnn"), ("tpu", "tpu", "xla", "xla")]:
    monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
    resolved = ops.resolve(TINY)
    assert (resolved.kernels, resolved.attention_impl) == (kernels, f32_attention), backend
    assert ops.resolve(resolved) == resolved
    assert ops.resolve(bf16).attention_impl == bf16_attention, backend
    # Explicit choices stay; an unresolved "auto" inside ops resolves the same way.
    assert ops.resolve(TINY.replace(kernels="plain", attention_impl="einsum")) == TINY.replace(
        kernels="plain", attention_impl="einsum")
    assert ops.kernels(TINY) == kernels
    assert ops.attention_implementation(bf16) == bf16_attention
    # One answer: what ops computes with is what resolve writes, for explicit kernels too.
    for name in ops.KERNEL_SETS:
      for config in (TINY.replace(kernels=name), bf16.replace(kernels=name)):
        assert ops.attention_implementation(config) == ops.resolve(config).attention_impl
  assert ops.resolve(bf16.replace(kernels="plain")).attention_impl == "xla"


def test_attention_choice_depends_only_on_the_config():
  bf16 = TINY.replace(dtype="bfloat16")
  assert ops.attention_implementation(bf16.replace(kernels="gpu")) == "cudnn"
  assert ops.attention_implementation(TINY.replace(kernels="gpu")) == "xla"  # float32
  for kernels in ("plain", "cpu", "tpu"):
    assert ops.attention_implementation(bf16.replace(kernels=kernels)) == "xla"
  assert ops.attention_implementation(bf16.replace(kernels="gpu", attention_impl="xla")) == "xla"


def test_a_resolved_model_never_asks_the_backend(monkeypatch):
  config = ops.resolve(TINY)
  model = BertForMaskedLM(config)

  def ask(*_):
    raise AssertionError("jax.default_backend() called while tracing a resolved model")
  monkeypatch.setattr(jax, "default_backend", ask)
  variables = jax.eval_shape(model.init, jax.random.key(0), IDS)
  jax.eval_shape(lambda v: model.apply(v, IDS, MASK, SEGMENTS, masked_positions=MASKED),
                 variables)


def test_kernels_is_validated_and_not_written_to_config_json():
  with pytest.raises(ValueError, match=r"BertConfig.kernels='cuda' is not one of auto, plain"):
    TINY.replace(kernels="cuda")
  assert "kernels" not in TINY.replace(kernels="cpu").to_dict()
  assert BertConfig.from_dict(TINY.to_dict()) == TINY
