"""SQuAD host side: reading and its errors, the article split, windows and offsets on real
paragraphs (parity with transformers' overflowing windows), post-processing, the official
metric on hand-checked cases, error analysis."""

import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bert_jax.tasks.question_answering import metrics as qa_metrics
from bert_jax.tasks.question_answering import prediction as qa_prediction
from bert_jax.tasks.question_answering import reader as qa_reader
from bert_jax.tasks.question_answering import windows as qa_windows

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("BERT_JAX_SHARED_DATA") or os.path.join(REPO, "..", "shared", "data")
SQUAD_FILE = os.path.join(SHARED, "squad_v1.1", "dev-v1.1-part.json")
EVAL_TITLES = ["Intergovernmental_Panel_on_Climate_Change", "Chloroplast", "Prime_number",
               "Rhine", "Scottish_Parliament", "Islamism", "Imperialism",
               "United_Methodist_Church", "French_and_Indian_War", "Force"]
# (max_seq_length, doc_stride): the default, and a small window that forces several per
# paragraph.
WINDOWS = [(384, 128), (128, 32)]


@pytest.fixture(scope="module")
def examples():
  if not os.path.isfile(SQUAD_FILE):
    pytest.skip(f"shared SQuAD file absent: {SQUAD_FILE} (set BERT_JAX_SHARED_DATA)")
  return qa_reader.read_squad(SQUAD_FILE)


@pytest.fixture(scope="module")
def encoded(examples, tok):
  return {(s, stride): qa_windows.encode(examples, tok, max_seq_length=s, doc_stride=stride,
                                         training=False)
          for s, stride in WINDOWS}


def _squad_json(qas, context="The Denver Broncos won Super Bowl 50.", title="T"):
  return {"version": "1.1", "data": [{"title": title, "paragraphs": [
      {"context": context, "qas": qas}]}]}


def _qa(qid="q1", question="Who won?", answers=(("Denver Broncos", 4),)):
  return {"id": qid, "question": question,
          "answers": [{"text": t, "answer_start": s} for t, s in answers]}


def _write(tmp_path, value, name="squad.json") -> str:
  path = tmp_path / name
  if isinstance(value, bytes):
    path.write_bytes(value)
  else:
    path.write_text(value if isinstance(value, str) else json.dumps(value), encoding="utf-8")
  return str(path)


# ---------------------------------------------------------------------------------------------
# Reading


def test_read_real_file(examples):
  assert len(examples) == 9380
  assert len({e.id for e in examples}) == 9380
  assert len({e.title for e in examples}) == 48
  assert len({e.context for e in examples}) == 1827
  assert examples[0].title == "Super_Bowl_50"
  for e in examples:  # the README promises every span matches
    assert 1 <= len(e.answers) <= 6
    for text, start in e.answers:
      assert e.context[start:start + len(text)] == text, e.id


def test_read_small_file(tmp_path):
  path = _write(tmp_path, _squad_json([_qa(), _qa("q2", "What?", [("Super Bowl 50", 23),
                                                                    ("Super Bowl", 23)])]))
  e = qa_reader.read_squad(path)
  assert e[0] == qa_reader.Example("q1", "T", "Who won?", "The Denver Broncos won Super Bowl 50.",
                                   (("Denver Broncos", 4),))
  assert e[1].answers == (("Super Bowl 50", 23), ("Super Bowl", 23))


@pytest.mark.parametrize("content, message", [
    (b'{"data": "\xff"}', "invalid UTF-8 at byte offset 10 (invalid start byte)"),
    ('{"data": [\n  {"title": }', ":2:13: not valid JSON"),
    ({"version": "1.1"}, "no top-level 'data' list"),
    (_squad_json([_qa()], context="  \n"), "question q1: context has no text"),
    (_squad_json([_qa(question=" ")]), "question q1: empty question"),
    (_squad_json([_qa(answers=())]), "question q1: no answers"),
    (_squad_json([_qa(answers=(("", 4),))]), "question q1: an answer has no text"),
    (_squad_json([_qa(answers=(("Denver", "4"),))]), "question q1: answer_start '4' is not"),
    (_squad_json([_qa(), _qa()]), "question q1: id appears twice"),
    (_squad_json([{**_qa(), "is_impossible": True}]), "question q1: is_impossible (SQuAD v2"),
])
def test_read_errors_are_one_line_naming_file_and_question(tmp_path, content, message):
  path = _write(tmp_path, content)
  with pytest.raises(ValueError) as e:
    qa_reader.read_squad(path, training=True)
  assert str(e.value).startswith(path) and message in str(e.value)
  assert "\n" not in str(e.value)


