"""Sentence-pair matching from SQuAD (GLUE QNLI's construction): does this sentence answer
the question?

    .venv/bin/python scripts/make_pairs.py \
        --squad ../shared/data/squad_v1.1/dev-v1.1-part.json --split train \
        --out workdirs/squad_pairs/train
    .venv/bin/python scripts/make_pairs.py \
        --squad ../shared/data/squad_v1.1/dev-v1.1-part.json --split eval \
        --out workdirs/squad_pairs/eval

For each question, every sentence of its paragraph becomes a pair (question, sentence),
label 1 when the sentence overlaps one of the question's answer spans by character offsets,
else 0. Sentences come from `bert_jax.pretraining_examples.split_sentences` (the pretraining
splitter), located in the paragraph by `sentence_spans` so the offsets are exact. The article
split is `bert_jax.tasks.question_answering.reader.split_articles` (the last --num_eval_articles
articles in file order are `eval`, the earlier ones `train`; `all` takes every article), the
same rule as the QA task, so no article is on both sides.

Balance: every positive is kept; of each question's negatives, at most
--negatives_per_positive x (its positives) are kept, drawn with --seed (one
`np.random.default_rng(seed)` consumed in file order); 0 keeps every negative. The default
(1) gives about one negative per positive. The class counts go to DIR/stats.json.

Writes DIR/pairs.csv (columns text = question, text_pair = sentence, label = 0/1), which
experiments/pairs_squad.py trains on, and DIR/stats.json. Write outside the repository
(workdirs/ is ignored): the data's licence keeps it out of version control.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections.abc import Iterator

import numpy as np

from bert_jax.pretraining_examples import split_sentences
from bert_jax.tasks.question_answering import reader as qa_reader

SPLITS = ("train", "eval", "all")


def sentence_spans(context: str) -> list[tuple[int, int]]:
  """[start, end) character offsets in `context` of each `split_sentences` sentence.

  The splitter returns stripped substrings in order, so each is found at or after the end of
  the previous one."""
  spans, pos = [], 0
  for sentence in split_sentences(context):
    start = context.find(sentence, pos)
    if start < 0:  # split_sentences returns substrings; anything else is a bug there
      raise AssertionError(f"sentence {sentence[:40]!r} not found in its paragraph")
    spans.append((start, start + len(sentence)))
    pos = start + len(sentence)
  return spans


def answer_spans(qa: dict) -> list[tuple[int, int]]:
  """[start, end) character offsets of a question's reference answers."""
  return [(a["answer_start"], a["answer_start"] + len(a["text"])) for a in qa["answers"]]


def overlaps(span: tuple[int, int], answers: list[tuple[int, int]]) -> bool:
  return any(span[0] < end and start < span[1] for start, end in answers)


def question_pairs(context: str, spans: list[tuple[int, int]], qa: dict
                   ) -> list[tuple[str, str, int]]:
  """Every (question, sentence, label) of one question, in sentence order."""
  answers = answer_spans(qa)
  return [(qa["question"].strip(), context[s:e], int(overlaps((s, e), answers)))
          for s, e in spans]


def make_pairs(data: dict, negatives_per_positive: int = 1, seed: int = 0
               ) -> Iterator[tuple[str, str, int]]:
  """(question, sentence, label) of SQuAD JSON, balanced as the module docstring says."""
  rng = np.random.default_rng(seed)
  for article in data["data"]:
    for paragraph in article["paragraphs"]:
      context = paragraph["context"]
      spans = sentence_spans(context)
      for qa in paragraph["qas"]:
        pairs = question_pairs(context, spans, qa)
        negatives = [i for i, p in enumerate(pairs) if p[2] == 0]
        keep = set(range(len(pairs)))
        limit = negatives_per_positive * (len(pairs) - len(negatives))
        if negatives_per_positive > 0 and len(negatives) > limit:
          dropped = rng.permutation(negatives)[limit:]
          keep -= {int(i) for i in dropped}
        yield from (p for i, p in enumerate(pairs) if i in keep)


def select(path: str, split: str, num_eval_articles: int) -> dict:
  """The SQuAD JSON of one side of `qa_reader.split_articles` (or the whole file for 'all')."""
  if split == "all":
    return qa_reader.load_json(path)
  train, eval_ = qa_reader.split_articles(path, num_eval_articles)
  return train if split == "train" else eval_


def write_pairs(out: str, pairs: list[tuple[str, str, int]]) -> str:
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, "pairs.csv")
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["text", "text_pair", "label"])
    writer.writerows(pairs)
  return path


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--squad", required=True, help="SQuAD v1.1 JSON file")
  parser.add_argument("--out", required=True, help="folder for pairs.csv and stats.json")
  parser.add_argument("--split", choices=SPLITS, default="all")
  parser.add_argument("--num_eval_articles", type=int, default=10)
  parser.add_argument("--negatives_per_positive", type=int, default=1,
                      help="keep at most K negatives per positive of each question; 0 = all")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  if args.negatives_per_positive < 0:
    parser.error(f"--negatives_per_positive must be >= 0, got {args.negatives_per_positive}")

  data = select(args.squad, args.split, args.num_eval_articles)
  pairs = list(make_pairs(data, args.negatives_per_positive, args.seed))
  path = write_pairs(args.out, pairs)
  positives = sum(label for _, _, label in pairs)
  stats = {"squad": os.path.abspath(args.squad), "split": args.split,
           "num_eval_articles": args.num_eval_articles,
           "negatives_per_positive": args.negatives_per_positive, "seed": args.seed,
           **qa_reader.squad_counts(data), "pairs": len(pairs), "positives": positives,
           "negatives": len(pairs) - positives,
           "positive_fraction": positives / max(len(pairs), 1),
           "titles": [a.get("title", "") for a in data["data"]]}
  with open(os.path.join(args.out, "stats.json"), "w", encoding="utf-8") as f:
    json.dump(stats, f, indent=2)
  print(f"{args.split}: {stats['articles']} articles, {stats['questions']} questions -> "
        f"{len(pairs)} pairs ({positives} positive, {len(pairs) - positives} negative, "
        f"{100 * stats['positive_fraction']:.1f}% positive) -> {path}")
  return stats


if __name__ == "__main__":
  main()
