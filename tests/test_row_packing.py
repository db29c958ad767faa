"""Packed rows (several examples a row, `row_packing.py`): each example computes exactly what it
computes alone, in every head and task loss, sharded or not, and the packed iterator resumes.

Tolerance: float32, 1e-5 (the packed row only reorders nothing: each example's attention
sees the same keys; the differences are matmul blocking).
"""

import functools
import json

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import (
  BertConfig,
  BertForMaskedLM,
  BertForQuestionAnswering,
  BertForSequenceClassification,
  BertForTokenClassification,
  input_pipeline,
  optim,
  row_packing,
  sharding,
  steps,
)
from bert_jax.model import segment_attention_mask, segment_positions
from bert_jax.tasks.classification import Classification
from bert_jax.tasks.pretraining import document_segments
from bert_jax.tasks.question_answering import QuestionAnswering
from bert_jax.tasks.token_classification import TokenClassification

VOCAB, ROW, K = 100, 32, 6
CFG = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0)
TOL = 1e-5
TOKEN_KEYS = ("input_ids", "token_type_ids", "labels", "label_mask")


def make_examples(n, seed=0, lo=3, hi=14):
  """Random [CLS] a [SEP] (b [SEP]) examples with every kind of label."""
  rs = np.random.RandomState(seed)
  out = []
  for _ in range(n):
    length = int(rs.randint(lo, hi + 1))
    ids = rs.randint(5, VOCAB, size=length).astype(np.int32)
    ids[0], ids[-1] = 1, 2
    split = int(rs.randint(1, length))
    types = (np.arange(length) >= split).astype(np.int32)
    start = int(rs.randint(0, length))
    out.append(dict(input_ids=ids, token_type_ids=types,
                    labels=rs.randint(0, 5, size=length).astype(np.int32),
                    label_mask=(rs.rand(length) < 0.7).astype(np.int32),
                    label=int(rs.randint(0, 3)), start_positions=start,
                    end_positions=int(rs.randint(start, length))))
  return out


def padded(examples, length=ROW):
  """One example a row, right-padded: the unpacked batch."""
  n = len(examples)
  batch = {k: np.zeros((n, length), np.int32) for k in (*TOKEN_KEYS, "attention_mask")}
  for i, e in enumerate(examples):
    m = len(e["input_ids"])
    for k in TOKEN_KEYS:
      batch[k][i, :m] = e[k]
    batch["attention_mask"][i, :m] = 1
  for k in ("label", "start_positions", "end_positions"):
    batch[k] = np.array([e[k] for e in examples], np.int32)
  batch["example_mask"] = np.ones(n, np.int32)
  return batch


def packed(examples, rows=None, seed=0):
  lengths = np.array([len(e["input_ids"]) for e in examples])
  plan = row_packing.first_fit(lengths, np.random.RandomState(seed).permutation(len(examples)),
                               row_length=ROW, max_per_row=K, open_rows=4)
  rows = rows or len(plan)
  slots = np.full((rows, K), -1)
  for r, members in enumerate(plan):
    slots[r, :len(members)] = members
  batch = row_packing.pack(examples, slots, row_length=ROW, token_keys=TOKEN_KEYS,
                           example_keys=("label",),
                           offset_keys=("start_positions", "end_positions"))
  return batch, slots


def params_of(model, batch):
  variables = model.init(jax.random.key(0), jnp.asarray(batch["input_ids"]),
                         jnp.asarray(batch["attention_mask"]),
                         jnp.asarray(batch["token_type_ids"]))
  return nn.meta.unbox(variables)["params"]


EXAMPLES = make_examples(23)


def test_first_fit_places_every_example_once_within_limits():
  rs = np.random.RandomState(1)
  lengths = rs.randint(1, 30, size=500)
  order = rs.permutation(500)
  rows = row_packing.first_fit(lengths, order, row_length=64, max_per_row=5, open_rows=16)
  flat = [i for r in rows for i in r]
  assert sorted(flat) == list(range(500))
  assert all(sum(lengths[r]) <= 64 and len(r) <= 5 for r in rows)
  assert rows == row_packing.first_fit(lengths, order, row_length=64, max_per_row=5,
                                       open_rows=16)
  fill = lengths.sum() / (len(rows) * 64)
  assert fill > 0.9, fill  # first fit over 16 open rows leaves little room
  with pytest.raises(ValueError, match="example 3 has 70 tokens, more than a row of 64"):
    row_packing.first_fit(np.array([1, 2, 3, 70]), np.arange(4), row_length=64, max_per_row=2)