def test_mismatched_answer_start_dropped_for_training_kept_for_eval(tmp_path):
  qas = [_qa("q1", answers=[("Denver Broncos", 5)]),  # off by one: q1 loses its only answer
         _qa("q2", answers=[("Super Bowl", 0), ("Super Bowl", 23)]),  # first one wrong
         _qa("q3")]
  path = _write(tmp_path, _squad_json(qas))
  with pytest.warns(UserWarning, match=r"dropped 2 training answers .*\(1 questions left"):
    train = qa_reader.read_squad(path, training=True)
  assert [e.id for e in train] == ["q2", "q3"]
  assert train[0].answers == (("Super Bowl", 23),)
  evaluation = qa_reader.read_squad(path)
  assert [len(e.answers) for e in evaluation] == [1, 2, 1]


def test_tfds_records():
  records = [{"id": b"a1", "title": b"T", "context": "Caf\u00e9 ol\u00e9".encode(),
              "question": b"Where?", "answers": {"text": np.array([b"ol\xc3\xa9"]),
                                                 "answer_start": np.array([5], np.int32)}}]
  [e] = qa_reader.examples_from_records(records, source="tfds:squad")
  assert e == qa_reader.Example("a1", "T", "Where?", "Café olé", (("olé", 5),))


def test_tokenize_with_offsets(tok):
  texts = ["The Denver Broncos' unaffable café, 1990s!", "", "\x07 tab\tx"]
  out = tok.tokenize_with_offsets(texts)
  for text, (ids, offsets), plain in zip(texts, out, tok.tokenize_to_ids(texts)):
    np.testing.assert_array_equal(ids, plain)
    assert ids.dtype == offsets.dtype == np.int32 and offsets.shape == (len(ids), 2)
  ids, offsets = out[0]
  assert [texts[0][a:b] for a, b in offsets] == [
      "The", "Denver", "Broncos", "'", "una", "ffa", "ble", "café", ",", "1990s", "!"]
  assert tok.convert_ids_to_tokens(ids)[4:8] == ["una", "##ffa", "##ble", "cafe"]
  assert [texts[2][a:b] for a, b in out[2][1]] == ["tab", "x"]


# ---------------------------------------------------------------------------------------------
# Split


def test_split_articles_real_file(examples):
  with open(SQUAD_FILE, encoding="utf-8") as f:
    data = json.load(f)
  train, evaluation = qa_reader.split_articles(SQUAD_FILE)
  assert [a["title"] for a in evaluation["data"]] == EVAL_TITLES
  assert train["data"] + evaluation["data"] == data["data"]
  assert not {a["title"] for a in train["data"]} & {a["title"] for a in evaluation["data"]}
  assert qa_reader.squad_counts(train) == {"articles": 38, "paragraphs": 1456, "questions": 7612}
  assert qa_reader.squad_counts(evaluation) == {"articles": 10, "paragraphs": 371,
                                                "questions": 1768}
  assert qa_reader.split_articles(data, 3)[1]["data"] == data["data"][-3:]


@pytest.mark.parametrize("num_eval", [0, 2])
def test_split_needs_an_article_on_each_side(num_eval):
  data = {"data": [{"title": "a", "paragraphs": []}, {"title": "b", "paragraphs": []}]}
  with pytest.raises(ValueError, match=f"between 1 and 1 .*got {num_eval}"):
    qa_reader.split_articles(data, num_eval)


def test_split_script(examples, tmp_path):
  out = tmp_path / "split"
  proc = subprocess.run([sys.executable, "-m", "bert_jax.tasks.question_answering.split",
                         "--squad", SQUAD_FILE, "--out", str(out)], capture_output=True,
                        text=True, check=True, cwd=REPO, timeout=300)
  assert "train: 38 articles, 1456 paragraphs, 7612 questions" in proc.stdout
  assert "eval: 10 articles, 371 paragraphs, 1768 questions" in proc.stdout
  train = qa_reader.read_squad(str(out / "train.json"))
  evaluation = qa_reader.read_squad(str(out / "eval.json"))
  assert (len(train), len(evaluation)) == (7612, 1768)
  assert not {e.title for e in train} & {e.title for e in evaluation}
  assert not {e.context for e in train} & {e.context for e in evaluation}
  assert {e.id for e in train} | {e.id for e in evaluation} == {e.id for e in examples}
  assert sorted(os.listdir(out)) == ["eval.json", "train.json"]  # no temporary files left


