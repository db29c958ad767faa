"""bf16 compute with float32 parameters trains like float32: 200 tiny MLM steps on a fixed batch."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import BertConfig, BertForMaskedLM, optim, steps
from bert_jax.tasks.pretraining import MaskingConfig, Pretraining

VOCAB, MASK_ID, STEPS = 64, 3, 200
MLM = Pretraining(MaskingConfig(vocab_size=VOCAB, mask_token_id=MASK_ID, max_predictions=4))
# Measured on CPU (jax 0.10.2): per-step |f32 - bf16| <= 0.002, window means equal to 1e-4.
STEP_TOL = 0.05    # any single step's MLM loss
WINDOW_TOL = 0.02  # the mean over each 20-step window


def _batch(batch=8, length=16):
  rs = np.random.RandomState(0)
  ids = rs.randint(5, VOCAB, size=(batch, length)).astype(np.int32)
  ids[:, 0], ids[:, -1] = 1, 2  # [CLS] ... [SEP]
  return {k: jnp.asarray(v) for k, v in dict(
      input_ids=ids, attention_mask=np.ones_like(ids), token_type_ids=np.zeros_like(ids),
      special_tokens_mask=(ids <= 2).astype(np.int32)).items()}


def _train(dtype: str, batch) -> np.ndarray:
  config = BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=128, max_position_embeddings=32,
                      dtype=dtype, param_dtype="float32")
  model = BertForMaskedLM(config)
  params = nn.meta.unbox(model.init(jax.random.key(0), batch["input_ids"]))["params"]
  tx, schedule = optim.make_optimizer(learning_rate=1e-3, total_steps=STEPS, warmup_steps=20,
                                      weight_decay=0.0)
  state = steps.create_train_state(params, tx)
  step = jax.jit(functools.partial(steps.train_step, task=MLM, model=model, tx=tx,
                                   schedule=schedule), donate_argnums=0)
  history = []
  for _ in range(STEPS):  # same key: masks and dropout are the same in both runs
    state, metrics = step(state, batch, jax.random.key(1))
    history.append(metrics["mlm_loss_sum"] / metrics["mlm_count"])
  assert jax.tree_util.tree_leaves(state.params)[0].dtype == jnp.float32
  return np.asarray(jax.device_get(history), np.float64)


def test_bf16_loss_tracks_float32_over_200_steps():
  batch = _batch()
  f32, bf16 = _train("float32", batch), _train("bfloat16", batch)
  assert f32[-20:].mean() < f32[:20].mean() - 0.8  # it learns, so the comparison means something
  assert np.any(f32 != bf16)  # and bf16 really computed in bf16
  step_diff = np.abs(f32 - bf16)
  assert step_diff.max() < STEP_TOL, (step_diff.argmax(), step_diff.max())
  windows = np.abs(f32.reshape(-1, 20).mean(1) - bf16.reshape(-1, 20).mean(1))
  assert windows.max() < WINDOW_TOL, windows


def _scatter_adds(jaxpr, found):
  """(dtype, shape) of every scatter-add in a jaxpr, nested ones (jit, scan, custom_vjp) too."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "scatter-add":
      found.append((eqn.outvars[0].aval.dtype, eqn.outvars[0].aval.shape))
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        sub = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
        if hasattr(sub, "eqns"):
          _scatter_adds(sub, found)
  return found


def _step_scatter_adds(kernels: str) -> list:
  """(dtype, shape) of every scatter-add in a bf16 MLM train step with these kernels."""
  # attention_impl="xla": the "gpu" kernels would pick cuDNN, which needs a GPU to trace.
  config = BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=128, max_position_embeddings=32,
                      dtype="bfloat16", kernels=kernels, attention_impl="xla")
  model, batch = BertForMaskedLM(config), _batch()
  params = nn.meta.unbox(model.init(jax.random.key(0), batch["input_ids"]))["params"]
  tx, schedule = optim.make_optimizer(learning_rate=1e-3, total_steps=10, warmup_steps=2)
  step = functools.partial(steps.train_step, task=MLM, model=model, tx=tx,
                           schedule=schedule)
  jaxpr = jax.make_jaxpr(step)(steps.create_train_state(params, tx), batch, jax.random.key(1))
  return _scatter_adds(jaxpr.jaxpr, [])


@pytest.mark.parametrize("kernels", ["cpu", "gpu"])
def test_bf16_step_has_no_low_precision_or_contended_scatter_add(kernels):
  # XLA:GPU emits a bfloat16 scatter-add as a compare-and-swap loop, which serializes on the
  # segment-embedding gradient (every token into row 0); see ops.one_hot_lookup.
  # Only the float32 word-embedding gradient and the one-per-row loss gradients may scatter.
  found = _step_scatter_adds(kernels)
  assert found and all(dtype == jnp.float32 for dtype, _ in found), found
  shapes = [shape for _, shape in found]
  assert (VOCAB, 64) in shapes  # the word-embedding gradient
  assert (2, 64) not in shapes and (32, 64) not in shapes, shapes  # segments, positions
  assert (8, 16, 64) not in shapes, shapes  # gather_positions' gradient


def test_plain_kernels_do_scatter_add_so_the_check_can_fail():
  found = _step_scatter_adds("plain")
  assert (jnp.float32, (2, 64)) in found, found  # every token into a segment row
  assert (jnp.bfloat16, (8, 16, 64)) in found, found  # take_along_axis' gradient, in bf16
