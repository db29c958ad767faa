"""report.py: error analysis numbers on hand-made predictions, report.md contents."""

import json
import os
import sys
import types

import numpy as np
import pytest

from bert_jax import report
from bert_jax.config import BertConfig
from bert_jax.tasks.classification import analysis as clf_analysis

NAMES = ["negative", "positive"]


def _words(n: int) -> str:
  return " ".join(["w"] * n)


def _example():
  # gold, p(positive), words: two right, three wrong with known confidences.
  texts = [_words(5), _words(15), _words(25), _words(35), _words(8)]
  labels = [0, 1, 0, 1, 1]
  p_pos = np.array([0.1, 0.8, 0.9, 0.3, 0.45])
  probs = np.stack([1 - p_pos, p_pos], axis=1)  # [5, 2]
  return texts, labels, probs


def test_error_analysis_counts():
  a = clf_analysis.error_analysis(*_example(), NAMES)
  assert a["num_examples"] == 5
  assert a["accuracy"] == pytest.approx(2 / 5)
  # rows gold, columns predicted: neg->neg 1, neg->pos 1, pos->neg 2, pos->pos 1.
  assert a["confusion_matrix"] == [[1, 1], [2, 1]]
  neg, pos = a["per_label"]
  assert (neg["count"], pos["count"]) == (2, 3)
  assert neg["precision"] == pytest.approx(1 / 3) and neg["recall"] == pytest.approx(1 / 2)
  assert pos["precision"] == pytest.approx(1 / 2) and pos["recall"] == pytest.approx(1 / 3)
  by = {b["bucket"]: (b["count"], b["accuracy"]) for b in a["by_length"]}
  assert by == {"<=10": (2, 0.5), "11-20": (1, 1.0), "21-30": (1, 0.0), ">30": (1, 0.0)}
  json.dumps(a)  # JSON-ready


def test_confidently_wrong_order_and_top_k():
  a = clf_analysis.error_analysis(*_example(), NAMES, top_k=2)
  wrong = a["confidently_wrong"]
  assert [w["probability"] for w in wrong] == pytest.approx([0.9, 0.7])
  assert wrong[0] == {"text": _words(25), "label": "negative", "predicted": "positive",
                      "probability": pytest.approx(0.9), "words": 25}
  assert wrong[1]["label"] == "positive" and wrong[1]["predicted"] == "negative"
  all_wrong = clf_analysis.error_analysis(*_example(), NAMES, top_k=10)["confidently_wrong"]
  assert len(all_wrong) == 3 and all_wrong[-1]["probability"] == pytest.approx(0.55)


def test_words_ignore_punctuation_spacing():
  # The raw sentence and the tokenizer's decoding of it fall in the same bucket.
  assert clf_analysis.count_words("it's a gross-out , isn't it ?") == 8
  assert clf_analysis.count_words("it ' s a gross - out, isn ' t it?") == 8


def test_empty_bucket_and_all_correct():
  a = clf_analysis.error_analysis(["a b", "c"], [0, 1], np.array([[0.9, 0.1], [0.2, 0.8]]), NAMES)
  assert a["accuracy"] == 1.0 and a["confidently_wrong"] == []
  assert {b["bucket"]: b["accuracy"] for b in a["by_length"]}[">30"] is None


def test_error_analysis_rejects_mismatched_shapes():
  with pytest.raises(ValueError, match="probs"):
    clf_analysis.error_analysis(["a", "b"], [0, 1], np.ones((3, 2)) / 2, NAMES)
  with pytest.raises(ValueError, match="labels must lie"):
    clf_analysis.error_analysis(["a"], [2], np.ones((1, 2)) / 2, NAMES)


def test_command_line():
  main = os.path.join("/x", "bert_jax", "main.py")
  assert report.command_line([main, "--config=e.py:scratch", "--workdir=a b"]) == (
      "python -m bert_jax.main --config=e.py:scratch '--workdir=a b'")
  assert report.command_line().startswith("python")


def test_train_tokens_per_sec_skips_compile_rows(tmp_path):
  path = tmp_path / "metrics.jsonl"
  rows = [{"step": 1, "split": "train", "tokens_per_sec": 10.0, "steps_per_sec": 0.1},
          {"step": 11, "split": "train", "tokens_per_sec": 1000.0, "steps_per_sec": 1.0},
          {"step": 11, "split": "eval", "accuracy": 0.5},
          {"step": 31, "split": "train", "tokens_per_sec": 4000.0, "steps_per_sec": 2.0}]
  path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  # 10 s at 1000 tok/s + 10 s at 4000 tok/s; the first (compiling) row is left out.
  assert report.train_tokens_per_sec(str(path)) == pytest.approx(2500.0)
  assert report.train_tokens_per_sec(str(tmp_path / "missing.jsonl")) is None


def test_write_report(tmp_path):
  from bert_jax.tokenizer import Tokenizer
  tok = Tokenizer()
  analysis = clf_analysis.error_analysis(*_example(), NAMES)
  config_dict = {"data": {"name": "rotten_tomatoes", "max_seq_length": 32}, "seed": 1,
                 "init_from": "", "num_train_steps": 10, "batch_size": 4,
                 "optimizer": {"name": "adamw", "learning_rate": 2e-4}}
  cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=64)
  # Two train rows: 20 steps at 2 steps/s after the first (compile) row -> 3,456 tokens/s.
  (tmp_path / "metrics.jsonl").write_text(
      '{"split": "train", "step": 1, "tokens_per_sec": 10.0, "steps_per_sec": 1.0}\n'
      '{"split": "train", "step": 21, "tokens_per_sec": 3456.0, "steps_per_sec": 2.0}\n')
  run = types.SimpleNamespace(
      workdir=str(tmp_path), config=config_dict, model_config=cfg, num_params=123_456,
      tokenizer=tok, eval_results={"accuracy": 0.4, "step": 10}, wall_time_s=12.5, device="")
  path = report.write_report(
      run, analysis=analysis, failure_lines=clf_analysis.failure_lines(analysis),
      examples=[(report.EXAMPLE_SINGLE, None), report.EXAMPLE_PAIR],
      command="python -m bert_jax.main --x")
  text = open(path, encoding="utf-8").read()
  for section in ("## Model", "## Tokenizer", "## Result", "## Failure check", "## Cost",
                  "## Command"):
    assert section in text
  assert "random initialization" in text and "123,456" in text and "3,456 tokens/s" in text
  assert "| step | 10 |" in text and "| accuracy | 0.4000 |" in text
  # The pair's segment ids as the tokenizer gives them (0 ... 0 1 ... 1, then one [PAD]).
  enc = tok.encode(*report.EXAMPLE_PAIR, max_length=32)
  seg_line = [l for l in text.splitlines() if l.startswith("token_type_ids")][1]
  n = int(enc["attention_mask"].sum())
  assert seg_line.split()[1:] == [str(s) for s in enc["token_type_ids"][:n + 1]]
  assert "[CLS]" in text and "[SEP]" in text and "input_ids      101" in text
  assert "| positive | 2 | 1 |" in text  # confusion row
  assert "python -m bert_jax.main --x" in text
  facts = json.load(open(tmp_path / "report.json"))
  assert facts["num_params"] == 123_456 and facts["analysis"]["accuracy"] == pytest.approx(0.4)


def test_report_does_not_import_the_data_pipeline():
  import subprocess
  heavy = ("tensorflow_datasets", "grain", "bert_jax.train")
  code = f"import sys, bert_jax.report; print(any(m in sys.modules for m in {heavy!r}))"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert out.stdout.strip() == "False"
