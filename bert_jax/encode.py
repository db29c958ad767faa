"""Sentence vectors: lines of text in, one vector per line out (.npy or JSON Lines).

  python -m bert_jax.encode --checkpoint workdirs/rt_minilm --pooling mean \
      --input sentences.txt --out vectors.npy
  echo "a gorgeous, witty film" | python -m bert_jax.encode --checkpoint DIR --out vectors.jsonl

--checkpoint is a bert_jax workdir of any task (its encoder is used, the head ignored) or a
transformers BERT directory (the encoder only). --pooling is one of `model.POOLINGS`:
cls_pooler (BERT's tanh dense over [CLS]; needs a pooling layer, which MLM-only, token
classification and QA models lack), cls (the raw [CLS] state), mean or max over the real
tokens; by default the checkpoint's own (a classifier's `pooling`, else cls_pooler). Blank lines
are skipped, as in `bert_jax.predict`, and no text at all is `error: no input: ...` and exit
code 1 (every prediction CLI); .npy holds float32 [n, hidden] in input order, .jsonl one
{"text", "vector"} object per line. Texts go through in a few static lengths
(`inference.batches`), so the model compiles once per length bucket; a text longer than
--max_length pieces is cut to it and counted in a `warning:` line on stderr.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from bert_jax import errors, inference
from bert_jax.model import POOLINGS, BertModel, pool

FLAGS = flags.FLAGS
FIELDS = ("input_ids", "attention_mask", "token_type_ids")


def define_flags():
  flags.DEFINE_string("checkpoint", None, "A bert_jax workdir or a transformers BERT directory.")
  flags.DEFINE_string("pooling", "", f"One of {', '.join(POOLINGS)} (default: the "
                      "checkpoint's own).")
  flags.DEFINE_string("input", None, "A text file, one text per line (default: stdin).")
  flags.DEFINE_string("out", None, "vectors.npy (float32 [n, hidden]) or vectors.jsonl.")
  flags.DEFINE_integer("max_length", 0, "Pieces per text, [CLS] and [SEP] included (default: "
                       "the checkpoint's max_seq_length).")
  flags.DEFINE_integer("batch_size", 32, "Texts per forward pass.")


def encoder(loaded: inference.Loaded) -> tuple[BertModel, dict]:
  """The encoder of a loaded checkpoint (any task) and its parameters; the pooling layer is
  there when the checkpoint has one."""
  params = loaded.params["bert"]
  return BertModel(loaded.config, add_pooling_layer="pooler" in params), params


def check_pooling(model: BertModel, pooling: str) -> None:
  """One-line errors for a pooling that is unknown or that this encoder cannot compute."""
  if pooling not in POOLINGS:
    raise errors.ConfigError(f"pooling={pooling!r} is not one of {', '.join(POOLINGS)}")
  if pooling == "cls_pooler" and not model.add_pooling_layer:
    raise errors.ConfigError("pooling='cls_pooler' needs a pooling layer, which this "
                             "checkpoint has none of (MLM-only, token classification and QA "
                             "models save none); use cls, mean or max")


def sentence_vectors(model: BertModel, params: dict, tokenizer, texts: Sequence[str],
                     poolings: Sequence[str], *, max_length: int = 128,
                     batch_size: int = 32, truncated: list[int] | None = None
                     ) -> dict[str, np.ndarray]:
  """{pooling: float32 [len(texts), hidden]} for each of `poolings`, from one forward pass per
  batch (length buckets and `truncated`: `inference.batches`)."""
  poolings = tuple(poolings)
  for how in poolings:
    check_pooling(model, how)

  @jax.jit
  def forward(p, b):
    out = model.apply({"params": p}, b["input_ids"], b["attention_mask"], b["token_type_ids"])
    # [batch, length, embed] -> [batch, embed] per pooling
    return {how: pool(out.last_hidden_state, b["attention_mask"], how,
                      out.pooler_output).astype(jnp.float32) for how in poolings}

  hidden = model.config.hidden_size
  vectors = {how: np.zeros((len(texts), hidden), np.float32) for how in poolings}
  for rows, enc in inference.batches(tokenizer, texts, max_length=max_length,
                                     batch_size=batch_size, truncated=truncated):
    pooled = forward(params, {k: jnp.asarray(enc[k]) for k in FIELDS})
    for how in poolings:
      vectors[how][rows] = np.asarray(pooled[how])[:len(rows)]
  return vectors


def encode(model: BertModel, params: dict, tokenizer, texts: Sequence[str],
           pooling: str = "cls_pooler", *, max_length: int = 128,
           batch_size: int = 32, truncated: list[int] | None = None) -> np.ndarray:
  """Texts -> float32 [len(texts), hidden] sentence vectors (`model.pool`'s `pooling`).

  `model` is a `BertModel` with `params` its tree (`encoder(inference.load(path))` gives both).
  """
  return sentence_vectors(model, params, tokenizer, texts, (pooling,), max_length=max_length,
                          batch_size=batch_size, truncated=truncated)[pooling]


def write_vectors(path: str, texts: Sequence[str], vectors: np.ndarray) -> None:
  """`.npy`: the float32 array; `.jsonl`: {"text", "vector"} per line (floats exact)."""
  if path.endswith(".npy"):
    np.save(path, vectors)
  elif path.endswith(".jsonl"):
    with open(path, "w", encoding="utf-8") as f:
      for text, v in zip(texts, vectors):
        f.write(json.dumps({"text": text, "vector": [float(x) for x in v]}) + "\n")
  else:
    raise errors.ConfigError(f"--out {path}: expected a .npy or .jsonl file name")


def main(argv):
  if len(argv) > 1 or not FLAGS.checkpoint or not FLAGS.out:
    raise app.UsageError("usage: encode --checkpoint DIR --out vectors.npy|vectors.jsonl "
                         "[--pooling mean] [--input FILE] (lines on stdin)")
  if not FLAGS.out.endswith((".npy", ".jsonl")):
    raise errors.ConfigError(f"--out {FLAGS.out}: expected a .npy or .jsonl file name")
  texts, line_numbers = inference.read_lines(FLAGS.input)
  loaded = inference.load(FLAGS.checkpoint)
  model, params = encoder(loaded)
  pooling = FLAGS.pooling or loaded.pooling
  check_pooling(model, pooling)
  max_length, cut = FLAGS.max_length or loaded.max_seq_length, []
  vectors = encode(model, params, loaded.tokenizer, texts, pooling, max_length=max_length,
                   batch_size=FLAGS.batch_size, truncated=cut)
  write_vectors(FLAGS.out, texts, vectors)
  print(f"wrote {FLAGS.out}: {vectors.shape[0]} vectors of {vectors.shape[1]} ({pooling})")
  inference.print_cut_note(cut, len(texts), max_length - 2,  # [CLS] and [SEP]
                           [f"line {n}" for n in line_numbers], "lines")


if __name__ == "__main__":
  define_flags()
  errors.run_cli(main)
