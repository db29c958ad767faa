"""Answer questions about a text with a fine-tuned extractive QA model.

  python -m bert_jax.answer --checkpoint workdirs/qa --context_file article.txt "Who won?"
  python -m bert_jax.answer --checkpoint workdirs/qa --context "The Rhine flows ..." "Where ...?"
  echo '{"question": "...", "context": "..."}' | python -m bert_jax.answer --checkpoint W
Prints one JSON object per question: the answer text, its character span in the context
(end exclusive), its score (start + end logit) and the top-k alternatives.

The context is a file (`--context_file`; a missing one is an error) or the text itself
(`--context`), never guessed from the value: a `--context` that names a file, or is one word
that looks like a path (`d/notes.txt`), is refused with a pointer to `--context_file`.
Questions longer than the model's `max_query_length` pieces are cut to it, with a `warning:`
line on stderr. No question on stdin is `error: no input: ...` and exit code 1, as in every
prediction CLI.
"""

from __future__ import annotations

import json
import os
import re
import sys

from absl import app, flags

from bert_jax import errors, fileio, inference
from bert_jax.errors import DataError

FLAGS = flags.FLAGS
REFUSAL = (", not an extractive QA model; fine-tune one "
           "(experiments/qa_squad.py)")


def define_flags():
  flags.DEFINE_string("checkpoint", None, "A bert_jax question-answering workdir (or a "
                      "transformers BertForQuestionAnswering directory).")
  flags.DEFINE_string("context", None, "The context text itself (without it or "
                      "--context_file, JSON Lines {\"question\", \"context\"} are read from "
                      "stdin).")
  flags.DEFINE_string("context_file", None, "A UTF-8 text file holding the context.")
  flags.DEFINE_integer("top_k", 5, "Alternatives to print per question.")
  flags.DEFINE_integer("batch_size", 32, "Windows per forward pass.")


def answer(loaded: inference.Loaded, questions: list[str], contexts: list[str], *,
           top_k: int = 5, batch_size: int = 32, truncated: list[int] | None = None
           ) -> list[dict]:
  """Per question {question, answer, start, end, score, alternatives}; the indices of
  questions cut to the model's max_query_length are appended to `truncated` when given."""
  return inference.predict_examples(
      loaded, "question_answering",
      [{"question": q, "context": c} for q, c in zip(questions, contexts, strict=True)],
      refusal=REFUSAL, batch_size=batch_size, top_k=top_k, truncated=truncated)


def _context() -> str | None:
  """The --context_file's text or --context (see the module docstring); None for neither."""
  if FLAGS.context is not None and FLAGS.context_file is not None:
    raise errors.ConfigError("give --context (the text) or --context_file (a file), not both")
  if FLAGS.context_file is not None:
    return fileio.read_text(FLAGS.context_file, universal_newlines=True)
  context = FLAGS.context
  if context is not None and (os.path.exists(context) or re.fullmatch(
      r"\S*[/\\]\S*|\S+\.[A-Za-z]\w{0,4}", context.strip())):
    raise errors.ConfigError(f"--context {context!r} looks like a file name, and --context is "
                             f"the text itself; for a file use --context_file {context}")
  return context


def _read_requests(argv: list[str]) -> tuple[list[str], list[str]]:
  context = _context()
  if context is not None:
    if not argv:
      raise app.UsageError("give the question(s) after the flags")
    return list(argv), [context] * len(argv)
  questions, contexts = [], []
  for n, line in enumerate(sys.stdin, 1):
    if not line.strip():
      continue
    try:
      request = json.loads(line)
      questions.append(str(request["question"]))
      contexts.append(str(request["context"]))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise DataError(f"stdin:{n}: expected a JSON object with \"question\" and \"context\" "
                      f"({type(e).__name__}: {e})") from None
  if not questions:
    raise errors.DataError("no input: stdin has no JSON Lines {\"question\", \"context\"} "
                           "(give questions after --context / --context_file, or lines on stdin)")
  return questions, contexts


def main(argv):
  if not FLAGS.checkpoint:
    raise app.UsageError('usage: answer --checkpoint DIR --context TEXT | --context_file FILE '
                         '"question?" (or JSON Lines on stdin)')
  questions, contexts = _read_requests(argv[1:])
  loaded = inference.load(FLAGS.checkpoint, task="question_answering")
  cut = []
  results = answer(loaded, questions, contexts, top_k=FLAGS.top_k, batch_size=FLAGS.batch_size,
                   truncated=cut)
  for result in results:
    print(json.dumps(result, ensure_ascii=False))
  inference.print_cut_note(cut, len(questions), loaded.task.max_query_length,
                           [f"question {i + 1}" for i in range(len(questions))], "questions")


if __name__ == "__main__":
  define_flags()
  errors.run_cli(main)
