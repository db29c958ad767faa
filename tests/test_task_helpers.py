"""Helpers the tasks share: id2label parsing (hf.id2label_names)."""

import pytest

from bert_jax import hf
from bert_jax.errors import ConfigError
from bert_jax.tasks import get


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
