"""Streamed, parallel, resumable preparation of a pretraining corpus (`local_text`).

Memory does not grow with the corpus: documents are read one at a time and grouped into
chunks (`base.chunks`: 2,048 documents or 32 M characters) per split; each chunk is
tokenized and packed (`base.pack_chunk`, NSP's random B sentences drawn from the same chunk)
by a pool of `num_workers` processes (0: one per core; 1: in this process, where
`tokenizers` still batches on every core), at most two chunks per worker in flight, and the
serialized examples go straight into array_record shards that close every `shard_examples`
examples (at a chunk boundary). What stays in memory for the whole run is one byte per
document (the held-out mask, `base.validation_mask`, which needs the document count: a
first, quiet counting pass gives it, and checks the corpus before anything is written).

Resumable: shards are written under `<data_dir>/.bert_jax_partial/<name>-<config>-<version>/`
with `manifest.json` (written atomically after every finished shard: the shards, the chunks
they cover and their counts, and a fingerprint of the corpus files and settings). A run that
was killed restarts after the last finished shard (reading the documents of finished chunks
without tokenizing them); a manifest with another fingerprint is discarded, with a warning.
Chunk contents and their random generators depend only on the corpus and the config, so a
resumed dataset holds the same records, in the same shards, as an uninterrupted one, for any
`num_workers`; and the same records as the TFDS `_generate_examples` path (which stores them
in key-hash order; here they are in corpus order per split, and the loader shuffles).
At the end the shards move into TFDS's layout and names, so `tfds.data_source` reads them.

Progress is logged every `PROGRESS_SECONDS` and per shard: documents, MB of text, MB/s, ETA.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable

import tensorflow_datasets as tfds

from bert_jax import fileio
from bert_jax.datasets import base
from bert_jax.errors import DataError

log = logging.getLogger("bert_jax.datasets")

FORMAT = 1  # bump when the manifest or the shard layout changes
SHARD_EXAMPLES = 100_000
PROGRESS_SECONDS = 10.0
MANIFEST = "manifest.json"


def work_dir(builder) -> str:
  """Where the shards of an unfinished preparation live (outside TFDS's own folders)."""
  tag = f"{builder.name}-{builder.builder_config.name}-{builder.version}"
  return os.path.join(os.fspath(builder.data_dir_root), ".bert_jax_partial", tag)


def fingerprint(builder, shard_examples: int) -> str:
  """What the shards depend on: config (its name holds the files' fingerprint), chunking."""
  cfg = builder.builder_config
  settings = [FORMAT, builder.name, str(builder.version), cfg.name, dataclasses.asdict(cfg),
              base.CHUNK_DOCUMENTS, base.CHUNK_CHARACTERS, shard_examples]
  return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()
                        ).hexdigest()[:16]


# --- workers ---------------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(cfg, features, rayon_threads: int = 0) -> None:
  if rayon_threads and "RAYON_NUM_THREADS" not in os.environ:
    os.environ["RAYON_NUM_THREADS"] = str(rayon_threads)  # before tokenizers starts its pool
  from bert_jax.tokenizer import Tokenizer
  _WORKER.update(cfg=cfg, features=features, tokenizer=Tokenizer(cfg.vocab_file))


def _pack(split: str, chunk_index: int, chunk: list[str]) -> tuple[list[bytes], dict]:
  """A chunk -> (its serialized examples, their counts); runs in a worker."""
  examples, stats = base.pack_chunk(_WORKER["cfg"], _WORKER["tokenizer"], split, chunk_index,
                                    chunk)
  serialize = _WORKER["features"].serialize_example
  return [serialize(e) for e in examples], stats


class _Done:
  def __init__(self, value):
    self.value = value

  def get(self):
    return self.value


