"""Warmup as a fraction of the run (issue 23, item 15): the configs' default runs keep their
published warmup lengths, a shortened run warms up for the same fraction, an explicit
`warmup_steps` wins, and a warmup longer than half the run is warned about."""

from __future__ import annotations

import importlib

import pytest
from absl import logging

from bert_jax import optim, train
from bert_jax.errors import ConfigError

# (experiment module, config arg) -> warmup steps of the default run before the ratio existed.
PUBLISHED = {
    ("finetune_rotten_tomatoes", "minilm"): 65,
    ("finetune_csv", "minilm"): 65,
    ("ner_conll2003", "full"): 170,
    ("qa_squad", "full"): 49,
    ("qa_squad", "short"): 15,
    ("pretrain_tiny", ""): 50,
    ("pretrain_tiny", "long"): 900,
    ("pretrain_base", "128"): 10_000,
}


def _config(module: str, arg: str):
  return importlib.import_module(f"experiments.{module}").get_config(arg)


@pytest.mark.parametrize("module,arg", sorted(PUBLISHED))
def test_default_runs_keep_their_warmup(module, arg):
  assert train._warmup_steps(_config(module, arg)) == PUBLISHED[(module, arg)]


def test_a_shortened_run_warms_up_for_the_same_fraction():
  c = _config("ner_conll2003", "full")
  c.num_train_steps = 250
  assert train._warmup_steps(c) == round(250 * 170 / 1710) == 25


def test_explicit_warmup_steps_wins_and_long_warmup_warns(monkeypatch):
  c = _config("ner_conll2003", "full")
  c.num_train_steps, c.optimizer.warmup_steps = 250, 170
  warned = []
  monkeypatch.setattr(logging, "warning", lambda msg, *a: warned.append(msg % a))
  assert train._warmup_steps(c) == 170
  assert len(warned) == 1 and "more than half" in warned[0]


def test_rounding_and_bad_ratio():
  assert optim.warmup_steps(493, 0.1) == 49
  assert optim.warmup_steps(10, 0.01) == 1
  assert optim.warmup_steps(10, 0.0) == 0
  c = _config("ner_conll2003", "full")
  c.optimizer.warmup_ratio = 1.5
  with pytest.raises(ConfigError, match="warmup_ratio"):
    train._warmup_steps(c)
