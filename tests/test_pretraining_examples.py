"""Sentence splitting and BERT/RoBERTa packing on real tokenized movie reviews."""

import numpy as np
import pytest

from bert_jax import pretraining_examples as pe


@pytest.fixture(scope="module")
def documents(tok):
  """300 IMDB reviews -> [document][sentence] int32 ids."""
  from bert_jax.datasets.movie_reviews_text import movie_review_rows
  rows = movie_review_rows("imdb")
  texts = [next(rows)[0].replace("<br />", "\n") for _ in range(300)]
  docs = pe.tokenize_documents(texts, tok)
  assert all(tok.sep_id not in s and tok.cls_id not in s for d in docs for s in d)
  return docs


def _stream(ids) -> str:
  return " " + " ".join(map(str, ids)) + " "


def test_split_sentences():
  text = ('I met Mr. Smith at 5 p.m. today. He said "Hi!" Then left... What? '
          "J. R. R. Tolkien wrote it, e.g. the Hobbit. U.S. customs agreed.\n"
          "A new line  \n\n   \nends one too")
  assert pe.split_sentences(text) == [
      "I met Mr. Smith at 5 p.m. today.", 'He said "Hi!"', "Then left...", "What?",
      "J. R. R. Tolkien wrote it, e.g. the Hobbit.", "U.S. customs agreed.", "A new line",
      "ends one too"]
  assert pe.split_sentences("the rock is destined . it is good") == [
      "the rock is destined . it is good"]
  assert pe.split_sentences(" \n\n \t") == []


@pytest.mark.parametrize("max_seq_length", [128, 512])
def test_nsp_examples_structure(tok, documents, max_seq_length):
  rng = np.random.default_rng(0)
  examples = list(pe.pack_nsp(documents, max_seq_length=max_seq_length, short_seq_prob=0.1,
                                   rng=rng, cls_id=tok.cls_id, sep_id=tok.sep_id))
  assert len(examples) > 100
  for ex in examples:
    ids, types = ex["input_ids"], ex["token_type_ids"]
    assert ids.dtype == types.dtype == np.int32 and len(ids) == len(types) <= max_seq_length
    seps = np.flatnonzero(ids == tok.sep_id)
    assert ids[0] == tok.cls_id and len(seps) == 2 and seps[1] == len(ids) - 1
    assert seps[0] >= 2 and seps[1] - seps[0] >= 2  # A and B non-empty
    np.testing.assert_array_equal(types, np.arange(len(ids)) > seps[0])
    assert ex["next_sentence_label"] in (0, 1)
  lengths = np.array([len(ex["input_ids"]) for ex in examples])
  # Reviews average ~300 tokens: 128 is mostly full, 512 is bounded by the documents.
  assert lengths.max() == max_seq_length
  assert np.median(lengths) >= (0.8 * 128 if max_seq_length == 128 else 150)


def test_nsp_labels_balanced_and_correct(tok, documents):
  examples = list(pe.pack_nsp(documents, max_seq_length=128, short_seq_prob=0.1,
                                   rng=np.random.default_rng(1), cls_id=tok.cls_id,
                                   sep_id=tok.sep_id))
  labels = np.array([ex["next_sentence_label"] for ex in examples])
  assert 0.45 < labels.mean() < 0.55, labels.mean()
  streams = [_stream(np.concatenate(d)) for d in documents if d]
  contiguous = {0: [], 1: []}
  for ex in examples:
    ids = ex["input_ids"]
    seps = np.flatnonzero(ids == tok.sep_id)
    a, b = ids[1:seps[0]], ids[seps[0] + 1:-1]
    if len(ids) < 128:  # not truncated: A then B is (or is not) a run of one document
      pair = _stream(np.concatenate([a, b]))
      contiguous[int(ex["next_sentence_label"])].append(any(pair in s for s in streams))
  assert len(contiguous[0]) > 20 and len(contiguous[1]) > 20
  assert all(contiguous[0])  # actual next: A B appears as such in a document
  assert np.mean(contiguous[1]) < 0.05  # random next: (almost) never


def test_short_seq_prob(tok, documents):
  def lengths(p):
    examples = pe.pack_nsp(documents, max_seq_length=128, short_seq_prob=p,
                                rng=np.random.default_rng(0), cls_id=tok.cls_id,
                                sep_id=tok.sep_id)
    return np.array([len(ex["input_ids"]) for ex in examples])
  never, always = lengths(0.0), lengths(1.0)
  assert np.mean(never >= 120) > 0.6  # the rest end a document
  assert np.mean(always >= 120) < 0.25 and len(always) > 1.3 * len(never)


