"""Top-k fillers for [MASK] tokens with a pretrained MLM.

  python -m bert_jax.fill_mask --checkpoint workdirs/pretrain_tiny \
      "I love [MASK] language processing."
  echo "Paris is the [MASK] of France." | python -m bert_jax.fill_mask --checkpoint DIR
Texts are the arguments, else the non-blank lines of stdin; no text at all is
`error: no input: ...` and exit code 1, as in every prediction CLI.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from bert_jax import errors, inference
from bert_jax.errors import ConfigError, DataError

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("checkpoint", None, "A bert_jax workdir or a transformers BERT directory.")
  flags.DEFINE_integer("top_k", 5, "Fillers to print per [MASK].")


def fill_mask(loaded: inference.Loaded, texts: list[str], top_k: int = 5):
  """Returns, per text, per [MASK], a list of (token, probability), best first."""
  from bert_jax.model import BertForMaskedLM
  if loaded.task_name != "pretraining":
    raise ConfigError(f"this checkpoint is a {loaded.task_name or 'bare encoder'} model; "
                      "fill-mask needs a pretraining checkpoint or a transformers BertForMaskedLM")
  tok = loaded.tokenizer
  window = min(loaded.max_seq_length, loaded.config.max_position_embeddings)
  for text, pieces in zip(texts, tok.tokenize_to_ids(texts)):
    masks = np.flatnonzero(pieces == tok.mask_id)
    if masks.size == 0:
      raise DataError(f"no [MASK] token in {text[:80]!r}")
    if len(pieces) + 2 > window:  # [CLS] ... [SEP] keeps window - 2 pieces
      if masks[-1] >= window - 2:
        raise DataError(f"a [MASK] is word piece {masks[-1] + 1} of {len(pieces)}, beyond the "
                        f"model's window of {window - 2} pieces; shorten the text")
      logging.warning("input of %d word pieces truncated to the model's window of %d: %r",
                      len(pieces), window - 2, text[:60])
  enc = tok.encode_batch(texts, max_length=window)
  ids = np.asarray(enc["input_ids"])
  # The MLM part of the tree (a BertForPreTraining checkpoint also has an NSP head).
  params = {"bert": loaded.params["bert"], "mlm_head": loaded.params["mlm_head"]}
  logits = BertForMaskedLM(loaded.config).apply({"params": params}, jnp.asarray(ids),
                       jnp.asarray(enc["attention_mask"]), jnp.asarray(enc["token_type_ids"]))
  probs = np.asarray(jax.nn.softmax(logits.astype(jnp.float32), axis=-1))
  results = []
  for row, text in enumerate(texts):
    positions = np.flatnonzero(ids[row] == tok.mask_id)
    per_mask = []
    for pos in positions:
      best = np.argsort(-probs[row, pos])[:top_k]
      per_mask.append([(t, float(probs[row, pos, i]))
                       for t, i in zip(tok.convert_ids_to_tokens(best.tolist()), best)])
    results.append(per_mask)
  return results


def main(argv):
  if not FLAGS.checkpoint:
    raise app.UsageError('usage: fill_mask --checkpoint DIR "text with [MASK]" ... '
                         "(or lines on stdin)")
  texts = argv[1:] or inference.read_lines(None)[0]
  loaded = inference.load(FLAGS.checkpoint, task="pretraining")
  for text, masks in zip(texts, fill_mask(loaded, texts, FLAGS.top_k)):
    print(text)
    for i, fillers in enumerate(masks):
      print(f"  [MASK] #{i + 1}: " + ", ".join(f"{t} ({p:.3f})" for t, p in fillers))


if __name__ == "__main__":
  define_flags()
  errors.run_cli(main)
