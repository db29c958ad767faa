"""Export a bert_jax checkpoint as a transformers directory (config.json with the labels,
model.safetensors, vocab.txt) that transformers' `from_pretrained` and `pipeline(...)` load.

  python -m bert_jax.export --checkpoint workdirs/pretrain_tiny --out exported/tiny
The transformers class follows the checkpoint's task (BertForMaskedLM, BertForPreTraining,
BertForSequenceClassification, BertForTokenClassification, BertForQuestionAnswering).
"""

from __future__ import annotations

import os
import shutil

from absl import app, flags

from bert_jax import errors, hf, inference

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("checkpoint", None, "A bert_jax workdir.")
  flags.DEFINE_string("out", None, "Output directory (transformers format).")
  flags.DEFINE_bool("overwrite", False, "Write into a non-empty --out.")


def export(checkpoint: str, out: str, *, overwrite: bool = False) -> str:
  """Writes `out`; returns the transformers architecture name."""
  if os.path.isdir(out) and os.listdir(out):
    if os.path.samefile(out, checkpoint) or os.path.exists(os.path.join(out, "checkpoints")):
      raise ValueError(f"--out {out} is a bert_jax workdir; export into another directory")
    if not overwrite:
      raise ValueError(f"--out {out} is not empty; pass --overwrite to replace its files")
  loaded = inference.load(checkpoint)
  task = loaded.task
  hf.save_hf_checkpoint(out, loaded.config, task.export_params(loaded.params),
                        head=task.hf_head, label_names=loaded.label_names or None,
                        pooling=loaded.pooling)
  shutil.copyfile(loaded.vocab_file, os.path.join(out, "vocab.txt"))
  return hf.architecture(task.hf_head)


def main(argv):
  if len(argv) > 1 or not FLAGS.checkpoint or not FLAGS.out:
    raise app.UsageError("usage: export --checkpoint WORKDIR --out DIR [--overwrite]")
  architecture = export(FLAGS.checkpoint, FLAGS.out, overwrite=FLAGS.overwrite)
  print(f"wrote {FLAGS.out} ({architecture})")


if __name__ == "__main__":
  define_flags()
  errors.run_cli(main)
