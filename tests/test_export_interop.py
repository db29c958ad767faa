"""An export is a whole transformers directory: its tokenizer files load in `AutoTokenizer`
with the model's length limit (`pipeline(..., truncation=True)` on a long text runs), and a QA
export keeps the windows of its workdir (`bert_jax_max_seq_length`, ...) for `answer`."""

import dataclasses
import json
import os

import pytest
from test_cli_reliability import _hf_dir, clf_workdir  # noqa: F401  (a fixture)

from bert_jax.tasks.question_answering import windows as qa_windows

transformers = pytest.importorskip("transformers")

TEXTS = ["the film was good", "A BAD film, Where is it?", "naïve café [MASK] rhine", "",
         "the film was good", "what flows through the river"]


def test_export_writes_tokenizer_files_transformers_loads(clf_workdir, tmp_path):  # noqa: F811
  from bert_jax import export, inference
  out = str(tmp_path / "hf")
  export.export(clf_workdir, out)
  for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json"):
    assert os.path.isfile(os.path.join(out, name)), name
  with open(os.path.join(out, "tokenizer_config.json")) as f:
    tok_config = json.load(f)
  assert tok_config["tokenizer_class"] == "BertTokenizer" and tok_config["do_lower_case"]
  loaded = inference.load(clf_workdir)
  limit = loaded.config.max_position_embeddings
  theirs = transformers.AutoTokenizer.from_pretrained(out)
  assert theirs.model_max_length == limit
  ours = loaded.tokenizer
  for text in TEXTS:
    row = ours.encode(text, max_length=limit)
    assert theirs(text)["input_ids"] == row["input_ids"][row["attention_mask"] == 1].tolist()
  pair = theirs("where is it", "the rhine")
  expected = ours.encode("where is it", "the rhine", max_length=len(pair["input_ids"]))
  assert pair["token_type_ids"] == expected["token_type_ids"].tolist()
  assert theirs.cls_token == "[CLS]" and theirs.mask_token == "[MASK]"

  long_text = " ".join(["good film"] * 501)  # 1,002 pieces
  assert len(ours.tokenize_to_ids([long_text])[0]) > 1000
  model = transformers.AutoModelForSequenceClassification.from_pretrained(out)
  classify = transformers.pipeline("text-classification", model=model, tokenizer=theirs,
                                   device="cpu")
  (result,) = classify([long_text], truncation=True)
  assert result["label"] in loaded.label_names
  # The directory alone is enough for a pipeline.
  (result,) = transformers.pipeline("text-classification", model=out, device="cpu")(
      [long_text], truncation=True)
  assert result["label"] in loaded.label_names


def test_qa_export_keeps_its_windows(tmp_path, monkeypatch):
  from bert_jax import answer, export, hf, inference
  from bert_jax.tasks.question_answering import QuestionAnswering
  source = _hf_dir(tmp_path / "src", "BertForQuestionAnswering")  # max_position_embeddings 256
  base = inference.load(source, task="question_answering")
  assert (base.max_seq_length, base.task.doc_stride) == (256, 128)  # no settings: defaults
  task = QuestionAnswering(max_query_length=12, doc_stride=16, n_best_size=7,
                           max_answer_length=9)
  workdir = dataclasses.replace(base, task=task, max_seq_length=48)  # as a workdir loads
  monkeypatch.setattr(inference, "load", lambda path, task=None: workdir)
  out = str(tmp_path / "hf")
  assert export.export("qa_workdir", out) == "BertForQuestionAnswering"
  monkeypatch.undo()

  with open(os.path.join(out, "config.json")) as f:
    written = json.load(f)
  assert {k: v for k, v in written.items() if k.startswith("bert_jax_")} == {
      "bert_jax_max_seq_length": 48, "bert_jax_doc_stride": 16, "bert_jax_max_query_length": 12,
      "bert_jax_n_best_size": 7, "bert_jax_max_answer_length": 9}
  config, _ = hf.load_hf_checkpoint(out, head="question_answering")  # no bert_jax_* in it
  assert config.max_position_embeddings == 256
  exported = inference.load(out, task="question_answering")
  assert exported.max_seq_length == 48 and exported.task == task
  # answer on the export reads the workdir's windows: a long context needs several.
  seen, encode = {}, qa_windows.encode

  def spy(*args, **kwargs):
    seen.update({k: kwargs[k] for k in ("max_seq_length", "doc_stride", "max_query_length")})
    return encode(*args, **kwargs)

  monkeypatch.setattr(qa_windows, "encode", spy)
  context = " ".join(["the river flows through the rhine ."] * 20)
  (result,) = answer.answer(exported, ["where is it ?"], [context])
  assert seen == {"max_seq_length": 48, "doc_stride": 16, "max_query_length": 12}
  assert context[result["start"]:result["end"]] == result["answer"]
  # transformers still loads it, and ignores the bert_jax_* keys.
  model = transformers.AutoModelForQuestionAnswering.from_pretrained(out)
  assert type(model).__name__ == "BertForQuestionAnswering"
