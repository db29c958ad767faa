"""Loader throughput: tokens per second the pretraining input pipeline hands to the host.

    .venv/bin/python benchmarks/loader_throughput.py [--data_dir DIR] [--batch_size 32]
        [--max_seq_length 128] [--no-nsp] [--seconds 20] [--step-tokens-per-sec 20000]

Prepares `movie_reviews_text` on first use (timed; cached afterwards), then pulls shuffled
training batches in one process for `--seconds` and reports tokens/s two ways: every
position of the [B, S] batch (what the step consumes) and the non-padding ones. The
requirement is at least 10x what the training step consumes; the tiny CPU step consumes
roughly 10-20k tokens/s here, so the default `--step-tokens-per-sec` is the upper end,
20,000 (pass the figure your step actually logs).
"""

from __future__ import annotations

import argparse
import time
import types

from bert_jax.tasks import pretraining


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--max_seq_length", type=int, default=128)
  parser.add_argument("--nsp", action=argparse.BooleanOptionalAction, default=True)
  parser.add_argument("--max_documents", type=int, default=0, help="0 = all 25,000 reviews")
  parser.add_argument("--seconds", type=float, default=20.0)
  parser.add_argument("--step-tokens-per-sec", dest="step_tps", type=float, default=20_000.0,
                      help="tokens/s the training step consumes (tiny CPU step: 10-20k)")
  args = parser.parse_args(argv)

  data = types.SimpleNamespace(name="movie_reviews_text", vocab_file="", nsp=args.nsp,
                               max_seq_length=args.max_seq_length, short_seq_prob=0.1,
                               max_documents=args.max_documents)
  start = time.perf_counter()
  info = pretraining.data_info(data, args.data_dir)
  prepare_s = time.perf_counter() - start
  meta = info["metadata"]
  documents = sum(meta[s]["documents"] for s in info["split_sizes"])
  tokens = sum(meta[s]["tokens"] for s in info["split_sizes"])
  print(f"corpus: {documents:,} documents, {tokens:,} wordpiece tokens; examples "
        f"{info['split_sizes']} ({info['config_name']}); prepare/open took {prepare_s:.1f}s")

  iterator = pretraining.make_iterator(
      data, split="train", global_batch_size=args.batch_size, seed=0, shuffle=True,
      num_epochs=None, data_dir=args.data_dir)
  for _ in range(5):  # warm up threads and page cache
    next(iterator)
  batches = positions = real_tokens = 0
  start = time.perf_counter()
  while (elapsed := time.perf_counter() - start) < args.seconds:
    batch = next(iterator)
    batches += 1
    positions += batch["input_ids"].size
    real_tokens += int(batch["attention_mask"].sum())
  tps, real_tps = positions / elapsed, real_tokens / elapsed
  ratio = tps / args.step_tps
  print(f"loader: {batches} batches of [{args.batch_size}, {args.max_seq_length}] in "
        f"{elapsed:.1f}s = {batches / elapsed:,.0f} batches/s")
  print(f"loader: {tps:,.0f} tokens/s delivered ({real_tps:,.0f} non-padding tokens/s)")
  print(f"assumed training step consumption: {args.step_tps:,.0f} tokens/s "
        f"(--step-tokens-per-sec) -> loader/step = {ratio:.1f}x "
        f"({'meets' if ratio >= 10 else 'FAILS'} the 10x requirement)")
  return {"tokens_per_sec": tps, "real_tokens_per_sec": real_tps, "ratio": ratio,
          "documents": documents, "tokens": tokens, "prepare_s": prepare_s}


if __name__ == "__main__":
  main()
