"""Classify lines of text with a fine-tuned classifier.

  echo "a gorgeous, witty film" | python -m bert_jax.predict --checkpoint workdirs/rt_minilm
  python -m bert_jax.predict --checkpoint workdirs/rt_minilm --input reviews.txt
Prints one line per input, tab-separated: label, probability, text (a regression model: its
score, text; a multi-label one: the labels over 0.5 joined by "|" or "-" for none, their
probabilities joined by "|", text). A text longer than
`ECHO_CHARS` characters is shown by its first ones and "..."). Inputs are batched in a few
static lengths (`inference.LENGTH_BUCKETS`), so short lines are not padded to 512; a line longer
than the checkpoint's max_seq_length pieces is cut to it and counted in a `warning:` line on
stderr. Blank lines are skipped; no text at all is `error: no input: ...` and exit code 1, as
in every prediction CLI.
"""

from __future__ import annotations

from absl import app, flags

from bert_jax import errors, inference
from bert_jax.errors import ConfigError

FLAGS = flags.FLAGS
ECHO_CHARS = 200  # characters of each input printed back
REFUSAL = ", not a classifier; fine-tune one first (experiments/finetune_csv.py)"


def define_flags():
  flags.DEFINE_string("checkpoint", None, "A fine-tuned bert_jax workdir (or a transformers "
                      "BertForSequenceClassification directory).")
  flags.DEFINE_string("input", None, "A text file, one example per line (default: stdin).")
  flags.DEFINE_integer("batch_size", 32, "Lines per forward pass.")


def predict(loaded: inference.Loaded, texts: list[str], batch_size: int = 32, *,
            truncated: list[int] | None = None):
  """Returns (label ids [n], probabilities [n, num_labels]); regression (scores [n], scores
  [n, 1]); multi-label (bool [n, num_labels] predicted labels, sigmoid probabilities). The
  indices of texts cut to the checkpoint's max_seq_length are appended to `truncated`."""
  if not hasattr(loaded.task, "predict") or loaded.task_name != "classification":
    raise ConfigError(f"this checkpoint is a {loaded.task_name or 'bare encoder'} model"
                      f"{REFUSAL}")
  probs = loaded.task.predict(loaded.model(), loaded.params, loaded.tokenizer, texts,
                              max_length=loaded.max_seq_length, batch_size=batch_size,
                              truncated=truncated)
  problem_type = getattr(loaded.task, "problem_type", "single_label_classification")
  if problem_type == "regression":
    return probs[:, 0], probs
  if problem_type == "multi_label_classification":
    return probs > 0.5, probs
  return probs.argmax(-1), probs


def main(argv):
  if len(argv) > 1 or not FLAGS.checkpoint:
    raise app.UsageError("usage: predict --checkpoint DIR [--input FILE] (lines on stdin)")
  texts, line_numbers = inference.read_lines(FLAGS.input)
  loaded = inference.load(FLAGS.checkpoint, task="classification")
  cut = []
  results = inference.predict_examples(loaded, "classification", [{"text": t} for t in texts],
                                       refusal=REFUSAL, batch_size=FLAGS.batch_size,
                                       truncated=cut)
  for text, result in zip(texts, results):
    print(f"{line(result)}\t{text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + '...'}")
  inference.print_cut_note(cut, len(texts), loaded.max_seq_length - 2,  # [CLS], [SEP]
                           [f"line {n}" for n in line_numbers], "lines")


def line(result: dict) -> str:
  """A `predict_examples` result as the printed columns before the text (module docstring)."""
  if "score" in result:  # regression
    return f"{result['score']:.4f}"
  if "labels" in result:  # multi-label
    on, probs = result["labels"], result["probabilities"]
    return f"{'|'.join(on) or '-'}\t{'|'.join(f'{probs[n]:.4f}' for n in on) or '-'}"
  return f"{result['label']}\t{result['probability']:.4f}"


if __name__ == "__main__":
  define_flags()
  errors.run_cli(main)