def test_segment_positions_and_mask():
  seg = jnp.array([[1, 1, 1, 2, 2, 3, 0, 0]])
  np.testing.assert_array_equal(segment_positions(seg)[0, :6], [0, 1, 2, 0, 1, 0])
  mask = np.asarray(segment_attention_mask(seg))[0]
  assert mask[0, :3].all() and not mask[0, 3:].any()
  assert mask[4, 3:5].all() and not mask[4, [0, 1, 2, 5, 6, 7]].any()
  assert mask[6, :6].all() and not mask[6, 6:].any()  # padding queries: every real key


def test_document_segments():
  ids = np.array([[1, 7, 8, 2, 9, 2, 0, 0], [1, 7, 2, 0, 0, 0, 0, 0]])
  am = (ids > 0).astype(np.int32)
  np.testing.assert_array_equal(document_segments(ids, am, 2),
                                [[1, 1, 1, 1, 2, 2, 0, 0], [1, 1, 1, 0, 0, 0, 0, 0]])


def test_per_document_attention_and_its_old_name():
  import ml_collections

  from bert_jax.tasks.pretraining.task import per_document_attention
  from experiments import base
  data = base.get_config().data
  assert not per_document_attention(data)
  for key in ("per_document_attention", "packing"):  # the new name, and the old one
    d = ml_collections.ConfigDict(data.to_dict())
    d[key] = True
    assert per_document_attention(d), key


def _real_tokens(examples, slots, batch, out):
  """Packed token outputs [rows, ROW, ...] -> per example [len, ...], in example order."""
  per = {}
  for r in range(slots.shape[0]):
    for s in range(K):
      i = slots[r, s]
      if i >= 0:
        start = batch["cls_positions"][r, s]
        per[int(i)] = out[r, start:start + len(examples[i]["input_ids"])]
  return [per[i] for i in range(len(examples))]


@pytest.mark.parametrize("pooling", ["cls_pooler", "cls", "mean", "max"])
def test_sequence_classification_packed_equals_alone(pooling):
  model = BertForSequenceClassification(CFG, num_labels=3, pooling=pooling)
  alone = padded(EXAMPLES)
  params = params_of(model, alone)
  ref = model.apply({"params": params}, alone["input_ids"], alone["attention_mask"],
                    alone["token_type_ids"])  # [n, labels]
  batch, slots = packed(EXAMPLES)
  assert batch["example_mask"].sum(1).max() > 1  # rows really are shared
  out = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                    batch["token_type_ids"], segment_ids=batch["segment_ids"],
                    cls_positions=batch["cls_positions"])  # [rows, K, labels]
  np.testing.assert_allclose(np.asarray(out)[slots >= 0], np.asarray(ref)[slots[slots >= 0]],
                             atol=TOL, rtol=0)


@pytest.mark.parametrize("head", ["token", "qa", "mlm"])
def test_token_heads_packed_equal_alone(head):
  model = {"token": BertForTokenClassification(CFG, num_labels=5),
           "qa": BertForQuestionAnswering(CFG), "mlm": BertForMaskedLM(CFG)}[head]
  alone = padded(EXAMPLES)
  params = params_of(model, alone)

  def run(batch, **kw):
    out = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                      batch["token_type_ids"], **kw)
    return np.stack(out, -1) if head == "qa" else np.asarray(out)

  ref = run(alone)
  batch, slots = packed(EXAMPLES)
  got = _real_tokens(EXAMPLES, slots, batch, run(batch, segment_ids=batch["segment_ids"]))
  for i, e in enumerate(EXAMPLES):
    np.testing.assert_allclose(got[i], ref[i, :len(e["input_ids"])], atol=TOL, rtol=0)


