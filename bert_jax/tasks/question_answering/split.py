"""Splits a SQuAD v1.1 file by article into train.json and eval.json (same JSON structure).

    python -m bert_jax.tasks.question_answering.split \
        --squad ../shared/data/squad_v1.1/dev-v1.1-part.json --out workdirs/squad_split

The last --num_eval_articles articles in file order evaluate, all earlier ones train
(`reader.split_articles`; its module docstring lists which titles land where for the shared
file: 38 articles / 7,612 questions train, 10 / 1,768 evaluate). Prints the counts of
articles, paragraphs and questions on each side. Write the output outside the repository
(workdirs/ is ignored): the data's licence keeps it out of version control.
"""

from __future__ import annotations

import argparse
import os

from bert_jax import fileio
from bert_jax.tasks.question_answering import reader


def main(argv=None) -> dict[str, dict[str, int]]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--squad", required=True, help="SQuAD v1.1 JSON file to split")
  parser.add_argument("--out", required=True, help="folder for train.json and eval.json")
  parser.add_argument("--num_eval_articles", type=int, default=10)
  args = parser.parse_args(argv)
  sides = dict(zip(("train", "eval"),
                   reader.split_articles(args.squad, args.num_eval_articles)))
  counts = {}
  for name, data in sides.items():
    path = os.path.join(args.out, f"{name}.json")
    fileio.write_json_atomic(path, data)
    counts[name] = reader.squad_counts(data)
    c = counts[name]
    print(f"{name}: {c['articles']} articles, {c['paragraphs']} paragraphs, "
          f"{c['questions']} questions -> {path}")
  print("eval articles: " + ", ".join(a.get("title", "") for a in sides["eval"]["data"]))
  return counts


if __name__ == "__main__":
  main()
