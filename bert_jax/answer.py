"""Answer questions about a text with a fine-tuned extractive QA model.

  python -m bert_jax.answer --checkpoint workdirs/qa --context article.txt "Who won in 1996?"
  python -m bert_jax.answer --checkpoint workdirs/qa --context "The Rhine flows ..." "Where ...?"
  echo '{"question": "...", "context": "..."}' | python -m bert_jax.answer --checkpoint W
Prints one JSON object per question: the answer text, its character span in the context
(end exclusive), its score (start + end logit) and the top-k alternatives.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

from bert_jax import errors, inference

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("checkpoint", None, "A bert_jax question-answering workdir (or a "
                      "transformers BertForQuestionAnswering directory).")
  flags.DEFINE_string("context", None, "The context: a file path or the text itself (without "
                      "it, JSON Lines {\"question\", \"context\"} are read from stdin).")
  flags.DEFINE_integer("top_k", 5, "Alternatives to print per question.")
  flags.DEFINE_integer("batch_size", 32, "Windows per forward pass.")


def answer(loaded: inference.Loaded, questions: list[str], contexts: list[str], *,
           top_k: int = 5, batch_size: int = 32) -> list[dict]:
  """Per question {question, answer, start, end, score, alternatives}."""
  if loaded.task_name != "question_answering":
    raise ValueError(f"this checkpoint is a {loaded.task_name or 'bare encoder'} model, not "
                     "an extractive QA model; fine-tune one (experiments/qa_squad.py)")
  return loaded.task.answer(loaded.model(), loaded.params, loaded.tokenizer,
                            questions, contexts, max_length=loaded.max_seq_length,
                            batch_size=batch_size, top_k=top_k)


def _read_requests(argv: list[str]) -> tuple[list[str], list[str]]:
  if FLAGS.context is not None:
    context = FLAGS.context
    if os.path.isfile(context):
      with open(context, encoding="utf-8") as f:
        context = f.read()
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
      raise ValueError(f"stdin:{n}: expected a JSON object with \"question\" and \"context\" "
                       f"({type(e).__name__}: {e})") from None
  return questions, contexts


def main(argv):
  if not FLAGS.checkpoint:
    raise app.UsageError('usage: answer --checkpoint DIR --context FILE_OR_TEXT "question?" '
                         "(or JSON Lines on stdin)")
  questions, contexts = _read_requests(argv[1:])
  loaded = inference.load(FLAGS.checkpoint, task="question_answering")
  for result in answer(loaded, questions, contexts, top_k=FLAGS.top_k,
                       batch_size=FLAGS.batch_size):
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
  define_flags()
  errors.run_cli(main)
