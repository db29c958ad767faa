"""family="modernbert" against transformers' PyTorch ModernBERT (offline, CPU): parity of the
encoder and every head on random weights, import/export round trips, packed rows, errors.

Shapes cover local windows shorter than the sequence, several layers (local and global ones,
each with its rotary base), padded rows, biases on and off, cls and mean pooling. Parity is on
the real tokens (transformers' padding outputs are not ours to match). Tolerance 1e-4.
"""

import functools
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file
from test_row_packing import EXAMPLES, ROW, TASKS, TOKEN_KEYS, _real_tokens, packed, padded

from bert_jax import (
  BertConfig,
  BertForMaskedLM,
  BertForQuestionAnswering,
  BertForSequenceClassification,
  BertForTokenClassification,
  BertModel,
  hf,
  modernbert_config,
  optim,
  row_packing,
  steps,
)
from bert_jax.errors import ConfigError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

TOL = 1e-4
VOCAB = 100
# (ModernBertConfig overrides, sequence length): windows of 8 and 4 keys on 24- and 17-token
# rows; the last has every layer global and a window wider than its rows.
SHAPES = {
    "local8_every3": (dict(hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                           num_attention_heads=4, local_attention=8,
                           global_attn_every_n_layers=3), 24),
    "local4_every2_biases_mean": (dict(hidden_size=48, intermediate_size=40, num_hidden_layers=3,
                                       num_attention_heads=3, local_attention=4,
                                       global_attn_every_n_layers=2, norm_bias=True,
                                       attention_bias=True, mlp_bias=True, classifier_bias=True,
                                       classifier_pooling="mean", global_rope_theta=500.0,
                                       local_rope_theta=50.0), 17),
    "all_global": (dict(hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                        num_attention_heads=2, local_attention=16,
                        global_attn_every_n_layers=1, decoder_bias=False), 10),
}
HEADS = {None: "ModernBertModel", "mlm": "ModernBertForMaskedLM",
         "classification": "ModernBertForSequenceClassification",
         "token_classification": "ModernBertForTokenClassification",
         "question_answering": "ModernBertForQuestionAnswering"}
OURS = {None: BertModel, "mlm": BertForMaskedLM,
        "classification": lambda c, n: BertForSequenceClassification(c, num_labels=n),
        "token_classification": lambda c, n: BertForTokenClassification(c, num_labels=n),
        "question_answering": BertForQuestionAnswering}


