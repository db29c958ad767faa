"""Every parallel layout computes what one device computes (8 fake CPU devices, conftest.py).

Tolerance: losses agree to rtol 1e-5 and parameters to atol 2e-5 after 3 AdamW steps
(float32; the layouts only reorder reductions). AdamW runs with eps=1e-3 here: with BERT's
eps=1e-6 its first update is ~lr*sign(g), which turns float32 reduction-order noise in
near-zero gradients into lr-sized parameter differences (measured: 1.7e-4 relative loss
difference at step 3 for data2 x fsdp2 x tensor2); eps bounds that amplification by lr/eps.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import BertConfig, BertForPreTraining, optim, sharding, steps
from bert_jax import checkpoint as ckpt_lib
from bert_jax.tasks.pretraining import MaskingConfig, Pretraining

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")

CFG = BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=32, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0)
TASK = Pretraining(MaskingConfig(vocab_size=128, mask_token_id=3, max_predictions=4), nsp=True)
MODEL = BertForPreTraining(CFG)
TX, SCHEDULE = optim.make_optimizer(learning_rate=1e-3, total_steps=10, warmup_steps=1,
                                    eps=1e-3)
STEPS = 3
RTOL, PARAM_ATOL = 1e-5, 2e-5


def batches(n=STEPS, rows=16, length=16):
  rs = np.random.RandomState(0)
  out = []
  for _ in range(n):
    lengths = rs.randint(6, length + 1, size=rows)
    am = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    ids = rs.randint(5, 128, size=(rows, length)).astype(np.int32) * am
    ids[:, 0] = 1
    special = ((ids <= 2) | (am == 0)).astype(np.int32)
    out.append(dict(input_ids=ids, attention_mask=am, token_type_ids=np.zeros_like(ids),
                    special_tokens_mask=special, word_starts=1 - special,
                    next_sentence_label=rs.randint(0, 2, size=rows).astype(np.int32)))
  return out


def init_fn(rng):
  ids = jnp.zeros((1, 16), jnp.int32)
  return steps.create_train_state(MODEL.init(rng, ids, ids, ids)["params"], TX)


def step_fns(axis_name=None):
  train = functools.partial(steps.train_step, task=TASK, model=MODEL, tx=TX,
                            schedule=SCHEDULE, axis_name=axis_name)
  evaluate = functools.partial(steps.eval_step, task=TASK, model=MODEL, axis_name=axis_name)
  return train, evaluate


def mesh_runner(shape, devices=None):
  devices = devices or jax.devices()
  needed = int(np.prod([v for v in shape.values()]))
  mesh = sharding.make_mesh(shape, devices[:needed])
  return sharding.MeshRunner(mesh, sharding.DEFAULT_RULES, *step_fns())


def run(runner, n=STEPS):
  state = runner.init(init_fn, jax.random.key(0))
  losses = []
  rng = runner.put_rng(jax.random.key(1))
  for b in batches(n):
    state, metrics = runner.train_step(state, runner.put_batch(b), rng)
    losses.append(float(TASK.summarize(steps.accumulate_metrics([metrics]))["loss"]))
  return np.array(losses), jax.device_get(runner.host_state(state).params), state


@pytest.fixture(scope="module")
def reference():
  return run(mesh_runner({"data": 1}))


@pytest.mark.parametrize("shape", [
    {"data": 8}, {"fsdp": 8}, {"data": 2, "fsdp": 2, "tensor": 2}, {"data": 2, "tensor": 4}])
def test_mesh_layouts_match_one_device(reference, shape):
  ref_losses, ref_params, _ = reference
  losses, params, _ = run(mesh_runner(shape))
  np.testing.assert_allclose(losses, ref_losses, rtol=RTOL)
  chex.assert_trees_all_close(params, ref_params, atol=PARAM_ATOL, rtol=0)


def test_pmap_matches_one_device(reference):
  ref_losses, ref_params, _ = reference
  runner = sharding.PmapRunner(*step_fns(sharding.PMAP_AXIS))
  losses, params, _ = run(runner)
  np.testing.assert_allclose(losses, ref_losses, rtol=RTOL)
  chex.assert_trees_all_close(params, ref_params, atol=PARAM_ATOL, rtol=0)


def test_shardings_follow_the_rules():
  runner = mesh_runner({"data": 2, "fsdp": 2, "tensor": 2})
  state = runner.init(init_fn, jax.random.key(0))
  p = state.params["bert"]
  def spec(x):  # PartitionSpec without trailing replicated axes
    s = tuple(x.sharding.spec)
    while s and s[-1] is None:
      s = s[:-1]
    return s
  assert spec(p["embeddings"]["word_embeddings"]["embedding"]) == ("tensor", "fsdp")
  assert spec(p["encoder"]["layer_0"]["attention"]["query"]["kernel"]) == ("fsdp", "tensor")
  assert spec(p["encoder"]["layer_0"]["attention"]["out"]["kernel"]) == ("tensor", None, "fsdp")
  assert spec(p["encoder"]["layer_0"]["intermediate"]["kernel"]) == ("fsdp", "tensor")
  assert spec(p["encoder"]["layer_0"]["output"]["kernel"]) == ("tensor", "fsdp")
  assert spec(p["embeddings"]["position_embeddings"]["embedding"]) in ((), (None, "fsdp"))
  # The AdamW moments are sharded like their parameters.
  mu = jax.tree_util.tree_leaves(state.opt_state, is_leaf=lambda x: hasattr(x, "mu"))
  adam = [s for s in mu if hasattr(s, "mu")][0]
  assert spec(adam.mu["bert"]["embeddings"]["word_embeddings"]["embedding"]) == \
      ("tensor", "fsdp")
  batch = runner.put_batch(batches(1)[0])
  assert tuple(batch["input_ids"].sharding.spec) == (("data", "fsdp"),)


def test_fsdp_divides_parameter_and_optimizer_bytes():
  dp = mesh_runner({"data": 8}).init(init_fn, jax.random.key(0))
  fsdp = mesh_runner({"fsdp": 8}).init(init_fn, jax.random.key(0))
  full, split = sharding.per_device_bytes(dp), sharding.per_device_bytes(fsdp)
  # Everything with an 'embed' axis splits 8 ways; position/segment rows and a few biases don't.
  print(f"per-device state bytes: data-parallel {full}, FSDP-8 {split} ({full / split:.2f}x)")
  assert full / split > 5.0


def test_compiles_once_and_no_implicit_transfers():
  train, evaluate = step_fns()
  counted = jax.jit(chex.assert_max_traces(n=1)(lambda s, b, r: train(s, b, r)))
  mesh = sharding.make_mesh({"data": 4, "fsdp": 2})
  runner = sharding.MeshRunner(mesh, sharding.DEFAULT_RULES, counted, evaluate)
  state = runner.init(init_fn, jax.random.key(0))
  rng = runner.put_rng(jax.random.key(1))
  host_batches = batches(4)
  with jax.transfer_guard("disallow"):
    for b in host_batches:
      device_batch = jax.tree_util.tree_map(
          lambda x: jax.device_put(x, runner.batch_sharding), b)
      state, metrics = runner.train_step(state, device_batch, rng)
    jax.device_get(metrics)  # explicit: allowed


@pytest.mark.parametrize("save_layout, restore_layout", [
    ({"data": 8}, {"data": 1}), ({"data": 8}, {"fsdp": 4, "tensor": 2}), ("pmap", {"fsdp": 8})])
def test_checkpoint_restores_onto_another_mesh(tmp_path, save_layout, restore_layout):
  saver = (sharding.PmapRunner(*step_fns(sharding.PMAP_AXIS)) if save_layout == "pmap"
           else mesh_runner(save_layout))
  _, params, state = run(saver, n=1)
  ckpt = ckpt_lib.Checkpointer(str(tmp_path), async_save=False)
  ckpt.save(1, saver.host_state(state), data_state={"grain": {"next_index": 1}},
            meta={"task": "pretraining"})
  ckpt.wait()
  loader = mesh_runner(restore_layout)
  fresh = loader.init(init_fn, jax.random.key(9))
  step, restored, data_state, _ = ckpt.restore(loader.abstract(fresh))
  assert step == 1 and data_state == {"grain": {"next_index": 1}}
  chex.assert_trees_all_equal(jax.device_get(restored.params), params)
  leaf = restored.params["bert"]["embeddings"]["word_embeddings"]["embedding"]
  assert leaf.sharding == fresh.params["bert"]["embeddings"]["word_embeddings"][
      "embedding"].sharding
  # Training continues on the new mesh.
  loader.train_step(loader.place(restored), loader.put_batch(batches(1)[0]),
                    loader.put_rng(jax.random.key(1)))
  ckpt.close()


def test_mesh_config_errors_are_clear():
  with pytest.raises(ValueError, match="does not divide the 8 devices"):
    sharding.make_mesh({"data": 3})
  with pytest.raises(ValueError, match="'model'"):
    sharding.make_mesh({"model": 2})
  with pytest.raises(ValueError, match="at most one -1"):
    sharding.make_mesh({"data": -1, "fsdp": -1})
