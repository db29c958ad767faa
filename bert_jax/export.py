"""Export a bert_jax checkpoint as a transformers directory (config.json with the labels,
model.safetensors, and the tokenizer files of transformers' own BERT directories: vocab.txt,
tokenizer.json, tokenizer_config.json, special_tokens_map.json) that transformers'
`from_pretrained`, `AutoTokenizer` and `pipeline(...)` load.

  python -m bert_jax.export --checkpoint workdirs/pretrain_tiny --out exported/tiny
The transformers class follows the checkpoint's task (BertForMaskedLM, BertForPreTraining,
BertForSequenceClassification, BertForTokenClassification, BertForQuestionAnswering). The
tokenizer's model_max_length is the model's max_position_embeddings, so `truncation=True`
cuts long inputs to what the model reads. A QA export records its windows
(`bert_jax_max_seq_length`, `bert_jax_doc_stride`, `bert_jax_max_query_length`, ...) in
config.json, which `bert_jax.answer` reads back.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from bert_jax import errors, hf, inference
from bert_jax.errors import ConfigError
from bert_jax.tokenizer import CLS, MASK, PAD, SEP, UNK

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("checkpoint", None, "A bert_jax workdir.")
  flags.DEFINE_string("out", None, "Output directory (transformers format).")
  flags.DEFINE_bool("overwrite", False, "Write into a non-empty --out.")


def export(checkpoint: str, out: str, *, overwrite: bool = False) -> str:
  """Writes `out`; returns the transformers architecture name."""
  if os.path.isdir(out) and os.listdir(out):
    if os.path.samefile(out, checkpoint) or os.path.exists(os.path.join(out, "checkpoints")):
      raise ConfigError(f"--out {out} is a bert_jax workdir; export into another directory")
    if not overwrite:
      raise ConfigError(f"--out {out} is not empty; pass --overwrite to replace its files")
  loaded = inference.load(checkpoint)
  task = loaded.task
  settings = None
  if hasattr(task, "export_settings"):  # e.g. a QA model's windows
    settings = task.export_settings(loaded.max_seq_length)
  hf.save_hf_checkpoint(out, loaded.config, task.export_params(loaded.params),
                        head=task.hf_head, label_names=loaded.label_names or None,
                        pooling=loaded.pooling, settings=settings,
                        problem_type=getattr(task, "problem_type", None),
                        extra_files=tokenizer_files(loaded.tokenizer,
                                                    loaded.config.max_position_embeddings))
  return hf.architecture(task.hf_head)


def tokenizer_files(tokenizer, model_max_length: int) -> dict[str, bytes | str]:
  """{file name: content} of the tokenizer files transformers' BERT directories carry, for
  our `Tokenizer`: vocab.txt, tokenizer.json (its `tokenizers` backend),
  tokenizer_config.json and special_tokens_map.json."""
  special = {"cls_token": CLS, "mask_token": MASK, "pad_token": PAD, "sep_token": SEP,
             "unk_token": UNK}
  config = {"tokenizer_class": "BertTokenizer", "do_lower_case": tokenizer.lowercase,
            "strip_accents": None, "tokenize_chinese_chars": True, "do_basic_tokenize": True,
            "never_split": None, "model_max_length": int(model_max_length),
            "clean_up_tokenization_spaces": True, **special}
  with open(tokenizer.vocab_file, "rb") as f:
    vocab = f.read()

  def dumps(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

  return {"vocab.txt": vocab, "tokenizer.json": tokenizer.to_json(),
          "tokenizer_config.json": dumps(config), "special_tokens_map.json": dumps(special)}


def main(argv):
  if len(argv) > 1 or not FLAGS.checkpoint or not FLAGS.out:
    raise app.UsageError("usage: export --checkpoint WORKDIR --out DIR [--overwrite]")
  architecture = export(FLAGS.checkpoint, FLAGS.out, overwrite=FLAGS.overwrite)
  print(f"wrote {FLAGS.out} ({architecture})")


if __name__ == "__main__":
  define_flags()
  errors.run_cli(main)
