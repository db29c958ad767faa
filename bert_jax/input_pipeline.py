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
Records are read with `tfds.data_source` (array_record; no TensorFlow) a batch at a
time; pretraining records are already token ids, classification text is tokenized here
(with the fast tokenizer's `encode_batch`). Batches are prefetched by a couple of
threads in this process; no worker processes.

Finite runs (`num_epochs` set, e.g. evaluation) pad the last batch with rows whose
`example_mask` is 0 and every other field 0, and every process yields the same number of
batches, so each example is counted exactly once and multi-host evaluation stays in step.
"""

from __future__ import annotations

import json
import math

import numpy as np

from bert_jax.tokenizer import Tokenizer

PRETRAINING_FIELDS = ("input_ids", "attention_mask", "token_type_ids", "special_tokens_mask",
                      "word_starts")
CLASSIFICATION_FIELDS = ("input_ids", "attention_mask", "token_type_ids")


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


def _data_source(builder, split: str):
  if split not in builder.info.splits:
    raise ValueError(f"{builder.name}: no split {split!r}; it has {sorted(builder.info.splits)}")
  return builder.as_data_source(split)


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class _PretrainingBatch:
  """[B] record indices -> the pretraining batch (records hold packed token ids)."""

  def __init__(self, source, tokenizer: Tokenizer, max_seq_length: int, nsp: bool):
    self.source, self.tokenizer = source, tokenizer
    self.max_seq_length, self.nsp = max_seq_length, nsp

  def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    real = indices >= 0
    records = self.source.__getitems__([int(i) for i in indices[real]])
    shape = (len(indices), self.max_seq_length)
    input_ids = np.zeros(shape, np.int32)
    input_ids[real] = self.tokenizer.pad_id
    token_type_ids = np.zeros(shape, np.int32)
    attention_mask = np.zeros(shape, np.int32)
    next_sentence_label = np.zeros(len(indices), np.int32)
    for row, record in zip(np.flatnonzero(real), records):
      length = len(record["input_ids"])
      input_ids[row, :length] = record["input_ids"]
      token_type_ids[row, :length] = record["token_type_ids"]
      attention_mask[row, :length] = 1
      if self.nsp:
        next_sentence_label[row] = record["next_sentence_label"]
    batch = {
        "input_ids": input_ids,  # [B, S]
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
        "special_tokens_mask": self.tokenizer.special_tokens_mask(input_ids) * real[:, None],
        "word_starts": self.tokenizer.word_starts(input_ids) * attention_mask,
    }
    if self.nsp:
      batch["next_sentence_label"] = next_sentence_label  # [B]
    batch["example_mask"] = real.astype(np.int32)  # [B]
    return batch


class _ClassificationBatch:
  """[B] record indices -> the classification batch (texts tokenized here)."""

  def __init__(self, source, tokenizer: Tokenizer, max_seq_length: int, text_key: str,
               text_pair_key: str, label_key: str):
    self.source, self.tokenizer, self.max_seq_length = source, tokenizer, max_seq_length
    self.text_key, self.text_pair_key, self.label_key = text_key, text_pair_key, label_key

  def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    real = indices >= 0
    records = self.source.__getitems__([int(i) for i in indices[real]])
    batch = {k: np.zeros((len(indices), self.max_seq_length), np.int32)
             for k in CLASSIFICATION_FIELDS}
    label = np.zeros(len(indices), np.int32)
    if records:
      texts = [_text(r[self.text_key]) for r in records]
      pairs = [_text(r[self.text_pair_key]) for r in records] if self.text_pair_key else None
      encoded = self.tokenizer.encode_batch(texts, pairs, max_length=self.max_seq_length)
      for k in CLASSIFICATION_FIELDS:
        batch[k][real] = encoded[k]  # [B, S]
      label[real] = [int(r[self.label_key]) for r in records]
    batch["label"] = label  # [B]
    batch["example_mask"] = real.astype(np.int32)  # [B]
    return batch


def _field(data_config, key: str, default):
  value = getattr(data_config, key, default)
  return default if value is None else value


def _fingerprint(builder, split, **kwargs) -> dict:
  config = getattr(builder, "builder_config", None)
  return {"dataset": builder.name, "config": config.name if config else "", "split": split,
          "num_records": builder.info.splits[split].num_examples, **kwargs}


def make_pretraining_iterator(data_config, *, split: str, global_batch_size: int, seed: int,
                              shuffle: bool, num_epochs: int | None, process_index: int = 0,
                              process_count: int = 1, data_dir: str | None = None,
                              num_threads: int = 2, prefetch_batches: int = 4) -> DataIterator:
  """Batches of packed pretraining examples (int32): `input_ids`, `attention_mask`,
  `token_type_ids`, `special_tokens_mask`, `word_starts` [B, S], `next_sentence_label`
  [B] (when data_config.nsp), `example_mask` [B]; B = global_batch_size // process_count."""
  from bert_jax import datasets
  batch_size = _check_batch_size(global_batch_size, process_count)
  builder = datasets.get_builder(data_config, data_dir, task="pretraining")
  cfg = builder.builder_config
  source = _data_source(builder, split)
  tokenizer = Tokenizer(cfg.vocab_file)
  indices = _index_batches(len(source), batch_size=batch_size, seed=seed, shuffle=shuffle,
                           num_epochs=num_epochs, process_index=process_index,
                           process_count=process_count)
  batches = indices.map(_PretrainingBatch(source, tokenizer, cfg.max_seq_length, cfg.nsp))
  fingerprint = _fingerprint(builder, split, batch_size=batch_size, seed=seed, shuffle=shuffle,
                             num_epochs=num_epochs, process=[process_index, process_count])
  return DataIterator(batches, batch_size=batch_size, endless=num_epochs is None,
                      fingerprint=fingerprint,
                      num_threads=num_threads, prefetch_batches=prefetch_batches)


def _classification_keys(data_config, builder) -> tuple[str, str, str]:
  from bert_jax import datasets
  if data_config.name in datasets.CLASSIFICATION_BUILDERS:
    return "text", "text_pair" if "text_pair" in builder.info.features else "", "label"
  keys = (_field(data_config, "text_key", "text"), _field(data_config, "text_pair_key", ""),
          _field(data_config, "label_key", "label"))
  missing = [k for k in keys if k and k not in builder.info.features]
  if missing:
    raise ValueError(f"{builder.name}: no feature {missing[0]!r} (features: "
                     f"{sorted(builder.info.features)}); set data.text_key / "
                     f"data.text_pair_key / data.label_key")
  return keys


def make_classification_iterator(data_config, *, split: str, global_batch_size: int, seed: int,
                                 shuffle: bool, num_epochs: int | None, process_index: int = 0,
                                 process_count: int = 1, data_dir: str | None = None,
                                 num_threads: int = 2, prefetch_batches: int = 4) -> DataIterator:
  """Batches of labelled text (int32): `input_ids`, `attention_mask`, `token_type_ids`
  [B, S] (S = data_config.max_seq_length), `label` [B], `example_mask` [B].

  Texts are tokenized per batch (longest-first truncation for pairs). Labels are passed
  through as stored (e.g. GLUE test splits store -1)."""
  from bert_jax import datasets
  batch_size = _check_batch_size(global_batch_size, process_count)
  builder = datasets.get_builder(data_config, data_dir, task="classification")
  source = _data_source(builder, split)
  tokenizer = Tokenizer(_field(data_config, "vocab_file", ""))
  max_seq_length = int(_field(data_config, "max_seq_length", 128))
  indices = _index_batches(len(source), batch_size=batch_size, seed=seed, shuffle=shuffle,
                           num_epochs=num_epochs, process_index=process_index,
                           process_count=process_count)
  batches = indices.map(_ClassificationBatch(source, tokenizer, max_seq_length,
                                             *_classification_keys(data_config, builder)))
  fingerprint = _fingerprint(builder, split, batch_size=batch_size, seed=seed, shuffle=shuffle,
                             num_epochs=num_epochs, process=[process_index, process_count],
                             vocab=tokenizer.vocab_hash, max_seq_length=max_seq_length)
  return DataIterator(batches, batch_size=batch_size, endless=num_epochs is None,
                      fingerprint=fingerprint,
                      num_threads=num_threads, prefetch_batches=prefetch_batches)


def dataset_info(data_config, data_dir: str | None = None) -> dict:
  """Prepares the dataset if needed and describes it: {"task", "num_labels", "label_names",
  "num_examples": {split: n}, "vocab_size", "max_seq_length", "nsp", "metadata", ...}.

  `metadata` of pretraining corpora holds, per split, the documents, sentences and
  tokens read and the examples written (and `read`: skipped input, for local_text).
  """
  from bert_jax import datasets
  task = datasets.task_of(data_config, data_dir)
  builder = datasets.get_builder(data_config, data_dir, task=task)
  config = getattr(builder, "builder_config", None)
  info = {
      "name": data_config.name,
      "task": task,
      "config_name": config.name if config else "",
      "data_dir": str(builder.data_dir),
      "num_examples": {s: int(v.num_examples) for s, v in builder.info.splits.items()},
      "metadata": json.loads(json.dumps(dict(builder.info.metadata or {}))),
  }
  if task == "pretraining":
    tokenizer = Tokenizer(config.vocab_file)
    info.update(num_labels=0, label_names=[], max_seq_length=config.max_seq_length,
                nsp=config.nsp, short_seq_prob=config.short_seq_prob)
  else:
    tokenizer = Tokenizer(_field(data_config, "vocab_file", ""))
    label_key = _classification_keys(data_config, builder)[2]
    label = builder.info.features[label_key]
    if not hasattr(label, "names"):
      raise ValueError(f"{builder.name}: feature {label_key!r} is not a ClassLabel, so the "
                       "label names are unknown")
    info.update(num_labels=label.num_classes, label_names=list(label.names),
                max_seq_length=int(_field(data_config, "max_seq_length", 128)))
  info.update(vocab_size=tokenizer.vocab_size, vocab_file=tokenizer.vocab_file)
  return info