# ---------------------------------------------------------------------------------------------
# Features


def test_encode_hand_checked_layout(tok):
  # Pieces: the denver broncos won super bowl 50 . (8); windows of 12 - 3 - 3 = 6 pieces
  # overlapping by 2: pieces 0-5 and 4-7.
  e = qa_reader.Example("q1", "T", "Who won?", "The Denver Broncos won Super Bowl 50.",
                        (("Denver Broncos", 4),))
  f = qa_windows.encode([e], tok, max_seq_length=12, doc_stride=2, training=True)
  assert {k: (v.dtype, v.shape) for k, v in f.items()} == {
      "input_ids": (np.int32, (2, 12)), "attention_mask": (np.int32, (2, 12)),
      "token_type_ids": (np.int32, (2, 12)), "start_positions": (np.int32, (2,)),
      "end_positions": (np.int32, (2,)), "example_index": (np.int32, (2,)),
      "offsets": (np.int32, (2, 12, 2)), "max_context": (np.int32, (2, 12))}
  assert tok.convert_ids_to_tokens(f["input_ids"][0]) == [
      "[CLS]", "who", "won", "?", "[SEP]", "the", "denver", "broncos", "won", "super", "bowl",
      "[SEP]"]
  assert tok.convert_ids_to_tokens(f["input_ids"][1]) == [
      "[CLS]", "who", "won", "?", "[SEP]", "super", "bowl", "50", ".", "[SEP]", "[PAD]", "[PAD]"]
  np.testing.assert_array_equal(f["token_type_ids"], [[0] * 5 + [1] * 7,
                                                      [0] * 5 + [1] * 5 + [0] * 2])
  np.testing.assert_array_equal(f["attention_mask"], [[1] * 12, [1] * 10 + [0] * 2])
  np.testing.assert_array_equal(f["start_positions"], [6, 0])
  np.testing.assert_array_equal(f["end_positions"], [7, 0])
  np.testing.assert_array_equal(f["example_index"], [0, 0])
  # Piece 4 (super): 1.06 in window 0 vs 0.04; piece 5 (bowl): 0.06 vs 1.04.
  np.testing.assert_array_equal(f["max_context"], [[0] * 5 + [1] * 5 + [0] * 2,
                                                   [0] * 5 + [0, 1, 1, 1] + [0] * 3])
  np.testing.assert_array_equal(f["offsets"][1, 4:10], [[-1, -1], [23, 28], [29, 33],
                                                         [34, 36], [36, 37], [-1, -1]])
  np.testing.assert_array_equal(f["offsets"][0, :5], -1)


def test_window_spans_and_max_context():
  assert qa_windows.window_spans(8, 6, 2) == [(0, 6), (4, 4)]
  assert qa_windows.window_spans(6, 6, 2) == [(0, 6)]
  assert qa_windows.window_spans(0, 6, 2) == [(0, 0)]
  assert qa_windows.window_spans(10, 4, 1) == [(0, 4), (3, 4), (6, 4)]
  np.testing.assert_array_equal(qa_windows.max_context_window([(0, 4), (3, 4), (6, 4)], 10),
                                [0, 0, 0, 0, 1, 1, 1, 2, 2, 2])  # ties (3, 6): first window
  with pytest.raises(ValueError, match="overlap must be in"):
    qa_windows.window_spans(10, 4, 4)


