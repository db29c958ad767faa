"""Top-k fillers for [MASK] tokens with a pretrained MLM.

  python -m bert_jax.fill_mask --checkpoint workdirs/pretrain_tiny \
      "I love [MASK] language processing."
  echo "Paris is the [MASK] of France." | python -m bert_jax.fill_mask --checkpoint DIR
Texts are the arguments, else the non-blank lines of stdin; no text at all is
`error: no input: ...` and exit code 1, as in every prediction CLI. The pretraining task's
`predict_examples` does the work: texts in length buckets through one jitted function that
runs the MLM head at the [MASK] positions only.
"""

from __future__ import annotations

from absl import app, flags

from bert_jax import errors, inference

FLAGS = flags.FLAGS
REFUSAL = "; fill-mask needs a pretraining checkpoint or a transformers BertForMaskedLM"


def define_flags():
  flags.DEFINE_string("checkpoint", None, "A bert_jax workdir or a transformers BERT directory.")
  flags.DEFINE_integer("top_k", 5, "Fillers to print per [MASK].")
  flags.DEFINE_integer("batch_size", 32, "Texts per forward pass.")


def fill_mask(loaded: inference.Loaded, texts: list[str], top_k: int = 5, *,
              batch_size: int = 32) -> list[list[list[tuple[str, float]]]]:
  """Returns, per text, per [MASK], a list of (token, probability), best first: the task's
  `predict_examples` (jitted, MLM logits at the [MASK] positions only)."""
  results = inference.predict_examples(loaded, "pretraining", [{"text": t} for t in texts],
                                       refusal=REFUSAL, batch_size=batch_size, top_k=top_k)
  return [[[(f["token"], f["probability"]) for f in fillers] for fillers in r["masks"]]
          for r in results]


def main(argv):
  if not FLAGS.checkpoint:
    raise app.UsageError('usage: fill_mask --checkpoint DIR "text with [MASK]" ... '
                         "(or lines on stdin)")
  texts = argv[1:] or inference.read_lines(None)[0]
  loaded = inference.load(FLAGS.checkpoint, task="pretraining")
  results = inference.predict_examples(loaded, "pretraining", [{"text": t} for t in texts],
                                       refusal=REFUSAL, batch_size=FLAGS.batch_size,
                                       top_k=FLAGS.top_k)
  for result in results:
    print(result["text"])
    for i, fillers in enumerate(result["masks"]):
      print(f"  [MASK] #{i + 1}: " + ", ".join(f"{f['token']} ({f['probability']:.3f})"
                                              for f in fillers))


if __name__ == "__main__":
  define_flags()
  errors.run_cli(main)
