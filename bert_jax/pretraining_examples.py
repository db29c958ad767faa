"""Sentence splitting and packing of tokenized documents into pretraining examples.

Pure python/numpy, no TFDS: the builders call these once at preparation time.

Two modes:
- `pack_nsp` (BERT): `[CLS] A [SEP] B [SEP]`, token types 0 for `[CLS] A [SEP]` and 1 for
  `B [SEP]`. A is one or more whole sentences; B is the actual continuation
  (`next_sentence_label` 0) or, with probability 1/2, sentences from a random other
  document (label 1, as google-research/bert and transformers). With probability
  `short_seq_prob` an example targets a random shorter length in [2, max_tokens] so the
  model also sees short inputs. This follows google-research/bert's
  `create_instances_from_document` except that (a) the short target is drawn per example
  rather than per document and (b) when B should be the actual next but the chunk holds
  one sentence, B is the next sentence (or the second half of the document's last
  sentence) instead of a forced random B: the labels stay close to 50/50.
- `pack_full_sentences` (RoBERTa FULL-SENTENCES): `[CLS] s1 s2 ... [SEP]`, contiguous
  sentences up to the length limit, crossing document boundaries with an extra `[SEP]`
  between documents; token types all 0, no NSP label.

Sentences longer than the room in one example (half of it for NSP, so that A and B each
hold a piece) are cut into pieces first (`split_long_sentences`): a document of any
length becomes examples, none is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import numpy as np

Document = Sequence[np.ndarray]  # sentences, each int32 wordpiece ids without specials

# A candidate boundary: terminal punctuation, optional closing quotes/brackets, whitespace.
_BOUNDARY = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*\s+")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs etc e.g i.e inc ltd co corp mt no vol fig approx dept "
    "est gen gov sgt capt lt col rev".split())


def split_sentences(text: str) -> list[str]:
  """Splits text into sentences; every line break also ends a sentence.

  A boundary is `.`, `!` or `?` (plus closing quotes/brackets) followed by whitespace and
  a character that is not lowercase, unless the word before the period is a known
  abbreviation ("Mr.", "e.g.") or a single-letter initial ("J. R. R. Tolkien"). Empty and
  whitespace-only sentences are dropped.
  """
  sentences = []
  for line in text.splitlines():
    start = 0
    for m in _BOUNDARY.finditer(line):
      nxt = line[m.end():m.end() + 1]
      if not nxt or nxt.islower():
        continue
      if line[m.start()] == ".":
        word = line[start:m.start()].rsplit(None, 1)[-1:] or [""]
        word = word[0].lstrip("\"'(\u201c[").lower()
        if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
          continue
      sentences.append(line[start:m.end()].strip())
      start = m.end()
    sentences.append(line[start:].strip())
  return [s for s in sentences if s]


def tokenize_documents(texts: Sequence[str], tokenizer) -> list[Document]:
  """Texts -> [document][sentence] ids: `split_sentences`, then one batched
  `tokenizer.tokenize_to_ids` call over every sentence of every text."""
  sentences = [split_sentences(t) for t in texts]
  flat = tokenizer.tokenize_to_ids([s for doc in sentences for s in doc])
  documents, start = [], 0
  for doc in sentences:
    documents.append(flat[start:start + len(doc)])
    start += len(doc)
  return documents


def split_long_sentences(document: Document, max_tokens: int) -> list[np.ndarray]:
  """Drops empty sentences and cuts those over `max_tokens` into consecutive pieces."""
  pieces = []
  for sentence in document:
    for start in range(0, len(sentence), max_tokens):
      pieces.append(sentence[start:start + max_tokens])
  return pieces


def _example(tokens_a: np.ndarray, tokens_b: np.ndarray | None, cls_id: int, sep_id: int,
             next_sentence_label: int | None) -> dict[str, np.ndarray | int]:
  # [CLS] A [SEP] (B [SEP]) -> input_ids [L], token_type_ids [L]
  parts = [np.array([cls_id], np.int32), tokens_a, np.array([sep_id], np.int32)]
  types = [np.zeros(len(tokens_a) + 2, np.int32)]
  if tokens_b is not None:
    parts += [tokens_b, np.array([sep_id], np.int32)]
    types.append(np.ones(len(tokens_b) + 1, np.int32))
  example = {"input_ids": np.concatenate(parts).astype(np.int32),
             "token_type_ids": np.concatenate(types)}
  if next_sentence_label is not None:
    example["next_sentence_label"] = next_sentence_label
  return example


def _truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: np.random.Generator):
  """google-research/bert's truncate_seq_pair: trim the longer side, front or back at random."""
  while len(a) + len(b) > max_tokens:
    longer = a if len(a) > len(b) else b
    if rng.random() < 0.5:
      del longer[0]
    else:
      longer.pop()


