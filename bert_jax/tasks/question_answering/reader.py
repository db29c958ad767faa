"""SQuAD v1.1 reading and the article split (host side, no jax).

`read_squad(path)` reads a SQuAD v1.1 JSON file (`data[].paragraphs[].context`,
`qas[].id/question/answers[].text/answer_start`) into `Example`s; `read_tfds` does the same for
the TFDS `squad/v1.1` dataset. Errors a file can cause are one line naming the file and the
question id. An answer whose `answer_start` does not point at its text is, with
`training=True`, dropped with one warning giving the count (a question left without answers is
skipped), as google-research/bert's `read_squad_examples` skips answers it cannot find; for
evaluation every answer is kept as a reference (the metric compares texts only).

Split. No SQuAD training set is available offline, so `split_articles` splits one file by
article: the LAST `num_eval_articles` articles in file order evaluate, all earlier ones train
(no randomness; a paragraph's questions never straddle the sides). On the shared 48-article
`dev-v1.1-part.json` (`python -m bert_jax.tasks.question_answering.split` writes the two
files):
  train (38 articles, 1,456 paragraphs, 7,612 questions): Super_Bowl_50 ... Kenya, i.e.
    articles 1-38 of the file;
  eval (10 articles, 371 paragraphs, 1,768 questions): Intergovernmental_Panel_on_Climate_Change,
    Chloroplast, Prime_number, Rhine, Scottish_Parliament, Islamism, Imperialism,
    United_Methodist_Church, French_and_Indian_War, Force.

SQuAD v2 (unanswerable questions) is not supported: a question marked `is_impossible` is an
error.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from bert_jax import fileio
from bert_jax.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True)
class Example:
  """One question. `answers`: (text, answer_start) pairs in file order; the first trains."""
  id: str
  title: str
  question: str
  context: str
  answers: tuple[tuple[str, int], ...]


def load_json(path: str) -> Any:
  """A JSON file, with one-line errors for a missing file, non-UTF-8 bytes or broken JSON."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such file")
  return fileio.read_json(path)


def read_squad(path: str, *, training: bool = False) -> list[Example]:
  """A SQuAD v1.1 JSON file -> its questions, in file order (see the module docstring)."""
  return examples_from_json(load_json(path), source=path, training=training)


def examples_from_json(data: Any, *, source: str = "<data>", training: bool = False
                       ) -> list[Example]:
  """Parsed SQuAD v1.1 JSON -> Examples; `source` names the file in error messages."""
  articles = _articles(data, source)
  rows = []
  for a, article in enumerate(articles):
    title = article.get("title", "") if isinstance(article, dict) else ""
    paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
    if not isinstance(paragraphs, list):
      raise DataError(f"{source}: article {a} ({title!r}) has no 'paragraphs' list")
    for p, paragraph in enumerate(paragraphs):
      qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
      if not isinstance(qas, list):
        raise DataError(f"{source}: article {a} ({title!r}) paragraph {p} has no 'qas' list")
      for qa in qas:
        if not isinstance(qa, dict):
          raise DataError(f"{source}: article {a} ({title!r}) paragraph {p}: a question is "
                          f"{type(qa).__name__}, not an object")
        if qa.get("is_impossible"):
          raise DataError(f"{source}: question {qa.get('id')}: is_impossible (SQuAD v2 "
                          "unanswerable questions are not supported)")
        answers = qa.get("answers")
        if not isinstance(answers, list) or not all(isinstance(x, dict) for x in answers):
          raise DataError(f"{source}: question {qa.get('id')}: 'answers' is not a list of "
                          "objects")
        rows.append((title, paragraph.get("context"), qa.get("id"), qa.get("question"),
                     [(x.get("text"), x.get("answer_start")) for x in answers]))
  return _make_examples(rows, source, training)


def read_tfds(name: str = "squad/v1.1", split: str = "validation", *,
              data_dir: str | None = None, training: bool = False) -> list[Example]:
  """The TFDS `squad/v1.1` dataset -> Examples, with the same checks as `read_squad`.

  Reads through `tfds.data_source` (random access), which downloads and prepares the dataset
  in `data_dir` the first time. Not covered by the tests: the test machines are offline (the
  record conversion, `examples_from_records`, is tested).
  """
  import tensorflow_datasets as tfds
  source = tfds.data_source(name, split=split, data_dir=data_dir)
  return examples_from_records((source[i] for i in range(len(source))),
                               source=f"tfds:{name}[{split}]", training=training)


