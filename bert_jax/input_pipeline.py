"""Grain loaders over the prepared datasets: fixed-size numpy batches for one process.

Each loader is a `grain.MapDataset` over *record indices*:

    range(n) -> shuffle(seed)                   # one global permutation per epoch
      -> repeat(num_epochs)                     # None: forever
      -> (+ padding indices -1)                 # finite runs: to a whole number of batches
      -> batch(global_batch_size)
      -> [process_index * B : (process_index + 1) * B]   # this process's rows of each batch
      -> map(read the records of a batch, pad to [B, S])

so the random order is a pure function of (seed, step) and the iterator state is one
integer, the next batch (grain's `{"next_index": k}`), which the checkpoint stores.
Records are read a batch at a time from a `tfds.data_source` (array_record; no TensorFlow)
or from features held in memory (`ArraySource`); how records become a batch is the task's
(`bert_jax/tasks/`), this module names no task. Batches are prefetched by a couple of threads
in this process; no worker processes.

Finite runs (`num_epochs` set, e.g. evaluation) pad the last batch with rows whose
`example_mask` is 0 and every other field 0, and every process yields the same number of
batches, so each example is counted exactly once and multi-host evaluation stays in step.
"""

from __future__ import annotations

import json
import math

import numpy as np


class DataIterator:
  """Python iterator over this process's batches, with a small resumable state."""

  def __init__(self, batches, *, batch_size: int, endless: bool, fingerprint: dict,
               num_threads: int, prefetch_batches: int):
    import grain
    self.batch_size = batch_size
    self.num_batches = None if endless else len(batches)
    self._fingerprint = json.dumps(fingerprint, sort_keys=True)
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_batches)
    self._iterator = iter(batches.to_iter_dataset(options))

  def __iter__(self) -> DataIterator:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._iterator)

  def get_state(self) -> dict:
    """JSON-serializable: {"grain": {"next_index": batches taken}, "fingerprint": ...}."""
    return {"grain": self._iterator.get_state(), "fingerprint": self._fingerprint}

  def set_state(self, state: dict) -> None:
    """Continues exactly where the iterator that produced `state` stood."""
    if state.get("fingerprint") != self._fingerprint:
      raise ValueError(
          "Iterator state was saved for a different input pipeline; resuming it here would "
          f"not reproduce the same batches.\n saved: {state.get('fingerprint')}\n "
          f"this:  {self._fingerprint}")
    self._iterator.set_state(state["grain"])


def _index_batches(num_records: int, *, batch_size: int, seed: int, shuffle: bool,
                   num_epochs: int | None, process_index: int, process_count: int):
  """grain.MapDataset of [batch_size] int record indices (-1 = padding row) for one process.

  The order is global: one permutation of all records, cut into global batches of
  batch_size * process_count rows, of which process p takes the p-th contiguous slice. So a
  run on 2 processes x 4 devices sees exactly the global batches of 1 process x 8 devices.
  """
  import grain
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  global_batch = batch_size * process_count
  if num_records < global_batch and num_epochs is None:
    raise ValueError(f"{num_records} examples cannot fill one global batch of {global_batch}")
  indices = grain.MapDataset.range(num_records)
  if shuffle:
    indices = indices.shuffle(seed=seed % 2**32)
  if num_epochs is None:
    batches = indices.repeat(None).batch(global_batch, drop_remainder=True)
  else:
    if num_epochs < 1:
      raise ValueError(f"num_epochs must be >= 1 or None, got {num_epochs}")
    indices = indices.repeat(num_epochs)
    rows = math.ceil(len(indices) / global_batch) * global_batch
    if rows > len(indices):  # pad the last global batch with -1 rows
      padding = grain.MapDataset.range(rows - len(indices)).map(lambda _: -1)
      indices = grain.MapDataset.concatenate([indices, padding])
    batches = indices.batch(global_batch)
  start = process_index * batch_size
  return batches.map(lambda rows: rows[start:start + batch_size])


def _check_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f"global_batch_size {global_batch_size} must be a positive multiple of "
                     f"process_count {process_count}")
  return global_batch_size // process_count


def data_source(builder, split: str):
  if split not in builder.info.splits:
    raise ValueError(f"{builder.name}: no split {split!r}; it has {sorted(builder.info.splits)}")
  return builder.as_data_source(split)