def inputs(length, seed=0):
  """Two rows: one full, one right-padded to about half."""
  rs = np.random.RandomState(seed)
  ids = rs.randint(3, VOCAB, size=(2, length)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, length // 2 + 1:] = 0
  return ids * mask, mask


def torch_modernbert(head, overrides, seed=0, num_labels=3):
  cfg = transformers.ModernBertConfig(
      vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
      eos_token_id=2, cls_token_id=1, sep_token_id=2,
      num_labels=2 if head == "question_answering" else num_labels, attn_implementation="eager",
      **overrides)
  model = getattr(transformers, HEADS[head])(cfg)
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():  # every weight random, norm scales around 1: no mapping hides
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      p.copy_(1.0 + 0.1 * noise if "norm.weight" in name else 0.1 * noise)
  return model.eval()


def torch_outputs(model, head, ids, mask):
  with torch.no_grad():
    out = model(input_ids=torch.tensor(ids, dtype=torch.long),
                attention_mask=torch.tensor(mask, dtype=torch.long))
  if head is None:
    return out.last_hidden_state.numpy()
  if head == "question_answering":
    return np.stack([out.start_logits.numpy(), out.end_logits.numpy()], -1)
  return out.logits.numpy()


def our_outputs(config, params, head, ids, mask, num_labels=3):
  make = OURS[head]
  module = make(config, num_labels) if head in ("classification", "token_classification") else (
      make(config))
  out = module.apply({"params": params}, ids, mask, deterministic=True)
  if head is None:
    return np.asarray(out.last_hidden_state)
  if head == "question_answering":
    return np.stack([np.asarray(out[0]), np.asarray(out[1])], -1)
  return np.asarray(out)


def real_diff(ours, theirs, head, mask):
  """Max abs diff on the real tokens (every row for the sentence classifier)."""
  diff = np.abs(np.asarray(ours, np.float32) - theirs)
  if head != "classification":
    diff = diff[mask.astype(bool)]
  return float(diff.max())


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("head", list(HEADS), ids=lambda h: h or "encoder")
def test_parity_with_transformers(tmp_path, head, shape):
  overrides, length = SHAPES[shape]
  theirs_model = torch_modernbert(head, overrides)
  theirs_model.save_pretrained(tmp_path)
  config, params = hf.load_hf_checkpoint(str(tmp_path), head=head)
  assert config.family == "modernbert" and config.local_attention == overrides["local_attention"]
  assert config.rope_theta == overrides.get("global_rope_theta", 160000.0)
  assert config.classifier_pooling == overrides.get("classifier_pooling", "cls")
  ids, mask = inputs(length)
  diff = real_diff(our_outputs(config, params, head, ids, mask),
                   torch_outputs(theirs_model, head, ids, mask), head, mask)
  print(f"{head} {shape}: max abs diff {diff:.3g}")
  assert diff <= TOL


def random_params(module, ids, mask, seed=0):
  """`module.init` with every leaf moved off its init (norm scales 1, zero biases)."""
  params = nn.meta.unbox(module.init(jax.random.key(seed), ids, mask))["params"]
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  leaves = [np.asarray(x + 0.05 * jax.random.normal(k, x.shape)) for x, k in zip(leaves, keys)]
  return jax.tree.unflatten(tree, leaves)


TINY = modernbert_config.options(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
    num_attention_heads=4, max_position_embeddings=64, local_attention=6,
    global_attn_every_n_layers=2)


@pytest.mark.parametrize("head", list(HEADS), ids=lambda h: h or "encoder")
def test_export_loads_in_transformers_and_back(tmp_path, head):
  config = BertConfig(**TINY)
  ids, mask = inputs(20, seed=1)
  make = OURS[head]
  module = make(config, 3) if head in ("classification", "token_classification") else (
      make(config))
  params = random_params(module, ids, mask)
  hf.save_hf_checkpoint(str(tmp_path), config, params, head=head)
  theirs_model, info = getattr(transformers, HEADS[head]).from_pretrained(
      str(tmp_path), attn_implementation="eager", output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  ours = our_outputs(config, params, head, ids, mask)
  diff = real_diff(ours, torch_outputs(theirs_model.eval(), head, ids, mask), head, mask)
  print(f"export {head}: max abs diff {diff:.3g}")
  assert diff <= TOL
  back_config, back = hf.load_hf_checkpoint(str(tmp_path), head=head)
  assert back_config == config
  jax.tree.map(np.testing.assert_array_equal, back, params)


def test_transformers_checkpoint_round_trips_exactly(tmp_path):
  theirs_model = torch_modernbert("mlm", SHAPES["local4_every2_biases_mean"][0])
  theirs_model.save_pretrained(tmp_path / "theirs")
  config, params = hf.load_hf_checkpoint(str(tmp_path / "theirs"), head="mlm")
  hf.save_hf_checkpoint(str(tmp_path / "ours"), config, params, head="mlm")
  theirs = load_file(tmp_path / "theirs" / "model.safetensors")
  ours = load_file(tmp_path / "ours" / "model.safetensors")
  theirs.pop("decoder.weight", None)  # tied to the word embeddings; not written
  assert sorted(ours) == sorted(theirs)
  for key, value in theirs.items():
    np.testing.assert_array_equal(ours[key], value, err_msg=key)


PACKED = BertConfig(**modernbert_config.options(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
    num_attention_heads=4, max_position_embeddings=64, local_attention=4,
    global_attn_every_n_layers=2))


@pytest.mark.parametrize("head", ["token", "qa", "mlm", "cls", "mean"])
def test_packed_rows_equal_each_example_alone(head):
  """Rotary positions restart per example and a local window stops at its edges."""
  model = {"token": BertForTokenClassification(PACKED, num_labels=5),
           "qa": BertForQuestionAnswering(PACKED), "mlm": BertForMaskedLM(PACKED),
           "cls": BertForSequenceClassification(PACKED, num_labels=3, pooling="cls"),
           "mean": BertForSequenceClassification(PACKED, num_labels=3, pooling="mean")}[head]
  alone = padded(EXAMPLES)
  params = random_params(model, jnp.asarray(alone["input_ids"]),
                         jnp.asarray(alone["attention_mask"]))
  batch, slots = packed(EXAMPLES)
  assert batch["example_mask"].sum(1).max() > 1  # rows really are shared

  def run(b, **kw):  # token_type_ids passed as the tasks do; ModernBERT ignores them
    out = model.apply({"params": params}, b["input_ids"], b["attention_mask"],
                      b["token_type_ids"], **kw)
    return np.stack(out, -1) if head == "qa" else np.asarray(out)

  ref = run(alone)
  if head in ("cls", "mean"):
    out = run(batch, segment_ids=batch["segment_ids"], cls_positions=batch["cls_positions"])
    np.testing.assert_allclose(out[slots >= 0], ref[slots[slots >= 0]], atol=1e-5, rtol=0)
    return
  got = _real_tokens(EXAMPLES, slots, batch, run(batch, segment_ids=batch["segment_ids"]))
  for i, e in enumerate(EXAMPLES):
    np.testing.assert_allclose(got[i], ref[i, :len(e["input_ids"])], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_tasks_take_a_modernbert_config(name):
  """Each task's own model, loss and train step on a ModernBERT config (token_type_ids in the
  batch, ignored): packed and padded batches give the same sums."""
  task = TASKS[name][0]
  model = task.model(PACKED)
  alone = padded(EXAMPLES)
  params = random_params(model, jnp.asarray(alone["input_ids"]),
                         jnp.asarray(alone["attention_mask"]))
  if name == "question_answering":  # one window a row (see test_row_packing)
    alone = row_packing.pack(EXAMPLES, np.arange(len(EXAMPLES))[:, None], row_length=ROW,
                             token_keys=TOKEN_KEYS,
                             offset_keys=("start_positions", "end_positions"))
  batches = {"padded": alone, "packed": packed(EXAMPLES)[0]}
  device = {k: jax.tree.map(jnp.asarray, task.device_keys(b)) for k, b in batches.items()}
  sums = {k: task.forward(model, params, b, deterministic=True, dropout_rng=None)[0]
          for k, b in device.items()}
  for key in sums["padded"]:
    np.testing.assert_allclose(float(sums["packed"][key]), float(sums["padded"][key]),
                               rtol=1e-5, err_msg=key)
  tx, schedule = optim.make_optimizer(learning_rate=1e-3, total_steps=10, warmup_steps=1)
  state, metrics = jax.jit(functools.partial(steps.train_step, task=task, model=model, tx=tx,
                                             schedule=schedule))(
      steps.create_train_state(params, tx), device["packed"], jax.random.key(0))
  assert np.isfinite(float(metrics["loss_sum"])) and int(state.step) == 1


def test_local_window_changes_the_output():
  """The window is not a no-op: the same weights attend differently with every layer global."""
  model = BertModel(PACKED)
  ids, mask = inputs(24)
  params = random_params(model, ids, mask)
  local = model.apply({"params": params}, ids, mask).last_hidden_state
  wide = BertModel(PACKED.replace(local_attention=0)).apply(
      {"params": params}, ids, mask).last_hidden_state
  assert float(jnp.max(jnp.abs(local - wide))) > 1e-3


@pytest.mark.parametrize("fields, match", [
    (dict(norm_position="middle"), r"^BertConfig.norm_position='middle' is not one of post, pre$"),
    (dict(feed_forward="moe"), r"^BertConfig.feed_forward='moe' is not one of dense, gated$"),
    (dict(local_attention=-2), r"^BertConfig.local_attention must be an integer >= 0, got -2$"),
    (dict(rope_theta=0.0), r"^BertConfig.rope_theta must be positive, got 0.0$"),
    (dict(family="gpt"), r"^BertConfig.family='gpt' is not one of bert, modernbert$"),
])
def test_bad_option_is_one_line_config_error(fields, match):
  with pytest.raises(ConfigError, match=match):
    BertConfig(**fields)


def test_options_that_transformers_bert_cannot_hold_refuse_to_export():
  with pytest.raises(ConfigError, match="family='bert' writes BERT only"):
    BertConfig(norm_position="pre").to_dict()
  with pytest.raises(ConfigError, match="scan_layers=True needs identical layers"):
    BertConfig(**TINY, scan_layers=True)
  with pytest.raises(ConfigError, match="ModernBERT has no pretraining"):
    hf.architecture("pretraining", "modernbert")


def test_identity_of_a_bert_config_leaves_the_options_out():
  """Checkpoint meta (train._run_identity) of a BERT run is what it was before the options;
  a ModernBERT config's carries them and rebuilds the same config."""
  bert = BertConfig(hidden_size=64, num_attention_heads=4)
  assert "family" not in bert.identity() and "rope_theta" not in bert.identity()
  assert BertConfig(**bert.identity()) == bert
  modern = BertConfig(**TINY)
  assert modern.identity()["family"] == "modernbert"
  assert BertConfig(**modern.identity()) == modern


def test_other_options_on_the_bert_family():
  """RMSNorm, SwiGLU, rotary with a local window in post-norm BERT layers: packed rows still
  equal each example alone, and the norm is x / rms(x) * scale."""
  config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=48, max_position_embeddings=64,
                      norm_type="rms_norm", feed_forward="gated", hidden_act="silu",
                      position_embedding_type="rotary", local_attention=4,
                      global_attn_every_n_layers=2, attention_bias=False, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0)
  model = BertForTokenClassification(config, num_labels=5)
  alone = padded(EXAMPLES)
  params = random_params(model, jnp.asarray(alone["input_ids"]),
                         jnp.asarray(alone["attention_mask"]))
  layer = params["bert"]["encoder"]["layer_1"]
  assert set(layer["attention_norm"]) == {"scale"} and "gate" in layer
  assert "bias" not in layer["attention"]["query"] and "position_embeddings" not in (
      params["bert"]["embeddings"])

  def run(b, **kw):
    return np.asarray(model.apply({"params": params}, b["input_ids"], b["attention_mask"],
                                  b["token_type_ids"], **kw))
  ref = run(alone)
  batch, slots = packed(EXAMPLES)
  got = _real_tokens(EXAMPLES, slots, batch, run(batch, segment_ids=batch["segment_ids"]))
  for i, e in enumerate(EXAMPLES):
    np.testing.assert_allclose(got[i], ref[i, :len(e["input_ids"])], atol=1e-5, rtol=0)

  from bert_jax.model import _layer_norm
  x = jax.random.normal(jax.random.key(0), (3, 32))
  scale = 1 + 0.1 * jax.random.normal(jax.random.key(1), (32,))
  y = _layer_norm(config, "n").apply({"params": {"scale": scale}}, x)
  expected = x / jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + config.layer_norm_eps) * scale
  np.testing.assert_allclose(y, expected, atol=1e-5, rtol=1e-5)
