"""The prediction CLIs (answer, predict, encode, tag, fill_mask) on inputs a user gets wrong:
a typo'd context file, inputs longer than the model reads, empty stdin, a checkpoint without
the head asked for, and the Orbax chatter of a read-only restore (issue 23)."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from test_pooling import train_tiny_classifier
from test_reliability import assert_one_line_error

from bert_jax import fileio
from bert_jax.tasks.question_answering import reader as qa_reader
from bert_jax.tasks.question_answering import windows as qa_windows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ["the", "a", "film", "good", "bad", "who", "where", "what", "is", "it", "in", "river",
         "flows", "through", "rhine", "?", "."]
ORBAX_NOTES = ("read_only=True", "Metadata file does not exist", "directory is read only")


def run_cli(name: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  return subprocess.run([sys.executable, "-m", f"bert_jax.{name}", *args], cwd=ROOT, env=env,
                        input=stdin, capture_output=True, text=True, timeout=300)


def warning_lines(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if line.startswith("warning: ")]


@pytest.fixture(scope="module")
def clf_workdir(tmp_path_factory):
  """A tiny classifier trained one step through train.py (max_seq_length 32)."""
  return train_tiny_classifier(tmp_path_factory.mktemp("clf"), n_train=32, n_eval=16,
                               hidden=16, steps=1)


def _hf_dir(path, architecture: str) -> str:
  """A tiny random transformers checkpoint with its own vocab.txt (WORDS)."""
  transformers = pytest.importorskip("transformers")
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "vocab.txt"), "w") as f:
    f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
  config = transformers.BertConfig(vocab_size=len(WORDS) + 5, hidden_size=16,
                                   num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32, max_position_embeddings=256)
  getattr(transformers, architecture)(config).save_pretrained(path)
  return str(path)


# --- answer: the context is a file or a text, never a guess ---------------------------------

def test_answer_context_file_is_never_guessed(clf_workdir, tmp_path):
  missing = str(tmp_path / "nofile.txt")
  proc = run_cli("answer", f"--checkpoint={clf_workdir}", f"--context_file={missing}",
                 "What is it?")
  assert_one_line_error(proc, r"nofile\.txt")
  # A --context that names a file, or looks like a file name, is refused (it used to be
  # answered from the string "d/nofile.txt", exit code 0).
  proc = run_cli("answer", f"--checkpoint={clf_workdir}", "--context=d/nofile.txt",
                 "What is it?")
  assert_one_line_error(proc, r"--context 'd/nofile\.txt' looks like a file name.*--context_file")
  both = ("--context=The Rhine flows.", f"--context_file={missing}")
  assert_one_line_error(run_cli("answer", f"--checkpoint={clf_workdir}", *both, "Where?"),
                        r"not both")


# --- answer: a checkpoint without a QA head is one line --------------------------------------

def test_answer_on_a_transformers_dir_without_a_qa_head_is_one_line(tmp_path):
  path = _hf_dir(tmp_path / "mlm", "BertForMaskedLM")
  proc = run_cli("answer", f"--checkpoint={path}", "--context=The Rhine flows through Basel.",
                 "Where does the Rhine flow?")
  assert_one_line_error(proc, r"BertForMaskedLM checkpoint, without the question_answering "
                              r"head of a transformers BertForQuestionAnswering")


# --- cut inputs are counted and reported ------------------------------------------------------

@pytest.mark.parametrize("cli", ["predict", "encode"])
def test_a_cut_line_is_counted_on_stderr(cli, clf_workdir, tmp_path):
  long_line = " ".join(["good"] * 50_000)
  stdin = f"a good film\n\n{long_line}\n"
  out = tmp_path / "v.npy"
  args = [f"--checkpoint={clf_workdir}"] + ([f"--out={out}"] if cli == "encode" else [])
  proc = run_cli(cli, *args, stdin=stdin)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert warning_lines(proc.stderr) == [
      "warning: 1 of 2 lines longer than 30 pieces were cut to their first 30 (line 3); the "
      "model never saw the rest"], proc.stderr[-3000:]
  if cli == "predict":  # the long text is not echoed back whole
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and lines[0].endswith("\ta good film")
    assert len(lines[1]) < 300 and lines[1].endswith("...")
  else:
    assert np.load(out).shape == (2, 16)


def test_a_cut_question_is_counted(tmp_path):
  from bert_jax import answer, inference
  path = _hf_dir(tmp_path / "qa", "BertForQuestionAnswering")
  loaded = inference.load(path, task="question_answering")
  long_question = " ".join(["what"] * 70) + " ?"
  cut = []
  results = answer.answer(loaded, ["where is it ?", long_question],
                          ["the river flows through the rhine ."] * 2, truncated=cut)
  assert cut == [1] and len(results) == 2
  # The CLI reports it on stderr.
  proc = run_cli("answer", f"--checkpoint={path}", "--context=the river flows in the rhine .",
                 "where is it ?", long_question)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert len(proc.stdout.splitlines()) == 2
  assert warning_lines(proc.stderr) == [
      "warning: 1 of 2 questions longer than 64 pieces were cut to their first 64 (question 2); "
      "the model never saw the rest"], proc.stderr[-3000:]


def test_squad_encode_and_the_report_count_cut_questions(tok, tmp_path):
  from bert_jax.tasks.question_answering import task as qa
  context = "The Denver Broncos won Super Bowl 50."
  examples = [qa_reader.Example("q1", "", "Who won?", context, (("Denver Broncos", 4),)),
              qa_reader.Example("q2", "", "Who " * 20 + "won?", context, (("Denver Broncos", 4),))]
  cut = []
  qa_windows.encode(examples, tok, max_seq_length=64, max_query_length=8, doc_stride=16,
                    training=True, truncated=cut)
  assert cut == [1]
  data = {"version": "1.1", "data": [{"title": "T", "paragraphs": [{"context": context, "qas": [
      {"id": e.id, "question": e.question,
       "answers": [{"text": "Denver Broncos", "answer_start": 4}]} for e in examples]}]}]}
  path = str(tmp_path / "squad.json")
  fileio.write_json_atomic(path, data)
  found = qa._questions_cut(path, "train", True, "", "", 8)
  assert found == {"cut": 1, "questions": 2, "first": "q2"}
  lines = qa.failure_lines({"windows": {"questions": 2, "windows": 2, "windowed_questions": 0,
                                        "max_windows": 1},
                            "questions_cut": {"max_query_length": 8, "train": found,
                                              "eval": {"cut": 0, "questions": 2, "first": ""}}})
  assert ("Questions longer than max_query_length=8 pieces, cut to their first 8: 1 of 2 train "
          "(first: q2), 0 of 2 eval.") in lines


# --- empty input: one behaviour for every CLI -------------------------------------------------

@pytest.mark.parametrize("cli", ["predict", "encode", "tag", "answer", "fill_mask"])
def test_empty_stdin_is_no_input_error(cli, clf_workdir, tmp_path):
  args = [f"--checkpoint={clf_workdir}"] + ([f"--out={tmp_path}/v.npy"] if cli == "encode"
                                            else [])
  proc = run_cli(cli, *args, stdin="\n  \n")
  assert_one_line_error(proc, r"^error: no input: stdin has no ")


# --- training QA answers that all miss their context ------------------------------------------

def test_all_training_answers_misaligned_names_the_cause(tmp_path):
  data = {"version": "1.1", "data": [{"title": "T", "paragraphs": [{
      "context": "The Denver Broncos won Super Bowl 50.",
      "qas": [{"id": f"q{i}", "question": "Who won?",
               "answers": [{"text": "Denver Broncos", "answer_start": 9}]} for i in range(3)]}]}]}
  path = str(tmp_path / "squad.json")
  fileio.write_json_atomic(path, data)
  with pytest.raises(ValueError) as e:
    qa_reader.read_squad(path, training=True)
  message = str(e.value)
  assert "batch_size" not in message
  assert re.search(r"all 3 answers do not match their context at answer_start \(the first, "
                   r"question q0: 'Denver Broncos' at 9", message), message
  assert len(qa_reader.read_squad(path)) == 3  # evaluation keeps them as references


# --- no Orbax chatter before the output -------------------------------------------------------

def test_cli_on_a_workdir_prints_no_orbax_notes(clf_workdir):
  proc = run_cli("predict", f"--checkpoint={clf_workdir}", stdin="a good film\n")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert len(proc.stdout.splitlines()) == 1
  noisy = [line for line in proc.stderr.splitlines() if any(n in line for n in ORBAX_NOTES)]
  assert not noisy, proc.stderr
