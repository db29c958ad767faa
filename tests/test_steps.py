"""Train/eval steps: overfitting, compile-once, classification, accumulation, optimizer."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import (
  BertConfig,
  BertForMaskedLM,
  BertForPreTraining,
  BertForSequenceClassification,
  optim,
  steps,
)
from bert_jax.tasks.classification import Classification
from bert_jax.tasks.pretraining import MaskingConfig, Pretraining

VOCAB, MASK_ID = 64, 3
CFG = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=32, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0)
MASKING = MaskingConfig(vocab_size=VOCAB, mask_token_id=MASK_ID, max_predictions=4)
MLM, MLM_NSP = Pretraining(MASKING), Pretraining(MASKING, nsp=True)


def make_batch(rng, batch=8, length=16, nsp=False):
  rs = np.random.RandomState(rng)
  ids = rs.randint(5, VOCAB, size=(batch, length)).astype(np.int32)
  lengths = rs.randint(length // 2, length + 1, size=batch)
  am = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  ids[:, 0] = 1  # [CLS]
  ids[np.arange(batch), lengths - 1] = 2  # [SEP]
  ids = ids * am
  special = ((ids <= 2) | (am == 0)).astype(np.int32)
  b = dict(input_ids=ids, attention_mask=am, token_type_ids=np.zeros_like(ids),
           special_tokens_mask=special, word_starts=1 - special)
  if nsp:
    b["next_sentence_label"] = rs.randint(0, 2, size=batch).astype(np.int32)
  return jax.tree_util.tree_map(jnp.asarray, b)


def init(model, batch, **kwargs):
  variables = model.init(jax.random.key(0), batch["input_ids"], batch["attention_mask"],
                         batch["token_type_ids"], **kwargs)
  return nn.meta.unbox(variables)["params"]


def test_overfit_one_batch():
  batch = make_batch(0)
  model = BertForMaskedLM(CFG.replace(hidden_size=64, intermediate_size=128))
  tx, schedule = optim.make_optimizer(learning_rate=3e-3, total_steps=1000, warmup_steps=20,
                                      weight_decay=0.0)
  state = steps.create_train_state(init(model, batch), tx)
  step = jax.jit(functools.partial(steps.train_step, task=MLM, model=model, tx=tx,
                                   schedule=schedule), donate_argnums=0)
  rng = jax.random.key(1)
  losses = []
  for _ in range(300):
    state, metrics = step(state, batch, rng)
    losses.append(float(metrics["mlm_loss_sum"] / metrics["mlm_count"]))
  assert losses[0] > 3.0, losses[0]  # ~log(64) at start
  assert np.mean(losses[-20:]) < 0.5, losses[-20:]
  assert int(state.step) == 300


def test_compiles_once():
  batch = make_batch(1)
  model = BertForMaskedLM(CFG)
  tx, schedule = optim.make_optimizer(learning_rate=1e-3, total_steps=10)
  state = steps.create_train_state(init(model, batch), tx)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(state, batch, rng):
    return steps.train_step(state, batch, rng, task=MLM, model=model, tx=tx,
                            schedule=schedule)

  for i in range(3):
    state, _ = step(state, make_batch(10 + i), jax.random.key(0))


def test_classification_learns_separable_task():
  rs = np.random.RandomState(0)
  ids = rs.randint(5, VOCAB, size=(64, 12)).astype(np.int32)
  labels = rs.randint(0, 2, size=64).astype(np.int32)
  ids[:, 3] = np.where(labels == 1, 4, ids[:, 3])  # token 4 at position 3 marks class 1
  ids[:, 3] = np.where((labels == 0) & (ids[:, 3] == 4), 5, ids[:, 3])
  batch = jax.tree_util.tree_map(jnp.asarray, dict(
      input_ids=ids, attention_mask=np.ones_like(ids), token_type_ids=np.zeros_like(ids),
      label=labels))
  task = Classification(2)
  model = BertForSequenceClassification(CFG, 2)
  tx, schedule = optim.make_optimizer(learning_rate=2e-3, total_steps=100, warmup_steps=10)
  state = steps.create_train_state(init(model, batch), tx)
  step = jax.jit(functools.partial(steps.train_step, task=task, model=model, tx=tx,
                                   schedule=schedule))
  for _ in range(60):
    state, metrics = step(state, batch, jax.random.key(0))
  evals = task.summarize(steps.accumulate_metrics(
      [steps.eval_step(state.params, batch, jax.random.key(0), task=task, model=model)[0]]))
  assert evals["accuracy"] == 1.0, evals
  assert evals["loss"] < 0.1, evals


def test_eval_matches_train_forward_without_dropout():
  batch = make_batch(2, nsp=True)
  model = BertForPreTraining(CFG)
  tx, _ = optim.make_optimizer(learning_rate=1e-3, total_steps=10)
  params = init(model, batch)
  state = steps.create_train_state(params, tx)
  rng = jax.random.key(5)
  _, train_metrics = steps.train_step(state, batch, rng, task=MLM_NSP, model=model, tx=tx)
  mask_rng, _ = steps.step_rngs(rng, state.step, None)
  eval_metrics, _ = steps.eval_step(params, batch, mask_rng, task=MLM_NSP, model=model)
  for k in ("mlm_loss_sum", "mlm_correct_sum", "mlm_count", "nsp_loss_sum", "nsp_count"):
    np.testing.assert_allclose(train_metrics[k], eval_metrics[k], rtol=1e-5, err_msg=k)


def test_grad_accumulation_matches_full_batch():
  batch = make_batch(3, batch=8, nsp=True)
  model = BertForPreTraining(CFG)
  tx, _ = optim.make_optimizer(learning_rate=1e-3, total_steps=10)
  state = steps.create_train_state(init(model, batch), tx)
  run = lambda k: steps.train_step(state, batch, jax.random.key(0), task=MLM_NSP, model=model,
                                   tx=tx, grad_accum_steps=k)
  s1, m1 = jax.jit(lambda: run(1))()
  s4, m4 = jax.jit(lambda: run(4))()
  np.testing.assert_allclose(m1["grad_norm"], m4["grad_norm"], rtol=1e-4)
  np.testing.assert_allclose(m1["mlm_loss_sum"], m4["mlm_loss_sum"], rtol=1e-5)
  chex.assert_trees_all_close(s1.params, s4.params, atol=1e-6)


def test_grad_accumulation_rejects_uneven_split():
  batch = make_batch(3, batch=6)
  model = BertForMaskedLM(CFG)
  tx, _ = optim.make_optimizer(learning_rate=1e-3, total_steps=10)
  state = steps.create_train_state(init(model, batch), tx)
  with pytest.raises(ValueError, match="grad_accum_steps=4"):
    steps.train_step(state, batch, jax.random.key(0), task=MLM, model=model, tx=tx,
                     grad_accum_steps=4)


def test_padding_rows_do_not_change_loss():
  batch = make_batch(4, batch=4)
  padded = jax.tree_util.tree_map(lambda x: jnp.concatenate([x, jnp.zeros_like(x)]), batch)
  padded["example_mask"] = jnp.array([1, 1, 1, 1, 0, 0, 0, 0])
  model = BertForMaskedLM(CFG)
  params = init(model, batch)
  a = MLM.summarize(steps.accumulate_metrics(
      [steps.eval_step(params, batch, jax.random.key(0), task=MLM, model=model)[0]]))
  b = MLM.summarize(steps.accumulate_metrics(
      [steps.eval_step(params, padded, jax.random.key(0), task=MLM, model=model)[0]]))
  assert a["mlm_loss"] == pytest.approx(b["mlm_loss"], rel=1e-6)
  assert a["num_tokens"] == b["num_tokens"]


def test_decay_mask_excludes_biases_and_layer_norm():
  params = init(BertForMaskedLM(CFG), make_batch(0))
  mask = optim.decay_mask(params)
  flat = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(mask)}
  assert all(v for k, v in flat.items() if k.endswith(("['kernel']", "['embedding']")))
  assert not any(v for k, v in flat.items() if k.endswith("['bias']") or k.endswith("['scale']"))


def test_schedule_warmup_then_decay():
  schedule = optim.linear_schedule(1e-3, warmup_steps=10, total_steps=110)
  assert float(schedule(0)) == 0.0
  assert float(schedule(10)) == pytest.approx(1e-3)
  assert float(schedule(60)) == pytest.approx(5e-4)
  assert float(schedule(110)) == pytest.approx(0.0, abs=1e-12)


def test_lamb_and_bad_optimizer_name():
  batch = make_batch(5)
  model = BertForMaskedLM(CFG)
  tx, _ = optim.make_optimizer(learning_rate=1e-3, total_steps=10, name="lamb")
  state = steps.create_train_state(init(model, batch), tx)
  state, metrics = jax.jit(functools.partial(steps.train_step, task=MLM, model=model, tx=tx))(
      state, batch, jax.random.key(0))
  assert np.isfinite(float(metrics["mlm_loss_sum"]))
  with pytest.raises(ValueError, match="'sgdx'"):
    optim.make_optimizer(learning_rate=1e-3, total_steps=10, name="sgdx")


def test_missing_batch_key_is_named():
  batch = make_batch(3)
  model = BertForPreTraining(CFG)
  tx, _ = optim.make_optimizer(learning_rate=1e-3, total_steps=10)
  state = steps.create_train_state(init(model, batch), tx)
  with pytest.raises(KeyError, match="next_sentence_label"):
    steps.train_step(state, batch, jax.random.key(0), task=MLM_NSP, model=model, tx=tx)


def test_eval_sums_over_batches_equal_one_batch():
  """Every device-side sum and count adds up across batches (a metric kept as a per-step
  scalar would report the last batch's value)."""
  batch = make_batch(6, batch=8)
  batch = {**batch, "label": jnp.arange(8, dtype=jnp.int32) % 2}
  task = Classification(2)
  model = BertForSequenceClassification(CFG, 2)
  params = init(model, batch)
  def evaluate(b):
    return steps.eval_step(params, b, jax.random.key(0), task=task, model=model)[0]
  halves = [jax.tree_util.tree_map(lambda x, s=s: x[s], batch) for s in (slice(0, 4),
                                                                           slice(4, 8))]
  whole = task.summarize(steps.accumulate_metrics([evaluate(batch)]))
  split = task.summarize(steps.accumulate_metrics([evaluate(h) for h in halves]))
  assert split["num_examples"] == whole["num_examples"] == 8
  for k in ("loss", "accuracy", "num_tokens"):
    assert split[k] == pytest.approx(whole[k], rel=1e-5), k
