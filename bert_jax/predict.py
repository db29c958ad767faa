"""Classify lines of text with a fine-tuned checkpoint.

  echo "a gorgeous, witty film" | python -m bert_jax.predict --checkpoint workdirs/rt_minilm
  python -m bert_jax.predict --checkpoint workdirs/rt_minilm --input reviews.txt
Prints one line per input: label, probability, text (tab-separated).
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from bert_jax import inference
from bert_jax.model import BertForSequenceClassification

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("checkpoint", None, "A fine-tuned bert_jax workdir.")
  flags.DEFINE_string("input", None, "A text file, one example per line (default: stdin).")
  flags.DEFINE_integer("batch_size", 64, "Lines per forward pass.")


def predict(loaded: inference.Loaded, texts: list[str], batch_size: int = 64):
  """Returns (label ids [n], probabilities [n, num_labels])."""
  from bert_jax.tokenizer import Tokenizer
  if "classifier" not in loaded.params:
    raise ValueError("this checkpoint has no classifier head; fine-tune it first "
                     "(experiments/finetune_csv.py)")
  num_labels = loaded.params["classifier"]["bias"].shape[0]
  model = BertForSequenceClassification(loaded.config, num_labels)
  tok = Tokenizer(loaded.vocab_file)
  apply = jax.jit(lambda p, i, m, t: jax.nn.softmax(model.apply({"params": p}, i, m, t), -1))
  probs = []
  for start in range(0, len(texts), batch_size):
    enc = tok.encode_batch(texts[start:start + batch_size], max_length=loaded.max_seq_length)
    probs.append(np.asarray(apply(loaded.params, *(jnp.asarray(enc[k]) for k in (
        "input_ids", "attention_mask", "token_type_ids")))))
  probs = np.concatenate(probs) if probs else np.zeros((0, num_labels))
  return probs.argmax(-1), probs


def main(argv):
  if len(argv) > 1 or not FLAGS.checkpoint:
    raise app.UsageError("usage: predict --checkpoint DIR [--input FILE] (lines on stdin)")
  stream = open(FLAGS.input, encoding="utf-8") if FLAGS.input else sys.stdin
  texts = [line.rstrip("\n") for line in stream if line.strip()]
  loaded = inference.load(FLAGS.checkpoint, head="classification")
  labels, probs = predict(loaded, texts, FLAGS.batch_size)
  names = loaded.label_names or [str(i) for i in range(probs.shape[-1])]
  for text, label, p in zip(texts, labels, probs):
    print(f"{names[label]}\t{p[label]:.4f}\t{text}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
