"""The Flax BERT alone: shapes, parameter counts, axis names, padding, validation, dtypes, remat."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import (
  BertConfig,
  BertForMaskedLM,
  BertForPreTraining,
  BertForQuestionAnswering,
  BertForSequenceClassification,
  BertForTokenClassification,
  BertModel,
  ClassificationHead,
  axes,
)
from bert_jax.model import count_params

TINY = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64)
# Two rows of length 7, the second padded after 4 tokens.
IDS = np.array([[2, 15, 16, 17, 3, 18, 3], [2, 21, 22, 3, 0, 0, 0]], np.int32)
MASK = (IDS != 0).astype(np.int32)
SEGMENTS = np.array([[0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0, 0]], np.int32)
BERT_BASE_PARAMS = 109_482_240  # transformers' BertModel(BertConfig()), i.e. bert-base-uncased


def random_variables(model, *inputs, seed=0):
  """Boxed variables with random values made on the host. jax.eval_shape instead of running
  `init` skips compiling each initializer for each shape, seconds of CPU per model."""
  rng = np.random.RandomState(seed)

  def fill(path, leaf):
    noise = 0.05 * rng.standard_normal(leaf.shape)
    return (noise + ("['scale']" in jax.tree_util.keystr(path))).astype(leaf.dtype)
  return jax.tree_util.tree_map_with_path(
      fill, jax.eval_shape(model.init, jax.random.key(0), *inputs))


def init_apply(config, ids=IDS, mask=MASK, segments=SEGMENTS):
  model = BertModel(config)
  params = nn.meta.unbox(random_variables(model, ids, mask, segments))["params"]
  return model, params, model.apply({"params": params}, ids, mask, segments)


def test_seed_example_shapes():
  _, _, out = init_apply(TINY)
  assert out.last_hidden_state.shape == (2, 7, 32)
  assert out.pooler_output.shape == (2, 32)
  wide = TINY.replace(hidden_size=64, intermediate_size=128)
  _, _, out = init_apply(wide)
  assert out.last_hidden_state.shape == (2, 7, 64)
  cls = jnp.ones((4, 32))
  head = ClassificationHead(2)
  logits = head.apply(head.init(jax.random.key(0), cls), cls)
  assert logits.shape == (4, 2)


def test_head_shapes():
  ids, mask = jnp.asarray(IDS), jnp.asarray(MASK)
  positions = jnp.array([[1, 2], [1, 2]])
  mlm = BertForMaskedLM(TINY)
  variables = random_variables(mlm, ids, mask)
  assert "pooler" not in variables["params"]["bert"]  # as transformers' BertForMaskedLM
  assert mlm.apply(variables, ids, mask).shape == (2, 7, 100)
  assert mlm.apply(variables, ids, mask, masked_positions=positions).shape == (2, 2, 100)
  pre = BertForPreTraining(TINY)
  mlm_logits, nsp_logits = pre.apply(random_variables(pre, ids, mask), ids, mask,
                                     masked_positions=positions)
  assert mlm_logits.shape == (2, 2, 100) and nsp_logits.shape == (2, 2)
  clf = BertForSequenceClassification(TINY, num_labels=3)
  assert clf.apply(random_variables(clf, ids, mask), ids, mask).shape == (2, 3)
  tok = BertForTokenClassification(TINY, num_labels=5)
  variables = random_variables(tok, ids, mask)
  assert set(variables["params"]) == {"bert", "classifier"}
  assert "pooler" not in variables["params"]["bert"]  # as transformers'
  assert tok.apply(variables, ids, mask).shape == (2, 7, 5)
  qa = BertForQuestionAnswering(TINY)
  variables = random_variables(qa, ids, mask)
  assert set(variables["params"]) == {"bert", "qa_outputs"}
  assert "pooler" not in variables["params"]["bert"]
  assert nn.meta.unbox(variables)["params"]["qa_outputs"]["kernel"].shape == (32, 2)
  start, end = qa.apply(variables, ids, mask)
  assert start.shape == end.shape == (2, 7)


def test_bert_base_parameter_count():
  ids = jnp.zeros((1, 8), jnp.int32)
  shapes = jax.eval_shape(BertModel(BertConfig()).init, jax.random.key(0), ids)
  assert count_params(nn.meta.unbox(shapes)) == BERT_BASE_PARAMS


def test_bert_base_parameter_count_matches_transformers():
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  with torch.device("meta"):  # shapes only, no 110M-parameter allocation
    reference = transformers.BertModel(transformers.BertConfig())
  assert sum(p.numel() for p in reference.parameters()) == BERT_BASE_PARAMS


@pytest.mark.parametrize("scan_layers", [False, True])
def test_every_parameter_has_logical_axes(scan_layers):
  config = TINY.replace(scan_layers=scan_layers)
  ids = jnp.asarray(IDS)
  known = {v for k, v in vars(axes).items() if k.isupper()}
  for model in (BertForPreTraining(config), BertForSequenceClassification(config),
                BertForTokenClassification(config, num_labels=3), BertForQuestionAnswering(config)):
    boxed = jax.eval_shape(model.init, jax.random.key(0), ids)
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
    specs = nn.get_partition_spec(boxed)["params"]
    shapes = nn.meta.unbox(boxed)["params"]
    flat_specs = jax.tree_util.tree_flatten_with_path(
        specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))[0]
    flat_shapes = dict(jax.tree_util.tree_flatten_with_path(shapes)[0])
    assert len(flat_specs) == len(flat_shapes)
    for path, spec in flat_specs:
      name = jax.tree_util.keystr(path)
      assert len(spec) == flat_shapes[path].ndim, name
      assert all(a in known for a in spec), (name, spec)
      stacked = "layers" in name
      assert (spec[0] == axes.LAYERS) == stacked, (name, spec)
    if scan_layers:
      q = shapes["bert"]["encoder"]["layers"]["attention"]["query"]["kernel"]
      assert q.shape == (2, 32, 4, 8)


def test_padding_invariance():
  model, params, out = init_apply(TINY)
  pad = np.zeros((2, 5), np.int32)
  longer = model.apply({"params": params}, np.concatenate([IDS, pad], 1),
                       np.concatenate([MASK, pad], 1), np.concatenate([SEGMENTS, pad], 1))
  keep = MASK.astype(bool)
  np.testing.assert_allclose(np.asarray(longer.last_hidden_state)[:, :7][keep],
                             np.asarray(out.last_hidden_state)[keep], atol=1e-5)
  np.testing.assert_allclose(longer.pooler_output, out.pooler_output, atol=1e-5)


@pytest.mark.parametrize("fields, match", [
    (dict(hidden_size=30), "hidden_size=30 is not divisible by num_attention_heads=4"),
    (dict(num_hidden_layers=0), "num_hidden_layers must be a positive integer, got 0"),
    (dict(intermediate_size=-3), "intermediate_size must be a positive integer, got -3"),
    (dict(hidden_act="swish"), "hidden_act='swish' is not one of"),
])
def test_bad_config_values(fields, match):
  with pytest.raises(ValueError, match=match):
    TINY.replace(**fields)


def test_bad_inputs():
  model = BertModel(TINY.replace(max_position_embeddings=8))
  params = nn.meta.unbox(random_variables(model, IDS))["params"]
  with pytest.raises(ValueError, match="input length 9 exceeds max_position_embeddings=8"):
    model.apply({"params": params}, np.ones((2, 9), np.int32))
  with pytest.raises(ValueError, match=r"contain 100, outside the vocabulary \[0, 100\)"):
    model.apply({"params": params}, np.full((2, 7), 100, np.int32))
  with pytest.raises(ValueError, match=r"contain -1, outside the vocabulary"):
    model.apply({"params": params}, np.full((2, 7), -1, np.int32))


def test_config_round_trip_with_transformers_config_json():
  transformers = pytest.importorskip("transformers")
  theirs = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=64,
                                   hidden_act="gelu_new", layer_norm_eps=1e-7)
  ours = BertConfig.from_dict(theirs.to_diff_dict())  # what save_pretrained writes
  assert ours == TINY.replace(hidden_act="gelu_new", layer_norm_eps=1e-7)
  assert BertConfig.from_dict(ours.to_dict()) == ours
  back = transformers.BertConfig(**ours.to_dict())
  for key, value in ours.to_dict().items():
    if key not in ("architectures", "dtype"):
      assert getattr(back, key) == value, key


def test_config_from_transformers_to_dict():
  transformers = pytest.importorskip("transformers")
  theirs = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=64)
  assert BertConfig.from_dict(theirs.to_dict()) == TINY


def test_bfloat16_compute_close_to_float32():
  _, params, reference = init_apply(TINY)
  out = BertModel(TINY.replace(dtype="bfloat16")).apply({"params": params}, IDS, MASK, SEGMENTS)
  assert out.last_hidden_state.dtype == jnp.bfloat16
  assert jax.tree.leaves(params)[0].dtype == jnp.float32
  diff = np.abs(np.asarray(out.last_hidden_state, np.float32)
                - np.asarray(reference.last_hidden_state))
  print(f"bf16 vs f32 last_hidden_state: max {diff.max():.3g}, mean {diff.mean():.3g}")
  assert diff.max() < 0.1 and diff.mean() < 0.02


@pytest.mark.parametrize("scan_layers, policies", [  # each policy once; one inside nn.scan
    (False, ("full", "dots")), (True, ("dots_no_batch",))])
def test_remat_policies_change_nothing(scan_layers, policies):
  base = TINY.replace(num_hidden_layers=1, scan_layers=scan_layers)  # one layer: fast compiles
  _, params, _ = init_apply(base)

  def run(config):
    model = BertModel(config)

    def loss(p, ids, mask, segments):
      out = model.apply({"params": p}, ids, mask, segments)
      return jnp.sum(out.last_hidden_state ** 2) + jnp.sum(out.pooler_output)
    return jax.jit(jax.value_and_grad(loss))(params, IDS, MASK, SEGMENTS)

  value, grads = run(base)
  for policy in policies:
    v, g = run(base.replace(remat_policy=policy))
    np.testing.assert_array_equal(v, value)
    # Recomputation lets XLA fuse the backward pass differently: float32 rounding of sums
    # whose terms are as large as the largest gradient (and ~1e-11 noise on the key bias,
    # whose true gradient is 0).
    scale = max(float(np.max(np.abs(b))) for b in jax.tree.leaves(grads))
    diff = max(float(np.max(np.abs(a - b)))
               for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(grads)))
    print(f"remat {policy} (scan_layers={scan_layers}): grad max diff {diff:.3g}, "
          f"scale {scale:.3g}")
    assert diff <= 1e-6 * scale, policy
