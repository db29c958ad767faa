"""NER on the host: CoNLL/JSON Lines readers, IOB checks, wordpiece windows, merge, metrics."""

from __future__ import annotations

import json
import os
import random
import re
import time

import numpy as np
import pytest

from bert_jax.tasks.token_classification import conll
from bert_jax.tasks.token_classification import metrics as ner_metrics
from bert_jax.tasks.token_classification import windows as ner_windows
from bert_jax.tasks.token_classification.conll import Sentence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shared_data(*parts: str) -> str:
  """A file of the shared real data ($BERT_JAX_SHARED_DATA, else <repo>/../shared/data);
  skips the test when it is absent."""
  root = os.environ.get("BERT_JAX_SHARED_DATA") or os.path.join(REPO, "..", "shared", "data")
  path = os.path.join(root, *parts)
  if not os.path.isfile(path):
    pytest.skip(f"real CoNLL-2003 data not found at {path} (set BERT_JAX_SHARED_DATA)")
  return path


def write(tmp_path, name: str, text: str | bytes) -> str:
  path = tmp_path / name
  path.write_bytes(text if isinstance(text, bytes) else text.encode())
  return str(path)


CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German\tJJ\tB-NP\tB-MISC
lamb NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC\r
"""


# ---------------------------------------------------------------------------------------------
# Readers

def test_read_conll(tmp_path):
  path = write(tmp_path, "a.txt", CONLL)
  sentences = conll.read_conll(path)
  assert [s.words for s in sentences] == [("EU", "rejects", "German", "lamb"),
                                          ("Peter", "Blackburn"), ("BRUSSELS",)]
  assert [s.tags for s in sentences] == [("B-ORG", "O", "B-MISC", "O"), ("B-PER", "I-PER"),
                                         ("B-LOC",)]
  assert [s.line for s in sentences] == [3, 8, 13]
  chunks = conll.read_conll(path, tag_column=2)  # any column can be the tag
  assert chunks[0].tags == ("B-NP", "B-VP", "B-NP", "I-NP")
  assert conll.read_tagged(path) == sentences


def test_read_jsonl(tmp_path):
  rows = [{"tokens": ["Peter", "lives", "in", "Paris"], "tags": ["B-PER", "O", "O", "B-LOC"]},
          {"tokens": ["Hi"], "tags": ["O"], "extra": 1}]
  path = write(tmp_path, "a.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
  sentences = conll.read_tagged(path)
  assert sentences == [Sentence(("Peter", "lives", "in", "Paris"), ("B-PER", "O", "O", "B-LOC")),
                       Sentence(("Hi",), ("O",))]
  assert [s.line for s in sentences] == [1, 2]
  other = write(tmp_path, "b.json", json.dumps({"w": ["a"], "t": ["O"]}))
  assert conll.read_tagged(other, tokens_key="w", tags_key="t") == [Sentence(("a",), ("O",))]


def one_line_error(fn, *args, match: str, **kwargs):
  with pytest.raises(ValueError, match=match) as e:
    fn(*args, **kwargs)
  assert "\n" not in str(e.value)
  return str(e.value)


def test_conll_errors(tmp_path):
  empty = write(tmp_path, "empty.txt", "")
  one_line_error(conll.read_conll, empty, match=f"^{re.escape(empty)}: no sentences")
  docstart = write(tmp_path, "doc.txt", "-DOCSTART- -X- -X- O\n\n\n")
  one_line_error(conll.read_conll, docstart, match="no sentences")
  ragged = write(tmp_path, "ragged.txt", CONLL.replace("lamb NN I-NP O", "lamb O"))
  one_line_error(conll.read_conll, ragged,
                 match=f"^{re.escape(ragged)}:6: 2 columns, but the first token line "
                       r"\(line 3\) has 4$")
  latin1 = write(tmp_path, "latin1.txt", "Peter B-PER\nM\xfcller I-PER\n".encode("latin-1"))
  one_line_error(conll.read_conll, latin1,
                 match=f"^{re.escape(latin1)}: invalid UTF-8 at byte offset 13 ")
  single = write(tmp_path, "single.txt", "Peter\n")
  one_line_error(conll.read_conll, single, match=":1: one column")
  path = write(tmp_path, "a.txt", CONLL)
  one_line_error(conll.read_conll, path, tag_column=0, match=":3: tag_column 0 is not")
  one_line_error(conll.read_conll, path, tag_column=4, match=":3: tag_column 4 is not")


@pytest.mark.parametrize("tag, hint", [("S-PER", "BIOES"), ("E-LOC", "BIOES"),
                                       ("PER", "bare type"), ("B_PER", r"I-TYPE\)$"),
                                       ("B-", r"I-TYPE\)$")])
def test_unknown_scheme(tmp_path, tag, hint):
  path = write(tmp_path, "x.txt", f"Peter B-PER\nBlackburn {tag}\n")
  one_line_error(conll.read_conll, path,
                 match=f"^{re.escape(path)}:2: tag {re.escape(repr(tag))} is not IOB.*{hint}")
  jsonl = write(tmp_path, "x.jsonl", json.dumps({"tokens": ["a", "b"], "tags": ["O", tag]}))
  one_line_error(conll.read_jsonl, jsonl,
                 match=f"^{re.escape(jsonl)}:1 \\(word 2\\): tag {re.escape(repr(tag))}")


def test_jsonl_errors(tmp_path):
  broken = write(tmp_path, "b.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["a"\n')
  one_line_error(conll.read_jsonl, broken, match=f"^{re.escape(broken)}:2: not valid JSON")
  lengths = write(tmp_path, "l.jsonl", '\n{"tokens": ["a", "b"], "tags": ["O"]}\n')
  one_line_error(conll.read_jsonl, lengths,
                 match=f"^{re.escape(lengths)}:2: 2 tokens but 1 tags$")
  missing = write(tmp_path, "m.jsonl", '{"words": ["a"], "tags": ["O"]}\n')
  one_line_error(conll.read_jsonl, missing, match=":1: 'tokens' must be a list of strings")
  empty = write(tmp_path, "e.jsonl", "\n")
  one_line_error(conll.read_jsonl, empty, match="no sentences")


def test_iob1_is_converted(tmp_path):
  iob1 = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG", "I-LOC"]
  iob2 = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG", "B-LOC"]
  assert conll.iob1_to_iob2(iob1) == iob2
  assert conll.iob1_to_iob2(iob2) == iob2  # a no-op on IOB2, so conversion can be automatic
  assert conll.check_scheme(iob2, "x") is True
  assert conll.check_scheme(iob1, "x") is False
  path = write(tmp_path, "iob1.txt", "".join(f"w{i} {t}\n" for i, t in enumerate(iob1)))
  assert conll.read_conll(path)[0].tags == tuple(iob2)


def test_label_list_and_eval_labels(tmp_path):
  train = [Sentence(("a", "b", "c"), ("B-PER", "O", "I-MISC")), Sentence(("d",), ("B-LOC",))]
  names = conll.label_list(train)
  assert names == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-PER", "I-PER"]
  conll.check_eval_labels([Sentence(("x", "y"), ("B-LOC", "I-LOC"))], names, "dev.txt")
  path = write(tmp_path, "dev.txt", CONLL)
  dev = conll.read_conll(path)
  one_line_error(conll.check_eval_labels, dev, names, path,
                 match=f"^{re.escape(path)}:3: tag 'B-ORG' \\(word 'EU'\\) never occurs in "
                       "the training data")


def test_read_tfds(tmp_path):
  """`read_tfds` on a small prepared builder with the features of TFDS `conll2003`."""
  tfds = pytest.importorskip("tensorflow_datasets")

  class NerTiny(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "tokens": tfds.features.Sequence(tfds.features.Text()),
          "ner": tfds.features.Sequence(tfds.features.ClassLabel(
              names=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]))}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      yield 0, {"tokens": ["Peter", "Müller", "visits", "Rome"], "ner": [1, 2, 0, 3]}
      yield 1, {"tokens": ["Rome"], "ner": [4]}  # IOB1: converted

  NerTiny(data_dir=str(tmp_path)).download_and_prepare(file_format="array_record")
  sentences = conll.read_tfds("ner_tiny", split="train", data_dir=str(tmp_path))
  assert sentences == [Sentence(("Peter", "Müller", "visits", "Rome"),
                                ("B-PER", "I-PER", "O", "B-LOC")),
                       Sentence(("Rome",), ("B-LOC",))]


# ---------------------------------------------------------------------------------------------
# Wordpieces and windows

def test_encode_words(tok):
  words = ["Peter", "Blackburn", "\x00\u200b", "U.S.", ""]
  (ids, word_ids), = tok.encode_words([words])
  pieces = tok.convert_ids_to_tokens(ids)
  assert pieces == ["peter", "blackburn", "[UNK]", "u", ".", "s", ".", "[UNK]"]
  assert word_ids.tolist() == [0, 1, 2, 3, 3, 3, 3, 4]
  assert ids.dtype == word_ids.dtype == np.int32
  (ids, word_ids), = tok.encode_words([[]])
  assert ids.size == word_ids.size == 0


def test_encode_hand_checked(tok):
  names = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
  label_to_id = {n: i for i, n in enumerate(names)}
  sentence = Sentence(("Johanson", "visits", "Kazakhstan"), ("B-PER", "O", "B-LOC"))
  (ids, word_ids), = tok.encode_words([sentence.words])
  pieces = tok.convert_ids_to_tokens(ids)
  assert pieces == ["johan", "##son", "visits", "kazakhstan"]
  f, stats = ner_windows.encode([sentence], tok, label_to_id, max_seq_length=8)
  assert sorted(f) == sorted(ner_windows.FEATURE_KEYS)
  assert all(v.dtype == np.int32 for v in f.values())
  assert f["input_ids"].tolist() == [[tok.cls_id, *ids.tolist(), tok.sep_id, 0, 0]]
  assert f["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1, 0, 0]]
  assert f["token_type_ids"].tolist() == [[0] * 8]
  assert f["word_ids"].tolist() == [[-1, 0, 0, 1, 2, -1, -1, -1]]
  assert f["labels"].tolist() == [[0, 3, 0, 0, 1, 0, 0, 0]]
  assert f["label_mask"].tolist() == [[0, 1, 0, 1, 1, 0, 0, 0]]
  assert f["predict_mask"].tolist() == [[0, 1, 0, 1, 1, 0, 0, 0]]
  assert f["sentence_index"].tolist() == [0]
  assert stats == {"num_sentences": 1, "num_windows": 1, "num_windowed": 0, "num_pieces": 4,
                   "num_cut_words": 0, "pad_fraction": 0.25}
  f, _ = ner_windows.encode([sentence], tok, label_to_id, max_seq_length=8, label_all_pieces=True)
  assert f["labels"].tolist() == [[0, 3, 4, 0, 1, 0, 0, 0]]  # "##son" continues the PER
  assert f["label_mask"].tolist() == [[0, 1, 1, 1, 1, 0, 0, 0]]
  assert f["predict_mask"].tolist() == [[0, 1, 0, 1, 1, 0, 0, 0]]
  unlabelled, _ = ner_windows.encode([Sentence(sentence.words)], tok, None, max_seq_length=8)
  assert not unlabelled["label_mask"].any() and not unlabelled["labels"].any()
  assert (unlabelled["predict_mask"] == f["predict_mask"]).all()
  with pytest.raises(ValueError, match=r"sentence 0 \(line 0\): tag 'B-ORG' is not one of"):
    ner_windows.encode([Sentence(("EU",), ("B-ORG",))], tok, label_to_id)
  only_b, _ = ner_windows.encode([Sentence(("Johanson",), ("B-PER",))], tok, {"O": 0, "B-PER": 1})
  assert only_b["labels"][0, :3].tolist() == [0, 1, 0]
  with pytest.raises(ValueError, match="label_all_pieces needs I-PER"):
    ner_windows.encode([sentence], tok, {"O": 0, "B-PER": 1}, label_all_pieces=True)
  with pytest.raises(ValueError, match="window_step must be in"):
    ner_windows.encode([sentence], tok, label_to_id, max_seq_length=8, window_step=7)


def test_windows_max_context(tok):
  """Ten one-piece words, windows of 6 pieces, window_step 3 -> pieces [0, 6), [3, 9), [6, 10);
  each word is predicted where min(left, right) context is largest (ties to the earlier)."""
  words = ("the", "cat", "sat", "on", "a", "mat", "and", "then", "it", "slept")
  assert all(len(ids) == 10 for ids, _ in tok.encode_words([words]))
  f, stats = ner_windows.encode([Sentence(words)], tok, None, max_seq_length=8, window_step=3)
  assert f["word_ids"][:, 1:7].tolist() == [[0, 1, 2, 3, 4, 5], [3, 4, 5, 6, 7, 8],
                                            [6, 7, 8, 9, -1, -1]]
  predicted_in = {}
  for k, (word_ids, predict) in enumerate(zip(f["word_ids"], f["predict_mask"])):
    for w in word_ids[predict == 1]:
      assert w not in predicted_in
      predicted_in[int(w)] = k
  assert [predicted_in[w] for w in range(10)] == [0, 0, 0, 0, 0, 1, 1, 1, 2, 2]
  assert stats["num_windows"] == 3 and stats["num_windowed"] == 1


def test_windows_never_drop_a_word(tok):
  rng = random.Random(0)
  vocab = ["the", "Blackburn", "Kazakhstan", "unbelievably", "x", ",", "1996-08-22",
           "Johanson", "a" * 30, "\x00"]
  names = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
  label_to_id = {n: i for i, n in enumerate(names)}
  sentences = [Sentence(tuple(rng.choice(vocab) for _ in range(rng.randint(0, 40))))
               for _ in range(60)]
  sentences = [Sentence(s.words, tuple(rng.choice(names) for _ in s.words)) for s in sentences]
  for max_seq_length, window_step in [(16, None), (8, 1), (6, 4), (3, 1), (128, None)]:
    f, stats = ner_windows.encode(sentences, tok, label_to_id, max_seq_length=max_seq_length,
                                  window_step=window_step, label_all_pieces=True)
    # Windows start at a word's first piece and end at a word's last piece (unless that one
    # word is longer than the window).
    pieces = tok.encode_words([s.words for s in sentences])
    for row, i in enumerate(f["sentence_index"]):
      ids, wids = pieces[i]
      body = f["word_ids"][row][f["word_ids"][row] >= 0]
      if not body.size:
        assert not len(sentences[i].words)
        continue
      start = np.flatnonzero(wids == body[0])[0]
      assert f["input_ids"][row, 1:1 + len(body)].tolist() == ids[start:start + len(body)].tolist()
      whole = np.sum(wids == body[-1])
      assert np.sum(body == body[-1]) == min(whole, max_seq_length - 2)
    gold_ids = [[label_to_id[t] for t in s.tags] for s in sentences]
    scores = np.random.default_rng(0).random(f["labels"].shape)
    pred, word_scores = ner_windows.merge(f, f["labels"], scores, len(sentences))
    assert pred == gold_ids  # every word exactly once, with its own label
    assert [len(s) for s in word_scores] == [len(s.words) for s in sentences]
    assert stats["num_windows"] == len(f["input_ids"])


def test_merge_errors(tok):
  f, _ = ner_windows.encode([Sentence(("a", "b"))], tok, None, max_seq_length=8)
  ones = np.ones_like(f["input_ids"])
  with pytest.raises(ValueError, match=r"must have the features' shape \(1, 8\)"):
    ner_windows.merge(f, ones[:, :4], ones[:, :4], 1)
  twice = dict(f, predict_mask=f["predict_mask"].copy())
  twice["predict_mask"][0, 2] = 0
  with pytest.raises(ValueError, match="sentence 0: word 1 is predicted never"):
    ner_windows.merge(twice, ones, ones, 1)  # the last word
  twice["predict_mask"][0, 1:3] = [0, 1]
  with pytest.raises(ValueError, match="sentence 0: word 0 is predicted never"):
    ner_windows.merge(twice, ones, ones, 1)  # a gap
  both = {k: np.concatenate([v, v]) for k, v in f.items()}
  with pytest.raises(ValueError, match="sentence 0: word 0 is predicted twice"):
    ner_windows.merge(both, np.concatenate([ones, ones]), np.concatenate([ones, ones]), 1)
  with pytest.raises(ValueError, match="num_sentences"):
    ner_windows.merge(dict(f, sentence_index=f["sentence_index"] + 1), ones, ones, 1)
  assert ner_windows.merge(f, ones, ones * 0.5, 3) == ([[1, 1], [], []], [[0.5, 0.5], [], []])


# ---------------------------------------------------------------------------------------------
# Metrics and reports

GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "O"]]
PRED = [["B-PER", "I-PER", "O", "B-ORG"], ["I-ORG", "O", "I-MISC"]]


def test_metrics_hand_checked():
  # Gold PER(0,2) LOC(3,4) ORG(0,1); predicted PER(0,2) ORG(3,4) ORG(0,1) MISC(2,3): an I- tag
  # after O starts an entity (CoNLL). Correct: PER, ORG -> P 2/4, R 2/3, F1 4/7.
  m = ner_metrics.metrics(GOLD, PRED)
  assert m["precision"] == pytest.approx(2 / 4)
  assert m["recall"] == pytest.approx(2 / 3)
  assert m["f1"] == pytest.approx(4 / 7)
  assert m["word_accuracy"] == pytest.approx(4 / 7)  # tokens: 3 of 4, then 1 ("O") of 3
  assert (m["num_gold"], m["num_pred"], m["num_correct"]) == (3, 4, 2)
  assert m["per_type"] == {
      "LOC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
      "MISC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0},
      "ORG": {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1},
      "PER": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}}
  assert ner_metrics.metrics(GOLD, GOLD)["f1"] == 1.0
  assert ner_metrics.metrics([["O"]], [["O"]])["f1"] == 0.0  # no entities at all
  with pytest.raises(ValueError, match="sentence 1: 3 gold tags but 2 predicted"):
    ner_metrics.metrics(GOLD, [PRED[0], PRED[1][:2]])


def test_entities_match_seqeval():
  from seqeval.metrics.sequence_labeling import get_entities
  rng = random.Random(0)
  tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
  for _ in range(300):
    seq = [rng.choice(tags) for _ in range(rng.randint(0, 12))]
    ours = [(e["type"], e["start_word"], e["end_word"] - 1) for e in ner_metrics.entities(seq)]
    assert ours == get_entities(seq), seq


def test_entities_and_spans():
  text = "Zürich’s Peter Müller-Lüdenscheidt met U.N. staff."
  words, spans = ner_windows.words_with_spans(text)
  assert words == ["Zürich", "’", "s", "Peter", "Müller", "-", "Lüdenscheidt", "met", "U",
                   ".", "N", ".", "staff", "."]
  assert [text[a:b] for a, b in spans] == words
  tags = ["B-LOC", "O", "O", "B-PER", "I-PER", "I-PER", "I-PER", "O", "B-ORG", "I-ORG",
          "I-ORG", "I-ORG", "O", "O"]
  scores = [0.9, 1, 1, 0.5, 0.7, 0.8, 1.0, 1, 0.2, 0.4, 0.6, 0.8, 1, 1]
  found = ner_metrics.entities(tags, spans, scores)
  assert [text[e["start"]:e["end"]] for e in found] == ["Zürich", "Peter Müller-Lüdenscheidt",
                                                        "U.N."]
  assert [e["type"] for e in found] == ["LOC", "PER", "ORG"]
  assert [(e["start_word"], e["end_word"]) for e in found] == [(0, 1), (3, 7), (8, 12)]
  assert [e["score"] for e in found] == pytest.approx([0.9, 0.75, 0.5])
  assert ner_metrics.entities(["O", "O"]) == []


def test_write_conll(tmp_path):
  sentences = [Sentence(("Peter", "runs"), ("B-PER", "O")), Sentence(("Rome",), ("B-LOC",))]
  path = tmp_path / "out" / "pred.conll"
  ner_metrics.write_conll(str(path), sentences, [["B-PER", "O"], ["B-ORG"]])
  assert path.read_text() == "Peter B-PER B-PER\nruns O O\n\nRome B-LOC B-ORG\n\n"
  assert os.listdir(path.parent) == ["pred.conll"]  # no temporary file left
  with pytest.raises(ValueError, match="sentence 1: 1 words, 1 gold tags, 0 predicted"):
    ner_metrics.write_conll(str(path), sentences, [["B-PER", "O"], []])
  # The file read back scores the same as the lists it came from.
  back = conll.read_conll(str(path), tag_column=2)
  assert [s.tags for s in back] == [("B-PER", "O"), ("B-ORG",)]


def test_error_analysis():
  sentences = [Sentence(tuple(f"w{i}" for i in range(len(g))), tuple(g)) for g in GOLD]
  scores = [[0.9, 0.9, 1.0, 0.95], [0.6, 1.0, 0.99]]
  report = ner_metrics.error_analysis(sentences, GOLD, PRED, scores, top_k=2)
  json.dumps(report)  # JSON-ready
  assert report["f1"] == pytest.approx(4 / 7)
  assert report["confusion"] == {
      "LOC": {"LOC": 0, "MISC": 0, "ORG": 1, "PER": 0, "missed": 0},
      "MISC": {"LOC": 0, "MISC": 0, "ORG": 0, "PER": 0, "missed": 0},
      "ORG": {"LOC": 0, "MISC": 0, "ORG": 1, "PER": 0, "missed": 0},
      "PER": {"LOC": 0, "MISC": 0, "ORG": 0, "PER": 1, "missed": 0},
      "spurious": {"LOC": 0, "MISC": 1, "ORG": 0, "PER": 0, "missed": 0}}
  errors = report["confident_errors"]
  assert [(e["words"], e["predicted"], e["gold"], e["gold_tags"]) for e in errors] == [
      ("w2", "MISC", None, ["O"]), ("w3", "ORG", "LOC", ["B-LOC"])]
  assert [e["score"] for e in errors] == [0.99, 0.95]
  assert errors[0]["text"] == "w0 w1 w2" and errors[0]["sentence_index"] == 1


# ---------------------------------------------------------------------------------------------
# The real CoNLL-2003 data (train 14,041 sentences, dev 3,250; /work/shared/data/README.md)

@pytest.fixture(scope="module")
def real():
  train_path, dev_path = shared_data("conll2003", "train.txt"), shared_data("conll2003", "dev.txt")
  return conll.read_conll(train_path), conll.read_conll(dev_path), dev_path


def test_real_counts(real):
  train, dev, dev_path = real
  assert (len(train), sum(len(s.words) for s in train)) == (14_041, 203_621)
  assert (len(dev), sum(len(s.words) for s in dev)) == (3_250, 51_362)
  names = conll.label_list(train)
  assert names == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER",
                   "I-PER"]
  conll.check_eval_labels(dev, names, dev_path)
  assert all(conll.check_scheme(s.tags, "dev") for s in train + dev)  # already IOB2
  dev_types = ner_metrics.metrics([s.tags for s in dev], [s.tags for s in dev])["per_type"]
  assert {t: v["support"] for t, v in dev_types.items()} == {
      "PER": 1_842, "LOC": 1_837, "ORG": 1_341, "MISC": 922}
  train_types = ner_metrics.metrics([s.tags for s in train], [s.tags for s in train])["per_type"]
  assert {t: v["support"] for t, v in train_types.items()} == {
      "PER": 6_600, "LOC": 7_140, "ORG": 6_321, "MISC": 3_438}


@pytest.mark.parametrize("max_seq_length, label_all_pieces", [(128, False), (16, True)])
def test_real_round_trip(real, tok, max_seq_length, label_all_pieces):
  """Gold label ids fed back as predictions score exactly F1 1.0, every word exactly once."""
  train, dev, _ = real
  names = conll.label_list(train)
  label_to_id = {n: i for i, n in enumerate(names)}
  f, stats = ner_windows.encode(dev, tok, label_to_id, max_seq_length=max_seq_length,
                                label_all_pieces=label_all_pieces)
  once = np.zeros(sum(len(s.words) for s in dev), int)
  starts = np.cumsum([0] + [len(s.words) for s in dev])[:-1]
  rows, cols = np.nonzero(f["predict_mask"])
  np.add.at(once, starts[f["sentence_index"][rows]] + f["word_ids"][rows, cols], 1)
  assert (once == 1).all()
  pred_ids, _ = ner_windows.merge(f, f["labels"], f["attention_mask"].astype(float), len(dev))
  pred = [[names[i] for i in s] for s in pred_ids]
  m = ner_metrics.metrics([s.tags for s in dev], pred)
  assert m["f1"] == 1.0 and m["word_accuracy"] == 1.0 and m["num_gold"] == 5_942
  if max_seq_length == 16:
    assert stats["num_windowed"] > 1_000  # windows really were exercised
  print(f"\ndev @ {max_seq_length}: {stats}")


def test_real_measurements(real, tok):
  """Prints tokenization time and padding for train at 128 (numbers for the report)."""
  train, dev, _ = real
  label_to_id = {n: i for i, n in enumerate(conll.label_list(train))}
  start = time.perf_counter()
  tok.encode_words([s.words for s in train])
  pieces_s = time.perf_counter() - start
  start = time.perf_counter()
  _, stats = ner_windows.encode(train, tok, label_to_id, max_seq_length=128)
  encode_s = time.perf_counter() - start
  _, dev_stats = ner_windows.encode(dev, tok, label_to_id, max_seq_length=128)
  print(f"\ntrain: encode_words {pieces_s:.2f}s, encode {encode_s:.2f}s; "
        f"mean pieces/sentence {stats['num_pieces'] / stats['num_sentences']:.2f}; "
        f"padding at 128 {stats['pad_fraction']:.3f}; windowed at 128: train "
        f"{stats['num_windowed']}, dev {dev_stats['num_windowed']}; {stats}")
  assert stats["num_sentences"] == len(train) and stats["num_cut_words"] == 0