@pytest.mark.parametrize("window", WINDOWS)
def test_windows_match_transformers_overflow(examples, tok, window):
  """doc_stride is transformers' `stride`: the same rows, ids and offsets, piece for piece."""
  transformers = pytest.importorskip("transformers")
  from transformers.models.bert.tokenization_bert import load_vocab as hf_load_vocab

  from bert_jax.tokenizer import default_vocab_file
  hf = transformers.BertTokenizerFast(vocab=hf_load_vocab(default_vocab_file()))
  s, stride = window
  examples = examples[::4]  # 2,345 questions from every article (a fourth keeps it quick)
  ours = qa_windows.encode(examples, tok, max_seq_length=s, doc_stride=stride, training=False)
  ref = hf([e.question for e in examples], [e.context for e in examples],
           truncation="only_second", max_length=s, stride=stride, padding="max_length",
           return_overflowing_tokens=True, return_offsets_mapping=True)
  np.testing.assert_array_equal(ref["overflow_to_sample_mapping"], ours["example_index"])
  for key in ("input_ids", "token_type_ids", "attention_mask"):
    np.testing.assert_array_equal(ref[key], ours[key], err_msg=key)
  offsets = np.array(ref["offset_mapping"])
  is_context = np.array([[i == 1 for i in ref.sequence_ids(r)] for r in range(len(offsets))])
  offsets[~is_context] = -1
  np.testing.assert_array_equal(offsets, ours["offsets"])


@pytest.mark.parametrize("window", WINDOWS)
def test_labels_cut_the_answer_from_the_context(examples, encoded, tok, window):
  """Every labeled row's offsets give back the first answer: exactly, except where the answer
  is part of a wordpiece ("gold" in "golden", "8" in "18"), which whole pieces cannot label."""
  s, stride = window
  f = encoded[window]
  labeled = np.flatnonzero(f["start_positions"] > 0)
  exact, exceptions = 0, []
  for row in labeled:
    e = examples[f["example_index"][row]]
    text, start = e.answers[0]
    cut = e.context[f["offsets"][row, f["start_positions"][row], 0]:
                    f["offsets"][row, f["end_positions"][row], 1]]
    exact += cut == text
    if qa_metrics.normalize_answer(cut) != qa_metrics.normalize_answer(text):
      exceptions.append((e.id, text, cut))
      # Only ever the surrounding word pieces: the answer is inside what was cut.
      assert text in cut, (e.id, text, cut)
  print(f"\n{s}/{stride}: {len(labeled)} labeled rows, {exact / len(labeled):.4%} exact, "
        f"{len(exceptions)} not equal after normalization: {exceptions}")
  assert exact / len(labeled) > 0.995 and len(exceptions) < 0.005 * len(labeled)
  # A question whose answer spans at most doc_stride + 1 pieces lies whole in some window.
  contexts = {e.context: None for e in examples}
  pieces = dict(zip(contexts, tok.tokenize_with_offsets(list(contexts))))
  has_label = set(f["example_index"][labeled].tolist())
  unlabeled = []
  for index, e in enumerate(examples):
    text, start = e.answers[0]
    first, last = qa_windows.answer_pieces(pieces[e.context][1], start, start + len(text))
    if index not in has_label:
      assert last - first + 1 > stride + 1, e.id
      unlabeled.append((e.id, last - first + 1))
  print(f"questions without a labeled row (answer pieces): {unlabeled}")


@pytest.mark.parametrize("window", WINDOWS)
def test_every_context_piece_has_max_context_in_exactly_one_window(examples, encoded, tok,
                                                                    window):
  f = encoded[window]
  contexts = {e.context: None for e in examples}
  pieces = dict(zip(contexts, tok.tokenize_with_offsets(list(contexts))))
  rows_of = collections.defaultdict(list)
  for row, index in enumerate(f["example_index"]):
    rows_of[index].append(row)
  windows = np.bincount(f["example_index"])
  print(f"\n{window}: windows per question mean {windows.mean():.3f}, max {windows.max()}")
  for index, e in enumerate(examples):
    expected = collections.Counter(map(tuple, pieces[e.context][1].tolist()))
    seen, best = collections.Counter(), collections.Counter()
    for row in rows_of[index]:
      is_context = f["offsets"][row, :, 0] >= 0
      assert not np.any(f["max_context"][row] & ~is_context)
      seen.update(set(map(tuple, f["offsets"][row][is_context].tolist())))
      best.update(map(tuple, f["offsets"][row][f["max_context"][row] == 1].tolist()))
    assert set(seen) == set(expected), e.id
    assert best == expected, e.id


