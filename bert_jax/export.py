"""Export a bert_jax checkpoint as a transformers directory (config.json, model.safetensors,
vocab.txt) that `BertForMaskedLM.from_pretrained` / `BertForSequenceClassification` load.

  python -m bert_jax.export --checkpoint workdirs/pretrain_tiny --out exported/tiny
"""

from __future__ import annotations

import os
import shutil

from absl import app, flags

from bert_jax import hf, inference

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("checkpoint", None, "A bert_jax workdir.")
  flags.DEFINE_string("out", None, "Output directory (transformers format).")


def export(checkpoint: str, out: str) -> str:
  loaded = inference.load(checkpoint)
  keys = set(loaded.params)
  head = ("pretraining" if {"mlm_head", "nsp_head"} <= keys else "mlm" if "mlm_head" in keys
          else "classification" if "classifier" in keys else None)
  params = loaded.params
  if head == "mlm":  # BertForMaskedLM has no pooler
    params = {**params, "bert": {k: v for k, v in params["bert"].items() if k != "pooler"}}
  if head is None:
    params = params["bert"]
  hf.save_hf_checkpoint(out, loaded.config, params, head=head)
  shutil.copyfile(loaded.vocab_file, os.path.join(out, "vocab.txt"))
  return head or "encoder"


def main(argv):
  if len(argv) > 1 or not FLAGS.checkpoint or not FLAGS.out:
    raise app.UsageError("usage: export --checkpoint WORKDIR --out DIR")
  head = export(FLAGS.checkpoint, FLAGS.out)
  print(f"wrote {FLAGS.out} ({head})")


if __name__ == "__main__":
  define_flags()
  app.run(main)