TASKS = {
    "classification": (Classification(num_labels=3, pooling="mean"),
                       lambda: BertForSequenceClassification(CFG, num_labels=3, pooling="mean")),
    "token_classification": (TokenClassification(("O", "B-X", "I-X", "B-Y", "I-Y")),
                             lambda: BertForTokenClassification(CFG, num_labels=5)),
    "question_answering": (QuestionAnswering(), lambda: BertForQuestionAnswering(CFG)),
}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_sums_and_update_packed_equal_padded(name):
  task, make_model = TASKS[name]
  model = make_model()
  alone = padded(EXAMPLES)
  params = params_of(model, alone)
  if name == "question_answering":
    # Padded QA rows take the softmax over the whole row, padding included (as transformers);
    # packed ones over the window's own tokens: the reference is one window a row, unshared.
    alone = row_packing.pack(EXAMPLES, np.arange(len(EXAMPLES))[:, None], row_length=ROW,
                             token_keys=TOKEN_KEYS,
                             offset_keys=("start_positions", "end_positions"))
  batch, _ = packed(EXAMPLES)
  batches = {"padded": alone, "packed": batch}
  sums = {k: task.forward(model, params, jax.tree_util.tree_map(jnp.asarray, task.device_keys(b)),
                          deterministic=True, dropout_rng=None)[0]
          for k, b in batches.items()}
  for key in sums["padded"]:
    np.testing.assert_allclose(float(sums["packed"][key]), float(sums["padded"][key]),
                               rtol=TOL, err_msg=key)
  assert float(sums["packed"]["tokens_sum"]) == sum(len(e["input_ids"]) for e in EXAMPLES)
  # One optimizer step: the same update from either batch.
  tx, schedule = optim.make_optimizer(learning_rate=1e-3, total_steps=10, warmup_steps=1,
                                      eps=1e-3)
  step = jax.jit(functools.partial(steps.train_step, task=task, model=model, tx=tx,
                                   schedule=schedule))
  updated = {k: step(steps.create_train_state(params, tx),
                     jax.tree_util.tree_map(jnp.asarray, task.device_keys(b)),
                     jax.random.key(0))[0].params for k, b in batches.items()}
  chex.assert_trees_all_close(updated["packed"], updated["padded"], atol=TOL, rtol=0)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_packed_step_sharded_equals_one_device():
  task, make_model = TASKS["classification"]
  model = make_model()
  batch, _ = packed(EXAMPLES + make_examples(20, seed=5), rows=16)
  tx, schedule = optim.make_optimizer(learning_rate=1e-3, total_steps=10, warmup_steps=1,
                                      eps=1e-3)
  train = functools.partial(steps.train_step, task=task, model=model, tx=tx, schedule=schedule)
  evaluate = functools.partial(steps.eval_step, task=task, model=model)

  def init_fn(rng):
    ids = jnp.zeros((1, ROW), jnp.int32)
    return steps.create_train_state(model.init(rng, ids, ids, ids)["params"], tx)

  results = []
  for shape in ({"data": 1}, {"data": 4, "fsdp": 2}):
    needed = int(np.prod(list(shape.values())))
    runner = sharding.MeshRunner(sharding.make_mesh(shape, jax.devices()[:needed]),
                                 sharding.DEFAULT_RULES, train, evaluate)
    state = runner.init(init_fn, jax.random.key(0))
    state, metrics = runner.train_step(state, runner.put_batch(task.device_keys(batch)),
                                       runner.put_rng(jax.random.key(1)))
    results.append((float(metrics["loss_sum"]), jax.device_get(runner.host_state(state).params)))
  np.testing.assert_allclose(results[1][0], results[0][0], rtol=TOL)
  chex.assert_trees_all_close(results[1][1], results[0][1], atol=2e-5, rtol=0)


def _features(n=60, seed=3):
  batch = padded(make_examples(n, seed=seed))
  return {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask", "labels",
                                "label_mask", "start_positions", "end_positions")}