def test_encode_errors(tok):
  long = qa_reader.Example("long-q", "T", "What is the name of the stadium where Super Bowl 50 was "
                           "played in 2016?", "Levi's Stadium.", (("Levi's Stadium", 0),))
  with pytest.raises(ValueError, match=r"^question long-q: its 16 pieces leave 0 context "
                     r"pieces per window of 16, not more than doc_stride 4"):
    qa_windows.encode([long], tok, max_seq_length=16, doc_stride=4, training=False)
  removed = qa_reader.Example("ctl", "T", "Which?", "a \x07 b", (("\x07", 2),))
  with pytest.raises(ValueError, match="^question ctl: the first answer covers no wordpiece"):
    qa_windows.encode([removed], tok, training=True)
  assert qa_windows.encode([removed], tok, training=False)["start_positions"].tolist() == [0]
  with pytest.raises(ValueError, match="max_query_length >= 1"):
    qa_windows.encode([long], tok, max_query_length=0, training=False)


def test_question_truncated_to_max_query_length(tok):
  e = qa_reader.Example("q", "T", "one two three four five six", "seven eight", (("eight", 6),))
  f = qa_windows.encode([e], tok, max_seq_length=16, max_query_length=3, doc_stride=2,
                        training=True)
  assert tok.convert_ids_to_tokens(f["input_ids"][0, :8]) == [
      "[CLS]", "one", "two", "three", "[SEP]", "seven", "eight", "[SEP]"]
  assert (f["start_positions"][0], f["end_positions"][0]) == (6, 6)


# ---------------------------------------------------------------------------------------------
# Post-processing


def _oracle_logits(examples, features, tok):
  """+10 at the first answer's first/last piece in every row that holds it, 0 elsewhere."""
  contexts = {e.context: None for e in examples}
  pieces = dict(zip(contexts, tok.tokenize_with_offsets(list(contexts))))
  start_logits = np.zeros(features["input_ids"].shape)
  end_logits = np.zeros(features["input_ids"].shape)
  for row, index in enumerate(features["example_index"]):
    e = examples[index]
    text, start = e.answers[0]
    offsets = pieces[e.context][1]
    first, last = qa_windows.answer_pieces(offsets, start, start + len(text))
    row_offsets = features["offsets"][row]
    start_logits[row, np.all(row_offsets == offsets[first], axis=-1)] = 10
    end_logits[row, np.all(row_offsets == offsets[last], axis=-1)] = 10
  return start_logits, end_logits


@pytest.mark.parametrize("window", WINDOWS)
def test_oracle_logits_recover_the_answers(examples, encoded, tok, window):
  """Oracle logits give back the answer's whole pieces, unless the answer does not fit in the
  window where its first piece has its maximum context: there that piece has at least
  (doc_stride - 1) / 2 pieces to its right, so only answers longer than doc_stride // 2 + 1
  pieces can be lost."""
  s, stride = window
  f = encoded[window]
  predictions = qa_prediction.postprocess(examples, f, *_oracle_logits(examples, f, tok),
                                          max_answer_length=1000)
  contexts = {e.context: None for e in examples}
  pieces = dict(zip(contexts, tok.tokenize_with_offsets(list(contexts))))
  lost = []
  for e in examples:
    text, start = e.answers[0]
    offsets = pieces[e.context][1]
    first, last = qa_windows.answer_pieces(offsets, start, start + len(text))
    if predictions[e.id].text != e.context[offsets[first, 0]:offsets[last, 1]]:
      lost.append((e.id, last - first + 1))
      assert last - first + 1 > stride // 2 + 1, (e.id, text, predictions[e.id].text)
  metrics = qa_metrics.squad_metrics(examples, {k: p.text for k, p in predictions.items()})
  print(f"\n{window}: oracle EM {metrics['exact_match']:.4f}, F1 {metrics['f1']:.4f}; "
        f"long answers lost (id, pieces): {lost}")
  assert metrics["num_examples"] == len(examples) == len(predictions)
  assert metrics["exact_match"] > 0.995 and metrics["f1"] > 0.998


