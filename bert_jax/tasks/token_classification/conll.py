"""Word-level tagged sentences (NER) from CoNLL files, JSON Lines or TFDS, checked for IOB.

Readers return `list[Sentence]`: the words of each sentence and one tag per word.

- `read_conll`: one token a line, columns separated by spaces or tabs, a blank line between
  sentences, the word in the first column and the tag in `tag_column` (default: the last);
  `-DOCSTART-` lines are document separators and are skipped.
- `read_jsonl`: one JSON object a line, `{"tokens": [...], "tags": [...]}`.
- `read_tagged`: either, by extension (`.jsonl`/`.json` -> JSON Lines, else CoNLL).
- `read_tfds`: a prepared TFDS dataset (default `conll2003`) with integer tags.

Tagging scheme. Tags must be `O`, `B-TYPE` or `I-TYPE` (IOB2 or IOB1). Every reader converts
to IOB2 automatically (`iob1_to_iob2`): an `I-TYPE` that starts an entity (first word, or after
`O` or another type) becomes `B-TYPE`. Detection needs no file-level switch because the
conversion changes nothing in valid IOB2, is exactly the IOB1 -> IOB2 mapping (in IOB1, `B-` only
separates two adjacent entities of one type, which IOB2 writes the same way), and on ill-formed
IOB2 reads the tags the way conlleval and seqeval's default mode score them. The number of
sentences converted is logged. BIOES/IOBES (`S-`, `E-`), bare types (`PER`) and anything else
are a one-line error naming the tag and its place; convert such files first.

Errors a user can cause are one line naming the file (and line): not UTF-8 (with the byte
offset), no sentences, a token line whose column count differs from the file's first token
line, a tag that is not IOB, invalid JSON, tokens and tags of different lengths.

Only the standard library is imported (tensorflow_datasets in `read_tfds` alone).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterable, Sequence

from bert_jax import fileio
from bert_jax.errors import ConfigError, DataError

log = logging.getLogger("bert_jax.datasets")

DOCSTART = "-DOCSTART-"
OUTSIDE = "O"
_COLUMN_SEPARATOR = re.compile(r"[ \t]+")


@dataclasses.dataclass(frozen=True)
class Sentence:
  """One sentence: `words` and one tag per word (`tags == ()` for unlabelled text).

  `line`: where it starts in its file (1-based; 0 when not read from a file), for messages.
  """
  words: tuple[str, ...]
  tags: tuple[str, ...] = ()
  line: int = dataclasses.field(default=0, compare=False)

  def __post_init__(self):
    if self.tags and len(self.tags) != len(self.words):
      raise ValueError(f"{len(self.words)} words but {len(self.tags)} tags")


# ---------------------------------------------------------------------------------------------
# The tagging scheme

def split_tag(tag: str) -> tuple[str, str]:
  """A checked IOB tag -> (prefix, type): "B-PER" -> ("B", "PER"); "O" -> ("O", "")."""
  return (OUTSIDE, "") if tag == OUTSIDE else (tag[0], tag[2:])


def check_tag(tag: str, where: str) -> None:
  """A one-line DataError unless `tag` is `O`, `B-TYPE` or `I-TYPE`."""
  if tag == OUTSIDE or (len(tag) > 2 and tag[0] in "BI" and tag[1] == "-"):
    return
  hint = ""
  if len(tag) > 2 and tag[0] in "SEU" and tag[1] == "-":
    hint = " (BIOES/IOBES tags are not supported: convert the file to IOB2)"
  elif tag.isalpha():
    hint = " (a bare type: tags need a B- or I- prefix)"
  raise DataError(f"{where}: tag {tag!r} is not IOB (O, B-TYPE, I-TYPE){hint}")


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
  """IOB1 -> IOB2: an `I-X` that starts an entity becomes `B-X`. No change on valid IOB2."""
  out, prev = [], OUTSIDE
  for tag in tags:
    prefix, kind = split_tag(tag)
    if prefix == "I" and split_tag(prev)[1] != kind:
      tag = "B-" + kind
    out.append(tag)
    prev = tag
  return out


def check_scheme(tags: Sequence[str], where: str) -> bool:
  """Validates IOB tags (one-line DataError naming the tag, `where` and the word number);
  True when they are already IOB2, False when some `I-X` starts an entity (IOB1: convert with
  `iob1_to_iob2`)."""
  is_iob2, prev_kind = True, ""
  for i, tag in enumerate(tags):
    check_tag(tag, f"{where} (word {i + 1})")
    prefix, kind = split_tag(tag)
    if prefix == "I" and kind != prev_kind:
      is_iob2 = False
    prev_kind = kind
  return is_iob2


def to_iob2(sentences: Sequence[Sentence], source: str) -> list[Sentence]:
  """`check_scheme` on every labelled sentence, IOB1 ones converted (see the module docstring);
  `source` names the file in messages and the log line."""
  out, converted = [], 0
  for s in sentences:
    if s.tags and not check_scheme(s.tags, f"{source}:{s.line}"):
      s = dataclasses.replace(s, tags=tuple(iob1_to_iob2(s.tags)))
      converted += 1
    out.append(s)
  if converted:
    log.info("%s: %d of %d sentences had an I- tag starting an entity (IOB1); converted to "
             "IOB2", source, converted, len(out))
  return out


def label_list(sentences: Iterable[Sentence]) -> list[str]:
  """The label names, in the order saved with a checkpoint: `O`, then for each entity type
  (sorted) `B-TYPE`, `I-TYPE`. Both are listed for every type seen, even when a split lacks
  one of them (an `I-` tag is needed for `label_all_pieces` and may appear in other data)."""
  kinds = sorted({split_tag(t)[1] for s in sentences for t in s.tags} - {""})
  return [OUTSIDE] + [f"{p}-{k}" for k in kinds for p in "BI"]


def check_eval_labels(eval_sentences: Sequence[Sentence], label_names: Sequence[str],
                      path: str) -> None:
  """A one-line DataError (`path:line`) for the first eval tag outside `label_names`."""
  known = set(label_names)
  for s in eval_sentences:
    for word, tag in zip(s.words, s.tags):
      if tag not in known:
        raise DataError(f"{path}:{s.line}: tag {tag!r} (word {word!r}) never occurs in the "
                        f"training data, whose labels are {', '.join(label_names)}")


# ---------------------------------------------------------------------------------------------
# Readers

def read_conll(path: str, tag_column: int = -1) -> list[Sentence]:
  """A CoNLL file -> IOB2 sentences (see the module docstring). `tag_column` indexes the
  columns of a token line (0 is the word; default -1, the last)."""
  path = os.fspath(path)
  text = fileio.read_text(path)
  sentences: list[Sentence] = []
  words: list[str] = []
  tags: list[str] = []
  start = num_columns = first_line = 0

  def end_sentence():
    if words:
      sentences.append(Sentence(tuple(words), tuple(tags), start))
      words.clear()
      tags.clear()

  for lineno, line in enumerate(text.split("\n"), start=1):
    line = line.strip(" \t\r")
    if not line:
      end_sentence()
      continue
    columns = _COLUMN_SEPARATOR.split(line)
    if columns[0] == DOCSTART:
      end_sentence()
      continue
    if not num_columns:
      num_columns, first_line = len(columns), lineno
      if num_columns < 2:
        raise DataError(f"{path}:{lineno}: one column; a token line needs the word and "
                        "its tag")
      if not -num_columns <= tag_column < num_columns or tag_column in (0, -num_columns):
        raise ConfigError(f"{path}:{lineno}: tag_column {tag_column} is not a tag column of "
                          f"a {num_columns}-column line (the word is column 0)")
    elif len(columns) != num_columns:
      raise DataError(f"{path}:{lineno}: {len(columns)} columns, but the first token line "
                      f"(line {first_line}) has {num_columns}")
    if not words:
      start = lineno
    check_tag(columns[tag_column], f"{path}:{lineno}")
    words.append(columns[0])
    tags.append(columns[tag_column])
  end_sentence()
  if not sentences:
    raise DataError(f"{path}: no sentences (an empty file, or only -DOCSTART- lines)")
  return to_iob2(sentences, path)


def read_jsonl(path: str, tokens_key: str = "tokens", tags_key: str = "tags"
               ) -> list[Sentence]:
  """A JSON Lines file, one `{tokens_key: [...], tags_key: [...]}` object a line (blank lines
  skipped) -> IOB2 sentences."""
  path = os.fspath(path)
  sentences = []
  for lineno, record in fileio.json_lines(path, fileio.read_text(path).split("\n")):
    if not isinstance(record, dict):
      raise DataError(f"{path}:{lineno}: expected a JSON object, got "
                      f"{type(record).__name__}")
    for key in (tokens_key, tags_key):
      value = record.get(key)
      if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{path}:{lineno}: {key!r} must be a list of strings (fields: "
                        f"{sorted(record)})")
    tokens, tags = record[tokens_key], record[tags_key]
    if len(tokens) != len(tags):
      raise DataError(f"{path}:{lineno}: {len(tokens)} {tokens_key} but {len(tags)} "
                      f"{tags_key}")
    if not tokens:
      raise DataError(f"{path}:{lineno}: an empty sentence (no {tokens_key})")
    sentences.append(Sentence(tuple(tokens), tuple(tags), lineno))
  if not sentences:
    raise DataError(f"{path}: no sentences (an empty file)")
  return to_iob2(sentences, path)


def read_tagged(path: str, tag_column: int = -1, **kwargs) -> list[Sentence]:
  """`read_jsonl` for `.jsonl`/`.json` files (`kwargs` go to it), else `read_conll` (with
  `tag_column`)."""
  path = os.fspath(path)
  if path.endswith((".jsonl", ".json")):
    return read_jsonl(path, **kwargs)
  return read_conll(path, tag_column=tag_column, **kwargs)


def read_tfds(name: str = "conll2003", split: str = "train", data_dir: str | None = None,
              tokens_key: str = "tokens", tags_key: str = "ner") -> list[Sentence]:
  """A prepared TFDS dataset -> IOB2 sentences, through `tfds.data_source` (no TensorFlow).

  The integer tags are mapped to strings by the dataset's ClassLabel names (TFDS `conll2003`:
  O, B-PER, I-PER, B-ORG, ...; its splits are train, dev, test). Nothing is downloaded: prepare
  the dataset first (`tfds build conll2003`). Not exercised by the offline tests on the real
  `conll2003` (it cannot be prepared without the network); tests/test_ner.py runs it on a small
  local builder with the same features.
  """
  import tensorflow_datasets as tfds

  source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  features = source.dataset_info.features
  for key in (tokens_key, tags_key):
    if key not in features:
      raise ConfigError(f"{name}: no feature {key!r} (features: {sorted(features)})")
  names = features[tags_key].feature.names
  sentences = []
  for i in range(len(source)):
    record = source[i]
    words = tuple(w.decode("utf-8") if isinstance(w, bytes) else str(w)
                  for w in record[tokens_key])
    sentences.append(Sentence(words, tuple(names[int(t)] for t in record[tags_key]), i + 1))
  if not sentences:
    raise DataError(f"{name}[{split}]: no sentences")
  # Messages name the record as name[split]:<index + 1>.
  return to_iob2(sentences, f"{name}[{split}]")