def pack_nsp(documents: Sequence[Document], *, max_seq_length: int, short_seq_prob: float,
             rng: np.random.Generator, cls_id: int, sep_id: int) -> Iterator[dict]:
  """BERT-style `[CLS] A [SEP] B [SEP]` examples with NSP labels from `documents`.

  Random B sentences come from the other documents in `documents` (the builders pass
  chunks of a few thousand). Yields dicts with int32 `input_ids` [L], `token_type_ids`
  [L] (L <= max_seq_length) and int `next_sentence_label` (0 = actual next, 1 = random).
  """
  max_tokens = max_seq_length - 3  # [CLS] A [SEP] B [SEP]
  if max_tokens < 2:
    raise ValueError(f"max_seq_length {max_seq_length} leaves no room for A and B")
  # Pieces of half the room: two pieces of one long sentence make an example (minus the
  # one token truncation removes when max_tokens is odd).
  docs = [split_long_sentences(d, (max_tokens + 1) // 2) for d in documents]
  nonempty = [j for j, d in enumerate(docs) if d]

  for doc_index, doc in enumerate(docs):
    chunk: list[np.ndarray] = []
    length = 0
    target = _draw_target(max_tokens, short_seq_prob, rng)
    i = 0
    while i < len(doc):
      chunk.append(doc[i])
      length += len(doc[i])
      if i == len(doc) - 1 or length >= target:
        is_random = rng.random() < 0.5
        if not is_random and len(chunk) == 1:
          if i + 1 < len(doc):  # borrow the next sentence as B
            i += 1
            chunk.append(doc[i])
          elif len(chunk[0]) >= 2:  # the document's last sentence: halve it
            half = len(chunk[0]) // 2
            chunk = [chunk[0][:half], chunk[0][half:]]
          else:
            is_random = True
        a_end = 1 if len(chunk) == 1 else int(rng.integers(1, len(chunk)))
        tokens_a = [t for s in chunk[:a_end] for t in s.tolist()]
        if is_random:
          tokens_b = _random_continuation(docs, nonempty, doc_index, target - len(tokens_a), rng)
          i -= len(chunk) - a_end  # the unused sentences start the next example
        else:
          tokens_b = [t for s in chunk[a_end:] for t in s.tolist()]
        _truncate_pair(tokens_a, tokens_b, max_tokens, rng)
        if tokens_a and tokens_b:
          yield _example(np.array(tokens_a, np.int32), np.array(tokens_b, np.int32),
                         cls_id, sep_id, int(is_random))
        chunk, length = [], 0
        target = _draw_target(max_tokens, short_seq_prob, rng)
      i += 1


def _draw_target(max_tokens: int, short_seq_prob: float, rng: np.random.Generator) -> int:
  if rng.random() < short_seq_prob:
    return int(rng.integers(2, max_tokens + 1))
  return max_tokens


def _random_continuation(docs, nonempty: list[int], doc_index: int, target_b: int,
                         rng: np.random.Generator) -> list[int]:
  """Sentences from a random other document (the same one only if it is the only one)."""
  others = len(nonempty) > 1
  j = doc_index
  while j == doc_index:
    j = nonempty[int(rng.integers(len(nonempty)))]
    if not others:
      break
  doc = docs[j]
  tokens: list[int] = []
  for sentence in doc[int(rng.integers(len(doc))):]:
    tokens.extend(sentence.tolist())
    if len(tokens) >= max(target_b, 1):
      break
  return tokens


def pack_full_sentences(documents: Sequence[Document], *, max_seq_length: int, cls_id: int,
                        sep_id: int) -> Iterator[dict]:
  """RoBERTa FULL-SENTENCES examples `[CLS] s1 s2 ... [SEP]` (documents separated by [SEP]).

  Yields dicts with int32 `input_ids` [L] and `token_type_ids` [L] (all 0), L <= max_seq_length.
  """
  max_tokens = max_seq_length - 2  # [CLS] ... [SEP]
  if max_tokens < 1:
    raise ValueError(f"max_seq_length {max_seq_length} leaves no room for text")
  current: list[np.ndarray] = []
  length = 0
  for document in documents:
    separator = bool(current)  # a [SEP] between documents, unless an example starts here
    for sentence in split_long_sentences(document, max_tokens):
      if current and length + separator + len(sentence) > max_tokens:
        yield _example(np.concatenate(current), None, cls_id, sep_id, None)
        current, length, separator = [], 0, False
      if separator:
        current.append(np.array([sep_id], np.int32))
        length += 1
        separator = False
      current.append(sentence)
      length += len(sentence)
  if current:
    yield _example(np.concatenate(current), None, cls_id, sep_id, None)
