"""Classify lines of text with a fine-tuned classifier.

  echo "a gorgeous, witty film" | python -m bert_jax.predict --checkpoint workdirs/rt_minilm
  python -m bert_jax.predict --checkpoint workdirs/rt_minilm --input reviews.txt
Prints one line per input: label, probability, text (tab-separated). Inputs are batched in a
few static lengths (`inference.LENGTH_BUCKETS`), so short lines are not padded to 512.
"""

from __future__ import annotations

import sys

from absl import app, flags

from bert_jax import errors, inference

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("checkpoint", None, "A fine-tuned bert_jax workdir (or a transformers "
                      "BertForSequenceClassification directory).")
  flags.DEFINE_string("input", None, "A text file, one example per line (default: stdin).")
  flags.DEFINE_integer("batch_size", 32, "Lines per forward pass.")


def predict(loaded: inference.Loaded, texts: list[str], batch_size: int = 32):
  """Returns (label ids [n], probabilities [n, num_labels])."""
  if not hasattr(loaded.task, "predict") or loaded.task_name != "classification":
    raise ValueError(f"this checkpoint is a {loaded.task_name or 'bare encoder'} model, not a "
                     "classifier; fine-tune one first (experiments/finetune_csv.py)")
  probs = loaded.task.predict(loaded.model(), loaded.params, loaded.tokenizer, texts,
                              max_length=loaded.max_seq_length, batch_size=batch_size)
  return probs.argmax(-1), probs


def main(argv):
  if len(argv) > 1 or not FLAGS.checkpoint:
    raise app.UsageError("usage: predict --checkpoint DIR [--input FILE] (lines on stdin)")
  stream = open(FLAGS.input, encoding="utf-8") if FLAGS.input else sys.stdin
  texts = [line.rstrip("\n") for line in stream if line.strip()]
  loaded = inference.load(FLAGS.checkpoint, task="classification")
  labels, probs = predict(loaded, texts, FLAGS.batch_size)
  names = loaded.label_names or [str(i) for i in range(probs.shape[-1])]
  for text, label, p in zip(texts, labels, probs):
    print(f"{names[label]}\t{p[label]:.4f}\t{text}")


if __name__ == "__main__":
  define_flags()
  errors.run_cli(main)
