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

Packed training batches (`data.packing`, `make_packed_iterator`) hold several short examples in
each row; which share a row is planned per epoch from the shuffled order (`row_packing`), so
their state is still one integer.

Finite runs (`num_epochs` set, e.g. evaluation) pad the last batch with rows whose
`example_mask` is 0 and every other field 0, and every process yields the same number of
batches, so each example is counted exactly once and multi-host evaluation stays in step.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

from bert_jax.errors import ConfigError


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
      raise ConfigError(
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
    raise ConfigError(f"{num_records} examples cannot fill one global batch of {global_batch}")
  indices = grain.MapDataset.range(num_records)
  if shuffle:
    indices = indices.shuffle(seed=seed % 2**32)
  if num_epochs is None:
    batches = indices.repeat(None).batch(global_batch, drop_remainder=True)
  else:
    if num_epochs < 1:
      raise ConfigError(f"num_epochs must be >= 1 or None, got {num_epochs}")
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
    raise ConfigError(f"global_batch_size {global_batch_size} must be a positive multiple of "
                      f"process_count {process_count}")
  return global_batch_size // process_count


def split_size(builder, split: str) -> int:
  """Examples in `split`, which may be a TFDS slice ("train[:90%]", "train[6718:]")."""
  try:
    return int(builder.info.splits[split].num_examples)
  except (KeyError, ValueError, AssertionError):
    raise ConfigError(f"{builder.name}: no split {split!r}; it has "
                      f"{sorted(builder.info.splits)} (or slices of them: 'train[:90%]')"
                      ) from None


def data_source(builder, split: str):
  split_size(builder, split)  # a clear error for an unknown split
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


def make_packed_iterator(lengths: np.ndarray, to_batch, *, row_length: int, max_per_row: int,
                         global_batch_size: int, seed: int, shuffle: bool,
                         num_epochs: int | None, fingerprint: dict, process_index: int = 0,
                         process_count: int = 1, num_threads: int = 2,
                         prefetch_batches: int = 4) -> DataIterator:
  """This process's batches of packed rows (`row_packing`): `global_batch_size` rows, each
  holding up to `max_per_row` examples of `lengths[i]` tokens.

  `to_batch([B, max_per_row] example indices, -1 = empty slot) -> dict of numpy arrays` builds
  one batch (tasks own it, usually through `row_packing.pack`). Which examples share a row is a
  function of (seed, epoch) only, so the state is still the next batch's index.
  """
  import grain

  from bert_jax.row_packing import PackedPlan
  batch_size = _check_batch_size(global_batch_size, process_count)
  if num_epochs is not None and num_epochs < 1:
    raise ConfigError(f"num_epochs must be >= 1 or None, got {num_epochs}")
  plan = PackedPlan(lengths, row_length=row_length, max_per_row=max_per_row,
                    rows_per_batch=global_batch_size, seed=seed, shuffle=shuffle,
                    num_epochs=num_epochs)
  batches = grain.MapDataset.range(len(plan) if num_epochs is not None else 2**62)
  start = process_index * batch_size
  slots = batches.map(lambda k: plan.batch(int(k))[start:start + batch_size])
  fingerprint = {**fingerprint, "batch_size": batch_size, "seed": seed, "shuffle": shuffle,
                 "num_epochs": num_epochs, "process": [process_index, process_count],
                 "packing": {"row_length": row_length, "max_per_row": max_per_row}}
  iterator = DataIterator(slots.map(to_batch), batch_size=batch_size,
                          endless=num_epochs is None, fingerprint=fingerprint,
                          num_threads=num_threads, prefetch_batches=prefetch_batches)
  iterator.plan = plan
  return iterator


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
  source = ArraySource(features)
  fingerprint = {"dataset": dataset, "split": split, "num_records": len(source),
                 "content": _content_hash(features)}
  return make_iterator(source, functools.partial(stack_rows, source),
                       global_batch_size=global_batch_size, seed=seed, shuffle=shuffle,
                       num_epochs=num_epochs, fingerprint=fingerprint,
                       process_index=process_index, process_count=process_count)


def packed_array_iterator(features: dict[str, np.ndarray], *, token_keys: Sequence[str],
                          example_keys: Sequence[str] = (), offset_keys: Sequence[str] = (),
                          max_per_row: int, dataset: str, split: str, global_batch_size: int,
                          seed: int, shuffle: bool, num_epochs: int | None,
                          process_index: int = 0, process_count: int = 1) -> DataIterator:
  """`array_iterator` with several examples packed in each row (`row_packing.pack`): the
  features' rows are right-padded examples ([N, S] token keys, `attention_mask` marks the
  real tokens); rows of the packed batches have the same length S."""
  import functools
  lengths = features["attention_mask"].sum(axis=1)
  row_length = features["attention_mask"].shape[1]
  fingerprint = {"dataset": dataset, "split": split, "num_records": len(lengths),
                 "content": _content_hash(features)}
  to_batch = functools.partial(_pack_rows, features, lengths, row_length, tuple(token_keys),
                               tuple(example_keys), tuple(offset_keys))
  return make_packed_iterator(
      lengths, to_batch, row_length=row_length, max_per_row=max_per_row,
      global_batch_size=global_batch_size, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
      fingerprint=fingerprint, process_index=process_index, process_count=process_count)


def _pack_rows(features, lengths, row_length, token_keys, example_keys, offset_keys,
               slots: np.ndarray) -> dict[str, np.ndarray]:
  from bert_jax.row_packing import pack
  used = np.unique(slots[slots >= 0])  # sorted: slot -> position in `examples` by search
  examples = []
  for i in used:
    example = {k: features[k][i, :lengths[i]] for k in token_keys}
    example.update({k: features[k][i] for k in (*example_keys, *offset_keys)})
    examples.append(example)
  local = np.where(slots >= 0, np.searchsorted(used, slots), -1)
  specs = {k: (features[k].shape[1:], features[k].dtype) for k in example_keys}
  return pack(examples, local, row_length=row_length, token_keys=token_keys,
              example_keys=example_keys, offset_keys=offset_keys, example_specs=specs)


def _content_hash(features: dict[str, np.ndarray]) -> str:
  import hashlib
  digest = hashlib.sha256()
  for k in sorted(features):
    digest.update(k.encode())
    digest.update(np.ascontiguousarray(features[k]).tobytes())
  return digest.hexdigest()[:16]


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


def builder_info(builder, name: str, slices: Sequence[str] = ()) -> dict:
  """What every prepared TFDS dataset tells: name, data_dir, examples per split (and per
  slice of `slices`, e.g. a validation slice "train[90%:]"), metadata."""
  config = getattr(builder, "builder_config", None)
  counts = {s: int(v.num_examples) for s, v in builder.info.splits.items()}
  counts.update({s: split_size(builder, s) for s in slices if s and s not in counts})
  return {
      "name": name,
      "config_name": config.name if config else "",
      "data_dir": str(builder.data_dir),
      "split_sizes": counts,
      "metadata": json.loads(json.dumps(dict(builder.info.metadata or {}))),
  }
