"""Every test sees 8 CPU devices (set before anything imports jax); shared fixtures."""

import os

import pytest

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def tok():
  """The default bert-base-uncased WordPiece tokenizer."""
  from bert_jax.tokenizer import Tokenizer  # after XLA_FLAGS above: bert_jax imports jax
  return Tokenizer()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """A fresh tensorflow-datasets data directory per test module."""
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def shared_data():
  """The real evaluation data folder ($BERT_JAX_SHARED_DATA, else <repo>/../shared/data)."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  root = os.environ.get("BERT_JAX_SHARED_DATA") or os.path.join(repo, "..", "shared", "data")
  if not os.path.isdir(root):
    pytest.skip(f"the shared real data is not at {root} (set BERT_JAX_SHARED_DATA)")
  return os.path.abspath(root)


@pytest.fixture
def tiny_csv_classifier():
  """make(tmp_path, train_file, eval_file): experiments/finetune_csv.py:scratch shrunk to a
  1-layer, hidden-16 model that trains 3 steps on the CSVs and evaluates once at the end."""
  return _tiny_csv_classifier


def _tiny_csv_classifier(tmp_path, train_file: str, eval_file: str):
  from experiments import finetune_csv
  c = finetune_csv.get_config("scratch")  # packed training rows
  c.data.update(train_file=train_file, eval_file=eval_file, data_dir=str(tmp_path / "tfds"),
                max_seq_length=16)
  c.model.update(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=32, max_position_embeddings=16)
  c.update(batch_size=8, eval_batch_size=8, num_train_steps=3, log_every_steps=1,
           eval_every_steps=3, checkpoint_every_steps=3)
  c.optimizer.update(warmup_steps=0, learning_rate=1e-3)
  return c
