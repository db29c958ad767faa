"""Every output file gets the user's umask: the files written through a temporary file
(predictions.conll, predictions.json, split_squad's outputs) and an export's model.safetensors
(safetensors itself writes 0600) are as readable as the files a plain `open` creates."""

import os
import stat

import numpy as np
import pytest

from bert_jax import BertConfig, fileio, hf
from bert_jax.model import BertModel
from bert_jax.tasks.token_classification import metrics as ner_metrics
from bert_jax.tasks.token_classification.conll import Sentence


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
  old = os.umask(request.param)
  yield request.param
  os.umask(old)


def _mode(path) -> int:
  return stat.S_IMODE(os.stat(path).st_mode)


def test_output_mode_reads_the_umask_without_changing_it(umask):
  assert fileio.umask() == umask
  assert fileio.output_mode() == 0o666 & ~umask
  assert fileio.umask() == umask


def test_predictions_and_json_outputs_get_the_umask(umask, tmp_path):
  plain = tmp_path / "plain.txt"
  plain.write_text("x")
  expected = _mode(plain)
  assert expected == 0o666 & ~umask
  conll = tmp_path / "predictions.conll"
  ner_metrics.write_conll(str(conll), [Sentence(("EU", "rejects"), ("B-ORG", "O"))],
                          [["B-ORG", "O"]])
  assert _mode(conll) == expected
  written = tmp_path / "predictions.json"
  fileio.write_json_atomic(str(written), {"q1": "the rhine"})
  assert _mode(written) == expected


def test_export_files_get_the_umask(umask, tmp_path):
  import jax
  config = BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=32, max_position_embeddings=16)
  ids = np.ones((1, 4), np.int32)
  params = BertModel(config).init(jax.random.PRNGKey(0), ids, np.ones_like(ids))["params"]
  out = tmp_path / "hf"
  hf.save_hf_checkpoint(str(out), config, params, extra_files={"vocab.txt": "[PAD]\n"})
  for name in ("model.safetensors", "config.json", "vocab.txt"):
    assert _mode(out / name) == 0o666 & ~umask, name