def _check_inside_context(examples, features, predictions, tok, max_answer_length):
  contexts = {e.context: None for e in examples}
  pieces = dict(zip(contexts, tok.tokenize_with_offsets(list(contexts))))
  for e in examples:
    p = predictions[e.id]
    assert 0 <= p.start_char < p.end_char <= len(e.context), e.id
    assert p.text == e.context[p.start_char:p.end_char] and p.text.strip()
    assert p.alternatives[0] == (p.text, p.score)
    assert len({t for t, _ in p.alternatives}) == len(p.alternatives) <= 20
    scores = [score for _, score in p.alternatives]
    assert scores == sorted(scores, reverse=True)
    offsets = pieces[e.context][1]
    inside = (offsets[:, 0] >= p.start_char) & (offsets[:, 1] <= p.end_char)
    assert p.start_char in offsets[:, 0] and p.end_char in offsets[:, 1]
    assert 1 <= inside.sum() <= max_answer_length


@pytest.mark.parametrize("window", WINDOWS)
def test_random_logits_never_leave_the_context(examples, encoded, tok, window):
  f = encoded[window]
  rng = np.random.default_rng(0)
  start_logits, end_logits = (rng.normal(size=f["input_ids"].shape) for _ in range(2))
  # The largest logits sit on [CLS], the question, [SEP] and padding.
  outside = f["offsets"][..., 0] < 0
  start_logits[outside] += 100
  end_logits[outside] += 100
  predictions = qa_prediction.postprocess(examples, f, start_logits, end_logits,
                                          max_answer_length=5)
  _check_inside_context(examples, f, predictions, tok, 5)


def test_postprocess_picks_best_valid_span_across_windows(tok):
  # Row 0 holds pieces 0-5 at positions 5-10 (max context for 0-4), row 1 pieces 4-7 at 5-8
  # (max context for 5-7); see test_encode_hand_checked_layout.
  e = qa_reader.Example("q1", "T", "Who won?", "The Denver Broncos won Super Bowl 50.",
                        (("Denver Broncos", 4),))
  f = qa_windows.encode([e], tok, max_seq_length=12, doc_stride=2, training=True)
  start_logits, end_logits = np.zeros((2, 12)), np.zeros((2, 12))
  start_logits[0, 6], end_logits[0, 7] = 2.0, 1.5  # "Denver Broncos": 3.5
  start_logits[1, 7], end_logits[1, 7] = 2.0, 2.0  # "50": 4.0, the best
  start_logits[1, 5], end_logits[1, 5] = 9.0, 9.0  # "Super": no max context in row 1
  start_logits[0, 5], end_logits[0, 5] = -20.0, 9.0  # "Denver" .. "The": ends before start
  start_logits[:, 0], end_logits[:, 0] = 50.0, 50.0  # [CLS] is never an answer
  p = qa_prediction.postprocess([e], f, start_logits, end_logits, n_best_size=3)["q1"]
  assert (p.text, p.start_char, p.end_char, p.score) == ("50", 34, 36, 4.0)
  # Ties keep row order: row 0's "Denver" (2.0) before row 1's "Bowl 50" (2.0).
  assert p.alternatives == (("50", 4.0), ("Denver Broncos", 3.5), ("Denver", 2.0))
  p = qa_prediction.postprocess([e], f, start_logits, end_logits, n_best_size=3,
                                max_answer_length=1)["q1"]
  assert p.alternatives == (("50", 4.0), ("Denver", 2.0), ("Broncos", 1.5))


def test_postprocess_empty_context_gives_empty_answer(tok):
  e = qa_reader.Example("q1", "T", "Which?", "\x07\x07", (("\x07", 0),))
  f = qa_windows.encode([e], tok, max_seq_length=12, doc_stride=2, training=False)
  assert f["input_ids"].shape == (1, 12)
  p = qa_prediction.postprocess([e], f, np.zeros((1, 12)), np.zeros((1, 12)))["q1"]
  assert p == qa_prediction.Prediction("", 0, 0, float("-inf"), ())


# ---------------------------------------------------------------------------------------------
# Metric, prediction file, error analysis


def test_normalize_answer():
  assert qa_metrics.normalize_answer("The Broncos!") == "broncos"
  assert qa_metrics.normalize_answer("  An apple,  a  pear\tand THE  theatre ") == (
      "apple pear and theatre")
  assert qa_metrics.normalize_answer("U.S.") == "us"
  assert qa_metrics.normalize_answer("Levi's") == "levis"
  assert qa_metrics.normalize_answer("the-end") == "theend"  # punctuation goes before articles


