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