def examples_from_records(records: Iterable[Mapping[str, Any]], *, source: str,
                          training: bool = False) -> list[Example]:
  """TFDS squad-like records ({id, title, context, question, answers: {text, answer_start}},
  strings as bytes or str) -> Examples."""
  rows = []
  for record in records:
    answers = record.get("answers") or {}
    texts = [_str(t) for t in answers.get("text", ())]
    starts = [int(s) for s in answers.get("answer_start", ())]
    qid = _str(record.get("id"))
    if len(texts) != len(starts):
      raise DataError(f"{source}: question {qid}: {len(texts)} answer texts but "
                      f"{len(starts)} answer_starts")
    rows.append((_str(record.get("title", "")), _str(record.get("context")), qid,
                 _str(record.get("question")), list(zip(texts, starts))))
  return _make_examples(rows, source, training)


def _str(value):
  return value.decode("utf-8") if isinstance(value, bytes) else value


def _articles(data: Any, source: str) -> list:
  if not isinstance(data, dict) or not isinstance(data.get("data"), list):
    raise DataError(f"{source}: not SQuAD JSON (no top-level 'data' list of articles)")
  return data["data"]


def _make_examples(rows, source: str, training: bool) -> list[Example]:
  """Checks (title, context, id, question, [(text, answer_start)]) rows into Examples."""
  examples, seen = [], set()
  dropped_answers = dropped_questions = 0
  first_dropped = None  # (id, context, (text, answer_start)) of the first question dropped
  for title, context, qid, question, answers in rows:
    if not isinstance(qid, str) or not qid:
      raise DataError(f"{source}: a question of article {title!r} has no id")
    if qid in seen:
      raise DataError(f"{source}: question {qid}: id appears twice")
    seen.add(qid)
    if not isinstance(context, str) or not context.strip():
      raise DataError(f"{source}: question {qid}: context has no text")
    if not isinstance(question, str) or not question.strip():
      raise DataError(f"{source}: question {qid}: empty question")
    if not answers:
      raise DataError(f"{source}: question {qid}: no answers (SQuAD v1.1 answers every "
                      "question)")
    kept = []
    for text, start in answers:
      if not isinstance(text, str) or not text.strip():
        raise DataError(f"{source}: question {qid}: an answer has no text")
      if isinstance(start, bool) or not isinstance(start, int):
        raise DataError(f"{source}: question {qid}: answer_start {start!r} is not an integer")
      if training and (start < 0 or context[start:start + len(text)] != text):
        dropped_answers += 1
        continue
      kept.append((text, start))
    if not kept:
      dropped_questions += 1
      first_dropped = first_dropped or (qid, context, answers[0])
      continue
    examples.append(Example(id=qid, title=title or "", question=question, context=context,
                            answers=tuple(kept)))
  if training and not examples and first_dropped:
    qid, context, (text, start) = first_dropped
    raise DataError(
        f"{source}: every training question was dropped: all {dropped_answers} answers do not "
        f"match their context at answer_start (the first, question {qid}: {text!r} at "
        f"{start}, where the context has {context[max(start, 0):max(start, 0) + len(text)]!r}); "
        "fix answer_start (0-based character offsets into the context)")
  if dropped_answers:
    warnings.warn(f"{source}: dropped {dropped_answers} training answers whose answer_start "
                  f"does not point at their text ({dropped_questions} questions left without "
                  "an answer were skipped)", stacklevel=3)
  return examples


def split_articles(path_or_data: str | Mapping[str, Any], num_eval_articles: int = 10
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
  """SQuAD JSON (a path or the parsed dict) -> (train, eval) SQuAD JSON dicts.

  The last `num_eval_articles` articles in file order go to eval, all earlier ones to train;
  both keep the file's `version`.
  """
  if isinstance(path_or_data, str):
    source, data = path_or_data, load_json(path_or_data)
  else:
    source, data = "<data>", path_or_data
  articles = _articles(data, source)
  if not 1 <= num_eval_articles < len(articles):
    raise ConfigError(f"{source}: num_eval_articles must be between 1 and {len(articles) - 1} "
                      f"(the file has {len(articles)} articles), got {num_eval_articles}")
  version = data.get("version", "1.1")
  cut = len(articles) - num_eval_articles
  return ({"version": version, "data": articles[:cut]},
          {"version": version, "data": articles[cut:]})


def squad_counts(data: Mapping[str, Any]) -> dict[str, int]:
  """{"articles", "paragraphs", "questions"} of SQuAD JSON."""
  articles = _articles(data, "<data>")
  paragraphs = [p for a in articles for p in a["paragraphs"]]
  return {"articles": len(articles), "paragraphs": len(paragraphs),
          "questions": sum(len(p["qas"]) for p in paragraphs)}