@pytest.mark.parametrize("prediction, reference, em, f1", [
    ("the Broncos", "Broncos", 1.0, 1.0),
    ("Denver Broncos", "Broncos", 0.0, 2 / 3),  # precision 1/2, recall 1
    ("Broncos", "the Denver Broncos", 0.0, 2 / 3),  # precision 1, recall 1/2
    ("x x y", "x y y", 0.0, 2 / 3),  # counts clip: 2 shared of 3 each
    ("Carolina Panthers", "Denver Broncos", 0.0, 0.0),
    ("the", "a", 1.0, 0.0),  # both normalize to "": equal, but no tokens to share
])
def test_exact_match_and_f1_hand_checked(prediction, reference, em, f1):
  assert qa_metrics.exact_match(prediction, reference) == em
  assert qa_metrics.f1(prediction, reference) == pytest.approx(f1)


def test_squad_metrics_max_over_references_mean_over_questions():
  examples = [qa_reader.Example("a", "", "Who?", "", (("Denver Broncos", 0), ("Broncos", 0))),
              qa_reader.Example("b", "", "Who?", "", (("Santa Clara, California", 0),)),
              qa_reader.Example("c", "", "Who?", "", (("Levi's Stadium", 0),))]
  predictions = {"a": "the broncos", "b": "Santa Clara"}  # "c" unanswered: scores 0
  with pytest.warns(UserWarning, match="1 of 3 questions have no prediction"):
    m = qa_metrics.squad_metrics(examples, predictions)
  # b: precision 1, recall 2/3 -> F1 0.8
  assert m == {"exact_match": pytest.approx(1 / 3), "f1": pytest.approx((1 + 0.8) / 3),
               "num_examples": 3}


def test_write_predictions(tmp_path):
  path = tmp_path / "out" / "predictions.json"
  cafe = qa_prediction.Prediction("Café", 0, 4, 1.0, ())
  qa_prediction.write_predictions(str(path), {"a": cafe, "b": "x"})
  assert json.loads(path.read_text(encoding="utf-8")) == {"a": "Café", "b": "x"}
  qa_prediction.write_predictions(str(path), {"a": "y"})
  assert json.loads(path.read_text(encoding="utf-8")) == {"a": "y"}
  assert os.listdir(path.parent) == ["predictions.json"]


def test_question_type():
  assert qa_metrics.question_type("In what year did it end?") == "what"
  assert qa_metrics.question_type("Whose idea was it?") == "who"
  assert qa_metrics.question_type("How many points were scored?") == "how many"
  assert qa_metrics.question_type("How much did it cost?") == "how much"
  assert qa_metrics.question_type("How did it end?") == "how"
  assert qa_metrics.question_type("Which team won, and when?") == "which"
  assert qa_metrics.question_type("Name the team.") == "other"


def test_error_analysis():
  def ex(qid, question, answer):
    return qa_reader.Example(qid, "", question, "", ((answer, 0),))
  examples = [ex("a", "Who won?", "Denver Broncos"), ex("b", "When was it?", "2016"),
              ex("c", "Who lost?", "Carolina Panthers"),
              ex("d", "Why?", "because the defense held on every single drive")]
  predictions = {"a": "Denver Broncos", "b": "2015", "c": "Panthers", "d": "the defense"}
  scores = {"a": 9.0, "b": 3.0, "c": 7.0, "d": 1.0}
  report = qa_metrics.error_analysis(examples, predictions, scores, top_k=2)
  assert report["count"] == 4 and report["exact_match"] == 0.25
  by_type = {r["type"]: r for r in report["by_question_type"]}
  assert by_type["who"] == {"type": "who", "count": 2, "exact_match": 0.5,
                            "f1": pytest.approx((1 + 2 / 3) / 2)}
  assert by_type["when"]["count"] == 1 and by_type["when"]["f1"] == 0.0
  assert by_type["how"] == {"type": "how", "count": 0, "exact_match": None, "f1": None}
  by_length = {r["bucket"]: r["count"] for r in report["by_answer_length"]}
  assert by_length == {"1": 1, "2-3": 2, "4-6": 0, ">6": 1}
  assert [w["id"] for w in report["confidently_wrong"]] == ["c", "b"]
  assert report["confidently_wrong"][0] == {
      "id": "c", "question": "Who lost?", "predicted": "Panthers",
      "answers": ["Carolina Panthers"], "score": 7.0, "f1": pytest.approx(2 / 3)}
  json.dumps(report)