class _Packer:
  """`submit(split, index, chunk)` -> a handle whose `get()` gives `_pack`'s result; a
  process pool when `workers > 1`, else this process."""

  def __init__(self, cfg, features, workers: int):
    self.workers = workers
    self.pool = None
    if workers > 1:
      threads = max(1, (os.cpu_count() or 1) // workers)
      self.pool = multiprocessing.get_context("spawn").Pool(
          workers, initializer=_init_worker, initargs=(cfg, features, threads))
    else:
      _init_worker(cfg, features)

  def submit(self, *args):
    return self.pool.apply_async(_pack, args) if self.pool else _Done(_pack(*args))

  def close(self):
    if self.pool:
      self.pool.terminate()
      self.pool.join()


# --- shards and the manifest -----------------------------------------------------------------


class _Shards:
  """The shards of every split, and the manifest that lists the finished ones."""

  def __init__(self, work: str, manifest: dict, shard_examples: int,
               on_shard: Callable[[dict], None] | None):
    self.work, self.manifest, self.shard_examples = work, manifest, shard_examples
    self.on_shard = on_shard
    self.open: dict[str, dict] = {}  # split -> {writer, path, examples, bytes, stats, chunks}

  def split(self, split: str) -> dict:
    return self.manifest["splits"].setdefault(split, {"chunks": 0, "shards": []})

  def add(self, split: str, chunk_index: int, records: list[bytes], stats: dict) -> bool:
    """Appends a chunk's records; True when that finished a shard."""
    from array_record.python import array_record_module
    shard = self.open.get(split)
    if shard is None:
      name = f"{split}-{len(self.split(split)['shards']):05d}.array_record"
      path = os.path.join(self.work, name)
      shard = self.open[split] = dict(
          name=name, writer=array_record_module.ArrayRecordWriter(path + ".tmp", "group_size:1"),
          examples=0, bytes=0, stats=dict.fromkeys(base.STAT_KEYS, 0))
    for record in records:
      shard["writer"].write(record)
    shard["examples"] += len(records)
    shard["bytes"] += sum(len(r) for r in records)
    for key in base.STAT_KEYS:
      shard["stats"][key] += stats[key]
    shard["chunks"] = chunk_index + 1
    if shard["examples"] < self.shard_examples:
      return False
    self.finish(split)
    return True

  def finish(self, split: str) -> None:
    """Closes the open shard of `split` and records it in the manifest (atomically)."""
    shard = self.open.pop(split, None)
    if shard is None:
      return
    shard["writer"].close()
    path = os.path.join(self.work, shard["name"])
    fileio.fsync_file(path + ".tmp")
    os.replace(path + ".tmp", path)
    entry = self.split(split)
    entry["chunks"] = shard["chunks"]
    entry["shards"].append({k: shard[k] for k in ("name", "examples", "bytes", "stats")})
    fileio.write_json_atomic(os.path.join(self.work, MANIFEST), self.manifest, indent=1)
    if self.on_shard:
      self.on_shard(self.manifest)

  def abandon(self) -> None:
    for shard in self.open.values():
      shard["writer"].close()
    self.open.clear()


def _load_manifest(work: str, expected: str) -> dict | None:
  """The manifest of an earlier run with the same fingerprint (else the folder is cleared)."""
  path = os.path.join(work, MANIFEST)
  manifest = fileio.read_json(path) if os.path.exists(path) else None
  if manifest is not None and manifest.get("fingerprint") != expected:
    log.warning("%s: an unfinished preparation with other inputs or settings (fingerprint %s, "
                "now %s); starting over", work, manifest.get("fingerprint"), expected)
    manifest = None
  listed = [] if manifest is None else [
      s["name"] for e in manifest["splits"].values() for s in e["shards"]]
  if any(not os.path.exists(os.path.join(work, name)) for name in listed):
    log.warning("%s: shards listed in %s are missing (a run stopped while installing them); "
                "starting over", work, MANIFEST)
    manifest = None
  if manifest is None and os.path.isdir(work):
    shutil.rmtree(work)
  if manifest is not None:  # a shard being written when the run stopped
    for name in os.listdir(work):
      if name != MANIFEST and name not in listed:
        os.remove(os.path.join(work, name))
  return manifest


# --- the pass over the corpus ----------------------------------------------------------------


class _Progress:
  """Logs documents, MB, MB/s and ETA every PROGRESS_SECONDS (and when told to)."""

  def __init__(self, name: str, documents: int, total_bytes: int):
    self.name, self.documents, self.total = name, documents, total_bytes
    self.start = self.base = None  # time and bytes of the first chunk this run packs
    self.last = 0.0

  def begin(self, position: int) -> None:
    if self.start is None:
      self.start, self.base = time.perf_counter(), position

  def report(self, documents: int, position: int, force: bool = False) -> None:
    now = time.perf_counter()
    if self.start is None or not (force or now - self.last >= PROGRESS_SECONDS):
      return
    self.last = now
    rate = (position - self.base) / max(now - self.start, 1e-9)
    eta = (self.total - position) / rate if rate > 0 else float("inf")
    log.info("%s: %s/%s documents, %.1f/%.1f MB, %.2f MB/s, ETA %s", self.name,
             f"{documents:,}", f"{self.documents:,}", position / 1e6, self.total / 1e6,
             rate / 1e6, "?" if eta == float("inf") else f"{eta / 60:.1f} min")


def _count(builder) -> tuple[int, int]:
  """(documents, UTF-8 bytes) of the corpus; DataError when it has no document."""
  documents = size = 0
  for document in builder._limited_documents(quiet=True):
    documents += 1
    size += len(document.encode("utf-8"))
  if documents == 0:
    raise DataError(builder._no_documents_message())
  return documents, size


def _stream(builder, manifest: dict, packer: _Packer, shards: _Shards,
            progress: _Progress) -> None:
  """Reads every document once and packs the chunks not yet in a finished shard."""
  keep = base.validation_mask(manifest["num_documents"], builder.builder_config.seed)
  done = {s: shards.split(s)["chunks"] for s in ("train", "validation")}
  pending = {s: ([], 0) for s in done}  # split -> (documents, characters) of its next chunk
  next_index = dict.fromkeys(done, 0)
  in_flight: collections.deque = collections.deque()
  position = documents = 0

  def drain(limit: int) -> None:
    while len(in_flight) > limit:
      split, index, handle, at, count = in_flight.popleft()
      records, stats = handle.get()
      progress.report(count, at, force=shards.add(split, index, records, stats))

  def emit(split: str) -> None:
    chunk, _ = pending[split]
    pending[split] = ([], 0)
    index = next_index[split]
    next_index[split] += 1
    if index < done[split]:
      return  # in a finished shard
    progress.begin(position)
    in_flight.append((split, index, packer.submit(split, index, chunk), position, documents))
    drain(2 * packer.workers)

  for i, document in enumerate(builder._limited_documents()):
    split = "validation" if keep[i] else "train"
    chunk, chars = pending[split]
    chunk.append(document)
    pending[split] = (chunk, chars + len(document))
    position += len(document.encode("utf-8"))
    documents += 1
    if len(chunk) >= base.CHUNK_DOCUMENTS or chars + len(document) >= base.CHUNK_CHARACTERS:
      emit(split)
  for split in pending:
    if pending[split][0]:
      emit(split)
  drain(0)
  for split in list(shards.open):
    shards.finish(split)
  progress.report(documents, position, force=True)


def prepare(builder, out_dir: str, *, num_workers: int = 0,
            shard_examples: int = SHARD_EXAMPLES,
            on_shard: Callable[[dict], None] | None = None) -> list[tfds.core.SplitInfo]:
  """Prepares `builder`'s corpus into TFDS array_record shards in `out_dir` (see the module
  docstring), sets the per-split and read counts in `builder.info.metadata`, and returns
  the SplitInfos. `on_shard(manifest)` runs after every finished shard (a test hook)."""
  work = work_dir(builder)
  expected = fingerprint(builder, shard_examples)
  manifest = _load_manifest(work, expected)
  if manifest is None:
    num_documents, size = _count(builder)
    manifest = {"fingerprint": expected, "num_documents": num_documents, "bytes": size,
                "splits": {}}
    fileio.write_json_atomic(os.path.join(work, MANIFEST), manifest, indent=1)
  else:
    log.info("%s: resuming after %s finished shards", work,
             sum(len(e["shards"]) for e in manifest["splits"].values()))
  workers = num_workers or os.cpu_count() or 1
  if manifest["num_documents"] <= base.CHUNK_DOCUMENTS:
    workers = 1  # one chunk per split: a pool would only add its start-up
  shards = _Shards(work, manifest, shard_examples, on_shard)
  packer = _Packer(builder.builder_config, builder.info.features, workers)
  try:
    _stream(builder, manifest, packer, shards,
            _Progress(builder.name, manifest["num_documents"], manifest["bytes"]))
  finally:
    packer.close()
    shards.abandon()
  infos = _install(builder, manifest, work, out_dir)
  shutil.rmtree(work)
  try:
    os.rmdir(os.path.dirname(work))  # .bert_jax_partial, when no other preparation is in it
  except OSError:
    pass
  return infos


def _install(builder, manifest: dict, work: str, out_dir: str) -> list[tfds.core.SplitInfo]:
  """Moves the finished shards into `out_dir` under TFDS's names; the SplitInfos and metadata."""
  from tensorflow_datasets.core import naming
  infos = []
  for split, entry in manifest["splits"].items():
    template = naming.ShardedFileTemplate(
        split=split, dataset_name=builder.name, data_dir=out_dir,
        filetype_suffix=builder.info.file_format.file_suffix)
    shards = entry["shards"]
    for shard, path in zip(shards, template.sharded_filepaths(len(shards))):
      os.replace(os.path.join(work, shard["name"]), os.fspath(path))
    stats = {k: sum(s["stats"][k] for s in shards) for k in base.STAT_KEYS}
    builder.info.metadata[split] = stats
    log.info("%s/%s %s: %s", builder.name, builder.builder_config.name, split, stats)
    infos.append(tfds.core.SplitInfo(
        name=split, shard_lengths=[s["examples"] for s in shards],
        num_bytes=sum(s["bytes"] for s in shards), filename_template=template))
  builder.info.metadata["read"] = builder._read_stats()
  fileio.fsync_dir(os.fspath(out_dir))
  return infos