def test_nsp_is_deterministic(tok, documents):
  def run(seed):
    return list(pe.pack_nsp(documents[:50], max_seq_length=64, short_seq_prob=0.1,
                                 rng=np.random.default_rng(seed), cls_id=tok.cls_id,
                                 sep_id=tok.sep_id))
  a, b, c = run(3), run(3), run(4)
  assert len(a) == len(b)
  assert all(np.array_equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b))
  assert [x["next_sentence_label"] for x in a] == [y["next_sentence_label"] for y in b]
  assert not (len(a) == len(c) and all(np.array_equal(x["input_ids"], y["input_ids"])
                                       for x, y in zip(a, c)))


@pytest.mark.parametrize("max_seq_length", [128, 512])
def test_full_sentences_keep_every_token(tok, documents, max_seq_length):
  examples = list(pe.pack_full_sentences(documents, max_seq_length=max_seq_length,
                                              cls_id=tok.cls_id, sep_id=tok.sep_id))
  for ex in examples:
    ids = ex["input_ids"]
    assert len(ids) <= max_seq_length and ids[0] == tok.cls_id and ids[-1] == tok.sep_id
    assert not ex["token_type_ids"].any() and "next_sentence_label" not in ex
  lengths = np.array([len(ex["input_ids"]) for ex in examples])
  assert np.mean(lengths[:-1] >= max_seq_length - 40) > 0.9  # packed nearly full
  # Dropping [CLS]/[SEP] (ends and document separators) gives back the whole corpus.
  body = np.concatenate([ex["input_ids"][1:-1] for ex in examples])
  np.testing.assert_array_equal(body[body != tok.sep_id], np.concatenate(
      [s for d in documents for s in d]))
  # Documents are separated by one [SEP] inside an example when they share it.
  assert sum(int((ex["input_ids"][1:-1] == tok.sep_id).sum()) for ex in examples) > 0


def test_document_longer_than_anything(tok):
  """One 'sentence' of 20,000 tokens (no punctuation) is cut, never dropped."""
  text = " ".join(f"word{i % 97} lorem ipsum" for i in range(4000))
  (sentence,) = pe.split_sentences(text)
  (ids,) = tok.tokenize_to_ids([sentence])
  assert len(ids) > 15_000
  full = list(pe.pack_full_sentences([[ids]], max_seq_length=128, cls_id=tok.cls_id,
                                          sep_id=tok.sep_id))
  np.testing.assert_array_equal(np.concatenate([e["input_ids"][1:-1] for e in full]), ids)
  assert all(len(e["input_ids"]) <= 128 for e in full)
  short = [np.array([7, 8, 9], np.int32)]
  nsp = list(pe.pack_nsp([[ids], short], max_seq_length=128, short_seq_prob=0.0,
                              rng=np.random.default_rng(0), cls_id=tok.cls_id, sep_id=tok.sep_id))
  assert all(len(e["input_ids"]) <= 128 for e in nsp)
  # Without short targets, each example of the long document holds two consecutive
  # pieces (A, B) or one piece and a random B: at most one token per example is lost.
  own = [e for e in nsp if e["input_ids"][1] != 7]
  kept = sum(len(e["input_ids"]) - 3 if e["next_sentence_label"] == 0
             else int(np.flatnonzero(e["input_ids"] == tok.sep_id)[0]) - 1 for e in own)
  assert len(ids) - len(own) <= kept <= len(ids)


def test_empty_documents_and_tiny_inputs(tok):
  a = [np.array([5, 6], np.int32)]
  empty: list = []
  examples = list(pe.pack_nsp([empty, a, [np.zeros(0, np.int32)]], max_seq_length=8,
                                   short_seq_prob=0.0, rng=np.random.default_rng(0),
                                   cls_id=1, sep_id=2))
  # The only document has one sentence: B must be random (from itself, the only one).
  assert [e["input_ids"].tolist() for e in examples] == [[1, 5, 6, 2, 5, 6, 2]]
  assert examples[0]["next_sentence_label"] == 1
  assert not list(pe.pack_full_sentences([empty, empty], max_seq_length=8, cls_id=1,
                                              sep_id=2))
  with pytest.raises(ValueError, match="max_seq_length"):
    list(pe.pack_nsp([a], max_seq_length=4, short_seq_prob=0, rng=np.random.default_rng(0),
                          cls_id=1, sep_id=2))


def test_tokenize_documents_keeps_document_and_sentence_boundaries(tok):
  texts = ["First one. Second one here!", "", "Only one sentence"]
  docs = pe.tokenize_documents(texts, tok)
  assert [len(d) for d in docs] == [2, 0, 1]
  expected = [tok.tokenize_to_ids(pe.split_sentences(t)) for t in texts]
  for doc, ref in zip(docs, expected):
    assert all(np.array_equal(a, b) for a, b in zip(doc, ref))