def text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def field(data_config, key: str, default):
  value = getattr(data_config, key, default)
  return default if value is None else value


def fingerprint(builder, split, **kwargs) -> dict:
  config = getattr(builder, "builder_config", None)
  return {"dataset": builder.name, "config": config.name if config else "", "split": split,
          "num_records": builder.info.splits[split].num_examples, **kwargs}


def make_iterator(source, to_batch, *, global_batch_size: int, seed: int, shuffle: bool,
                  num_epochs: int | None, fingerprint: dict, process_index: int = 0,
                  process_count: int = 1, num_threads: int = 2,
                  prefetch_batches: int = 4) -> DataIterator:
  """This process's batches of `source` (anything with `len` and `__getitems__`).

  `to_batch([B] record indices, -1 for padding rows) -> dict of numpy arrays [B, ...]` builds
  one batch (tasks own it); `fingerprint` names what the batches depend on, so a saved iterator
  state is never resumed on another pipeline.
  """
  batch_size = _check_batch_size(global_batch_size, process_count)
  indices = _index_batches(len(source), batch_size=batch_size, seed=seed, shuffle=shuffle,
                           num_epochs=num_epochs, process_index=process_index,
                           process_count=process_count)
  fingerprint = {**fingerprint, "batch_size": batch_size, "seed": seed, "shuffle": shuffle,
                 "num_epochs": num_epochs, "process": [process_index, process_count]}
  return DataIterator(indices.map(to_batch), batch_size=batch_size,
                      endless=num_epochs is None, fingerprint=fingerprint,
                      num_threads=num_threads, prefetch_batches=prefetch_batches)


class ArraySource:
  """Fixed-shape features held in memory ({key: [N, ...]}) as a record source."""

  def __init__(self, features: dict[str, np.ndarray]):
    sizes = {k: len(v) for k, v in features.items()}
    if len(set(sizes.values())) != 1:
      raise ValueError(f"features disagree on the number of rows: {sizes}")
    self.features = features
    self._n = next(iter(sizes.values()))

  def __len__(self) -> int:
    return self._n

  def __getitems__(self, indices):
    return [{k: v[i] for k, v in self.features.items()} for i in indices]


def array_iterator(features: dict[str, np.ndarray], *, dataset: str, split: str,
                   global_batch_size: int, seed: int, shuffle: bool, num_epochs: int | None,
                   process_index: int = 0, process_count: int = 1) -> DataIterator:
  """Batches of features held in memory ({key: [N, ...]}, e.g. NER or QA windows); the saved
  iterator state is tied to their content (a hash), so it never resumes on other features."""
  import functools
  import hashlib
  source = ArraySource(features)
  digest = hashlib.sha256()
  for k in sorted(features):
    digest.update(k.encode())
    digest.update(np.ascontiguousarray(features[k]).tobytes())
  fingerprint = {"dataset": dataset, "split": split, "num_records": len(source),
                 "content": digest.hexdigest()[:16]}
  return make_iterator(source, functools.partial(stack_rows, source),
                       global_batch_size=global_batch_size, seed=seed, shuffle=shuffle,
                       num_epochs=num_epochs, fingerprint=fingerprint,
                       process_index=process_index, process_count=process_count)


def stack_rows(source: ArraySource, indices: np.ndarray) -> dict[str, np.ndarray]:
  """[B] record indices (-1: padding row, all zeros) -> {key: [B, ...]} plus `example_mask`."""
  real = indices >= 0
  batch = {k: np.zeros((len(indices),) + v.shape[1:], v.dtype)
           for k, v in source.features.items()}
  rows = indices[real]
  for k, v in source.features.items():
    batch[k][real] = v[rows]
  batch["example_mask"] = real.astype(np.int32)  # [B]
  return batch


def builder_info(builder, name: str) -> dict:
  """What every prepared TFDS dataset tells: name, data_dir, examples per split, metadata."""
  config = getattr(builder, "builder_config", None)
  return {
      "name": name,
      "config_name": config.name if config else "",
      "data_dir": str(builder.data_dir),
      "num_examples": {s: int(v.num_examples) for s, v in builder.info.splits.items()},
      "metadata": json.loads(json.dumps(dict(builder.info.metadata or {}))),
  }
