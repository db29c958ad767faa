"""Helpers the tasks share: id2label parsing (hf.id2label_names), the TFDS-or-file read and
the reported means (bert_jax/tasks/shared.py)."""

import pytest

from bert_jax import hf
from bert_jax.errors import ConfigError
from bert_jax.tasks import get, shared


def test_id2label_names_ordered_by_id():
  config = {"id2label": {"2": "I-PER", "0": "O", "1": "B-PER"}}
  assert hf.id2label_names("d", config) == ["O", "B-PER", "I-PER"]
  assert hf.id2label_names("d", {}) is None
  with pytest.raises(ConfigError, match=r"^d/config.json has no id2label: not a thing$"):
    hf.id2label_names("d", {"id2label": {}}, "a thing")
  for bad in ({"0": "a", "2": "b"}, {"1": "a"}, {"x": "a"}, {"0": "a", "00": "b"}, ["a"]):
    with pytest.raises(ConfigError, match=r"^d/config.json: the id2label ids .* are not 0\.\."):
      hf.id2label_names("d", {"id2label": bad})


def test_tasks_read_id2label_through_one_function():
  config = {"id2label": {"1": "pos", "0": "neg"}}
  assert get("classification").from_transformers_config("d", config).label_names == (
      "neg", "pos")
  assert get("token_classification").from_transformers_config("d", config).label_names == (
      "neg", "pos")
  with pytest.raises(ConfigError, match="has no id2label: not a fine-tuned classifier"):
    get("classification").from_transformers_config("d", {})
  with pytest.raises(ConfigError, match="has no id2label: not a token classifier"):
    get("token_classification").from_transformers_config("d", {})
  with pytest.raises(ConfigError, match="are not 0"):
    get("token_classification").from_transformers_config("d", {"id2label": {"1": "x"}})


def test_read_file_or_tfds(tmp_path):
  path = tmp_path / "a:b.txt"  # a file whose name holds ':' is still a file
  path.write_text("x")
  read = lambda source: shared.read_file_or_tfds(
      source, lambda p: ("file", p), lambda name: ("tfds", name))
  assert read(str(path)) == ("file", str(path))
  assert read("conll2003:train") == ("tfds", "conll2003")
  with pytest.raises(FileNotFoundError, match=r"^/no/such\.json: no such file$"):
    read("/no/such.json")


def test_summary_keeps_the_order_of_the_metrics():
  sums = {"loss_sum": 6.0, "correct_sum": 2.0, "label_count": 4.0, "tokens_sum": 9.0,
          "learning_rate": 0.1}
  out = shared.summary(sums, "label_count", "num_labelled_pieces", piece_accuracy="correct_sum")
  assert list(out.items()) == [("learning_rate", 0.1), ("loss", 1.5), ("piece_accuracy", 0.5),
                               ("num_labelled_pieces", 4.0), ("num_tokens", 9.0)]
  assert shared.summary({"loss_sum": 0.0, "n_count": 0.0}, "n_count", "num") == {
      "loss": 0.0, "num": 0.0, "num_tokens": 0.0}
