"""Prepares a `local_text` pretraining corpus from the shell (streamed, parallel, resumable).

    python -m bert_jax.corpus --text_files 'corpus/**/*.txt' [--data_dir DIR]
        [--vocab_file vocab.txt] [--max_seq_length 128] [--nsp | --no-nsp]
        [--short_seq_prob 0.1] [--max_documents 0] [--num_workers 0]

The same preparation `--config.data.name=local_text --config.data.text_files=...` runs on
first use (`datasets/stream_prepare.py`): training with the same data settings then reuses
it. Memory does not grow with the corpus, `--num_workers` processes (0: one per core)
tokenize and pack, progress (documents, MB, MB/s, ETA) goes to the log, and a killed run
picks up after its last finished shard when started again with the same arguments.
"""

from __future__ import annotations

import argparse
import logging
import types

from bert_jax import errors


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--text_files", required=True, help="glob/folder of .txt/.txt.gz/.jsonl")
  parser.add_argument("--data_dir", default=None, help="default: $BERT_JAX_DATA_DIR or "
                      "~/tensorflow_datasets")
  parser.add_argument("--vocab_file", default="", help="default: bert-base-uncased's")
  parser.add_argument("--max_seq_length", type=int, default=128)
  parser.add_argument("--nsp", action=argparse.BooleanOptionalAction, default=False,
                      help="BERT NSP pairs (default: RoBERTa full-sentence rows, as "
                      "experiments/base.py)")
  parser.add_argument("--short_seq_prob", type=float, default=0.1)
  parser.add_argument("--max_documents", type=int, default=0, help="0 = all")
  parser.add_argument("--num_workers", type=int, default=0, help="0 = one per core")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  from bert_jax.tasks import pretraining
  data = types.SimpleNamespace(name="local_text", **{k: v for k, v in vars(args).items()
                                                     if k != "data_dir"})
  try:
    info = pretraining.data_info(data, args.data_dir)
  except Exception as e:  # a user's mistake is one line; anything else keeps its traceback
    if not errors.is_user_error(e):
      raise
    errors.exit_with(e)
  print(f"prepared {info['data_dir']}: examples {info['split_sizes']}")
  return info


if __name__ == "__main__":
  main()