def _iterator(features, **kw):
  args = dict(token_keys=("input_ids", "token_type_ids", "labels", "label_mask"),
              offset_keys=("start_positions",), max_per_row=4, dataset="synthetic",
              split="train", global_batch_size=4, seed=7, shuffle=True, num_epochs=None)
  return input_pipeline.packed_array_iterator(features, **{**args, **kw})


def test_packed_iterator_covers_each_example_once_per_epoch():
  features = _features()
  it = _iterator(features, num_epochs=1)
  seen = []
  for batch in it:
    for r, s in zip(*np.nonzero(batch["example_mask"])):
      start = batch["cls_positions"][r, s]
      n = int((batch["segment_ids"][r] == s + 1).sum())
      ids = batch["input_ids"][r, start:start + n]
      match = [i for i in range(len(features["input_ids"]))
               if features["attention_mask"][i].sum() == n
               and (features["input_ids"][i, :n] == ids).all()]
      assert match, (r, s)
      i = match[0]
      assert batch["start_positions"][r, s] == features["start_positions"][i] + start
      np.testing.assert_array_equal(batch["labels"][r, start:start + n], features["labels"][i, :n])
      seen.append(i)
  assert sorted(seen) == list(range(len(features["input_ids"])))
  assert it.num_batches == len(it.plan)


def test_packed_iterator_resumes_and_splits_over_processes():
  features = _features()
  reference = _iterator(features)
  expected = [next(reference) for _ in range(25)]  # past the end of the first epoch
  it = _iterator(features)
  for _ in range(10):
    next(it)
  state = it.get_state()
  resumed = _iterator(features)
  resumed.set_state(state)
  for want in expected[10:]:
    chex.assert_trees_all_equal(next(resumed), want)
  halves = [_iterator(features, process_index=p, process_count=2) for p in range(2)]
  for want in expected[:3]:
    got = [next(h) for h in halves]
    chex.assert_trees_all_equal(jax.tree_util.tree_map(lambda a, b: np.concatenate([a, b]),
                                                       *got), want)
  with pytest.raises(ValueError, match="different input pipeline"):
    _iterator(features, max_per_row=3).set_state(state)


def test_packed_finetune_through_the_loop_resumes_exactly(tmp_path, data_dir):
  """The real loop with data.packing=True (tiny RT classifier): packed batches train, real
  tokens are counted, evaluation stays unpacked, and a run resumed from its middle checkpoint
  logs the same losses as the straight run."""
  import os
  import shutil

  from test_train import config_with, train_losses

  from bert_jax import train
  overrides = {"data.data_dir": data_dir, "data.max_seq_length": 64, "data.packing": True,
               "data.max_examples_per_row": 4, "model.hidden_size": 32,
               "model.num_hidden_layers": 1, "model.num_attention_heads": 2,
               "model.intermediate_size": 64, "batch_size": 8, "eval_batch_size": 64,
               "num_train_steps": 8, "log_every_steps": 1, "eval_every_steps": 8,
               "checkpoint_every_steps": 4, "keep_checkpoints": 3, "num_eval_batches": 2,
               "optimizer.warmup_steps": 1}
  workdir = str(tmp_path / "packed")
  result = train.train_and_evaluate(config_with("finetune_rotten_tomatoes", overrides,
                                                "scratch"), workdir)
  assert result["num_examples"] == 128  # evaluation: 2 unpacked batches of 64
  straight = train_losses(workdir)
  rows = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
  train_rows = [r for r in rows if r["split"] == "train"]
  assert all(r["num_examples"] > 8 for r in train_rows)  # more examples than rows a step
  shutil.rmtree(os.path.join(workdir, "checkpoints", "8"))
  train.train_and_evaluate(config_with("finetune_rotten_tomatoes", overrides, "scratch"),
                           workdir)
  resumed = train_losses(workdir)
  assert set(resumed) == set(straight)
  rows = [(r["step"], r["split"]) for r in map(json.loads, open(os.path.join(workdir,
                                                                            "metrics.jsonl")))]
  assert len(rows) == len(set(rows)), rows  # the resumed steps once each (issue 23 item 8)
  for step in range(5, 9):
    assert resumed[step] == straight[step], step
