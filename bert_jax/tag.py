"""Tag entities in text lines with a fine-tuned token classifier (NER).

  echo "EU rejects German call to boycott British lamb." | \
      python -m bert_jax.tag --checkpoint workdirs/ner
  python -m bert_jax.tag --checkpoint workdirs/ner "Peter Blackburn visited Brussels."
Prints one JSON object per input line: {"text", "entities": [{"type", "text", "start", "end",
"score"}]}, character offsets into the line (end exclusive), score the mean probability of the
entity's words. Long lines are split into windows, never cut. Blank stdin lines are skipped; no
text at all is `error: no input: ...` and exit code 1, as in every prediction CLI.
"""

from __future__ import annotations

import json

from absl import app, flags

from bert_jax import errors, inference

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("checkpoint", None, "A bert_jax token-classification workdir (or a "
                      "transformers BertForTokenClassification directory).")
  flags.DEFINE_integer("batch_size", 32, "Windows per forward pass.")


REFUSAL = ", not a token classifier; fine-tune one (experiments/ner_conll2003.py)"


def tag(loaded: inference.Loaded, texts: list[str], batch_size: int = 32) -> list[list[dict]]:
  """Per text, its entities (see the module docstring)."""
  results = inference.predict_examples(loaded, "token_classification",
                                       [{"text": t} for t in texts], refusal=REFUSAL,
                                       batch_size=batch_size)
  return [r["entities"] for r in results]


def main(argv):
  if not FLAGS.checkpoint:
    raise app.UsageError('usage: tag --checkpoint DIR ["text" ...] (or lines on stdin)')
  texts = argv[1:] or inference.read_lines(None)[0]
  loaded = inference.load(FLAGS.checkpoint, task="token_classification")
  for result in inference.predict_examples(loaded, "token_classification",
                                           [{"text": t} for t in texts], refusal=REFUSAL,
                                           batch_size=FLAGS.batch_size):
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
  define_flags()
  errors.run_cli(main)
