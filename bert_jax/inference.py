"""Loading a trained model for use: a bert_jax workdir or a transformers BERT directory.

`load(path)` returns the model config, parameters, the task (from the checkpoint's metadata:
every CLI asks the task instead of guessing from parameter names), the vocabulary, the
sequence length it was trained with (an export's `bert_jax_max_seq_length`, else its
max_position_embeddings) and its sentence vector (`pooling`: a classifier's, or an exported
directory's `bert_jax_pooling`; "cls_pooler" otherwise). `batches(...)` tokenizes
texts into a few static lengths (buckets), so a stream of short inputs is neither padded to
512 nor recompiled per length; `feature_batches(...)` does the same for rows a task encoded
itself (NER, QA windows). Static shapes: length in `LENGTH_BUCKETS`, rows a power of two up to
batch_size.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np

from bert_jax import fileio, ops
from bert_jax.config import BertConfig
from bert_jax.errors import ConfigError, DataError

# Static sequence lengths of prediction batches: each batch is padded to the smallest bucket
# that holds its longest input (at most the model's max_seq_length). Neighbours differ by at
# most 1.5x: against powers of two this computes 13-28% fewer tokens per single input on
# Rotten Tomatoes, CoNLL and SQuAD (benchmarks/RESULTS.md, Inference), for 4 more shapes.
LENGTH_BUCKETS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)
FIELDS = ("input_ids", "attention_mask", "token_type_ids")


@dataclasses.dataclass
class Loaded:
  config: BertConfig
  params: dict[str, Any]   # the task model's tree: {"bert", and the head's subtree}
  task_name: str           # config.task of the run that wrote it ("" for an encoder only)
  task: Any                # the bert_jax.tasks.Task, or None for an encoder only
  vocab_file: str
  max_seq_length: int
  pooling: str = "cls_pooler"  # the sentence vector it was trained with (model.POOLINGS)

  @property
  def label_names(self) -> list[str]:
    return list(getattr(self.task, "label_names", ()) or ())

  @functools.cached_property
  def tokenizer(self):
    """The `Tokenizer` of `vocab_file`, built once: building one takes ~70-90 ms, 3-5x a
    MiniLM batch-1 forward on one CPU core, so per-request callers must not rebuild it."""
    from bert_jax.tokenizer import Tokenizer
    return Tokenizer(self.vocab_file)

  def model(self):
    """The task's Flax model for these parameters."""
    if self.task is None:
      raise ConfigError("this checkpoint holds an encoder only (no task head)")
    return self.task.model(self.config)


def load(path: str, *, task: str | None = None) -> Loaded:
  """Reads a bert_jax workdir (or its checkpoints/ folder) or a transformers directory.

  A bert_jax checkpoint names its own task. For a transformers directory `task` says which
  head to read (its vocab.txt is used when present); without it, the encoder only.
  """
  from bert_jax import hf, tasks
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint {path} does not exist")
  if hf.is_transformers_dir(path):
    return _load_transformers(path, task)
  from bert_jax import checkpoint
  params, meta = checkpoint.restore_run(path)
  from bert_jax.tokenizer import resolve_vocab_file
  task_obj = tasks.get(meta["task"]).from_checkpoint_info(meta.get("task_info") or {})
  config = ops.resolve(BertConfig(**meta["model"]))
  return Loaded(config, params, meta["task"], task_obj,
                resolve_vocab_file(meta.get("vocab_file") or ""),
                int(meta.get("max_seq_length", 128)),
                getattr(task_obj, "pooling", "cls_pooler"))


def _load_transformers(path: str, task: str | None) -> Loaded:
  from bert_jax import hf, tasks
  from bert_jax.tokenizer import default_vocab_file
  task_obj = None
  head = None
  if task is not None:
    hf_config = fileio.read_json(os.path.join(path, "config.json"))
    task_obj = tasks.get(task).from_transformers_config(path, hf_config)
    head = task_obj.hf_head
  config, params = hf.load_hf_checkpoint(path, head=head)
  if head is not None and set(params) <= {"bert"}:  # the weights hold an encoder only
    hf_config = fileio.read_json(os.path.join(path, "config.json"))
    found = ", ".join(hf_config.get("architectures") or ()) or "BertModel"
    raise ConfigError(f"{path}: a {found} checkpoint, without the {task} head of a "
                      f"transformers {hf.architecture(head)}; fine-tune one first")
  config = ops.resolve(config)
  if head is None:
    params = {"bert": params}
  # On the device once: numpy parameters would be copied into every call of a prediction
  # function (MiniLM: 90 MB, ~95 ms a call against a 28 ms batch-1 forward on one CPU core).
  params = jax.device_put(params)
  vocab = os.path.join(path, "vocab.txt")
  return Loaded(config, params, task or "", task_obj,
                vocab if os.path.exists(vocab) else default_vocab_file(),
                _max_seq_length(path, config), hf.read_pooling(path))


def _max_seq_length(path: str, config: BertConfig) -> int:
  """An export's recorded `bert_jax_max_seq_length` (the workdir's), else the model's
  max_position_embeddings."""
  from bert_jax import hf
  length = hf.read_settings(path).get("max_seq_length")
  if length is None:
    return config.max_position_embeddings
  if (isinstance(length, bool) or not isinstance(length, int)
      or not 3 <= length <= config.max_position_embeddings):
    raise DataError(f"{path}/config.json: {hf.SETTINGS_PREFIX}max_seq_length={length!r} is "
                    f"not an integer in [3, max_position_embeddings="
                    f"{config.max_position_embeddings}]")
  return length


def read_lines(path: str | None, what: str = "text") -> tuple[list[str], list[int]]:
  """The non-blank lines of `path` (stdin when None) and their 1-based line numbers.

  No such line is `DataError("no input: ...")`: every prediction CLI exits 1 on an
  empty input instead of printing nothing.
  """
  import sys

  where = path or "stdin"
  if path:
    lines = fileio.read_text(path, universal_newlines=True).split("\n")
  else:
    lines = [line.rstrip("\n") for line in sys.stdin]
  numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
  if not numbered:
    raise DataError(f"no input: {where} has no {what} (every line is blank)")
  return [line for _, line in numbered], [n for n, _ in numbered]


def cut_note(cut: Sequence[int], total: int, limit: int, names: Sequence[str] | None = None,
             what: str = "inputs", unit: str = "pieces") -> str:
  """One line saying how many of `total` inputs were cut to `limit` `unit`, naming the first
  few (`names[i]` for input i, default "input i+1"); "" when none was."""
  if not cut:
    return ""
  label = [names[i] if names else f"input {i + 1}" for i in list(cut)[:3]]
  more = f" and {len(cut) - 3} more" if len(cut) > 3 else ""
  return (f"warning: {len(cut)} of {total} {what} longer than {limit} {unit} were cut to "
          f"their first {limit} ({', '.join(label)}{more}); the model never saw the rest")


def print_cut_note(cut: Sequence[int], total: int, limit: int, names: Sequence[str],
                   what: str) -> None:
  """`cut_note`'s line on stderr when an input was cut (the prediction CLIs' report)."""
  import sys
  note = cut_note(cut, total, limit, names, what)
  if note:
    print(note, file=sys.stderr)


def predict_examples(loaded: Loaded, task: str, examples: list[dict], *, refusal: str,
                     batch_size: int = 32, top_k: int = 5, truncated: list[int] | None = None
                     ) -> list[dict]:
  """`loaded.task.predict_examples` on the checkpoint's model, parameters, tokenizer and
  max_seq_length: the one prediction path of the CLIs. A checkpoint of another task than
  `task` is a ConfigError "this checkpoint is a <its task> model<refusal>"."""
  if loaded.task_name != task or loaded.task is None:
    raise ConfigError(f"this checkpoint is a {loaded.task_name or 'bare encoder'} model"
                      f"{refusal}")
  return loaded.task.predict_examples(loaded.model(), loaded.params, loaded.tokenizer,
                                      examples, max_length=loaded.max_seq_length,
                                      batch_size=batch_size, top_k=top_k, truncated=truncated)


def bucket_length(n: int, max_length: int, buckets: Sequence[int] = LENGTH_BUCKETS) -> int:
  """The smallest bucket >= n (capped at max_length)."""
  for b in buckets:
    if b >= n:
      return min(b, max_length)
  return max_length


def batch_rows(n: int, batch_size: int) -> int:
  """Rows a batch of `n` inputs runs: the smallest power of two >= n, at most `batch_size`.

  A single request (or a short last batch) then runs 1, 2, 4, ... rows instead of batch_size
  empty-padded ones, at the price of at most log2(batch_size) more compiled shapes.
  """
  rows = 1
  while rows < n:
    rows *= 2
  return min(rows, batch_size)


def batches(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
            max_length: int, batch_size: int = 32, truncated: list[int] | None = None
            ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
  """(row indices, encoded batch [rows, bucket]) over `texts`.

  Texts are sorted by length so a batch shares its bucket; the row indices say where each
  result goes. A short last batch is padded with empty rows to `batch_rows` (static shapes).
  Inputs longer than `max_length` pieces ([CLS] and [SEP] included) are cut to it; their
  indices are appended to `truncated` when given (`cut_note` words the report).
  """
  lengths = [len(ids) for ids in tokenizer.tokenize_to_ids(list(texts))]
  if pairs is not None:
    lengths = [a + len(b) + 1 for a, b in zip(lengths, tokenizer.tokenize_to_ids(list(pairs)))]
  if truncated is not None:
    truncated.extend(i for i, n in enumerate(lengths) if n + 2 > max_length)
  order = np.argsort(lengths, kind="stable")
  for start in range(0, len(order), batch_size):
    rows = order[start:start + batch_size]
    length = bucket_length(max(lengths[i] for i in rows) + 2, max_length)
    pad = batch_rows(len(rows), batch_size) - len(rows)
    chunk = [texts[i] for i in rows] + [""] * pad
    pair_chunk = None
    if pairs is not None:
      pair_chunk = [pairs[i] for i in rows] + [""] * pad
    yield rows, tokenizer.encode_batch(chunk, pair_chunk, max_length=length)


def feature_batches(features: dict[str, np.ndarray], *, batch_size: int = 32,
                    keys: Sequence[str] = FIELDS
                    ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
  """(row indices, `keys` [rows, bucket]) over encoded rows [n, width] (right-padded).

  As `batches`, for rows a task has already encoded (NER or QA windows): rows are sorted by
  length so a batch shares its bucket, cut to that bucket (at most `width`), and a short last
  batch is padded with empty rows to `batch_rows`.
  """
  lengths = features["attention_mask"].sum(1)  # [n]
  width = features["attention_mask"].shape[1]
  order = np.argsort(lengths, kind="stable")
  for start in range(0, len(order), batch_size):
    rows = order[start:start + batch_size]
    length = bucket_length(int(lengths[rows].max()), width)
    pad = batch_rows(len(rows), batch_size) - len(rows)
    yield rows, {k: np.pad(features[k][rows, :length], ((0, pad), (0, 0))) for k in keys}


def measure_cost(model, params, batch: dict[str, np.ndarray], *, repeats: int = 3,
                 latency_calls: int = 20) -> dict[str, float]:
  """What a trained model costs to run here: the model forward (tokenization excluded) on a
  real `batch` ([B, L] `FIELDS`): examples/s at batch B, and the p50 / p95 latency of one
  example at length L (the prediction CLIs bucket lengths, so short inputs cost less).
  Compilation is timed apart (`compile_s`)."""
  import time
  forward = jax.jit(lambda p, *inputs: model.apply({"params": p}, *inputs))
  params = jax.device_put(params)
  inputs = [np.asarray(batch[k]) for k in FIELDS]
  size, length = inputs[0].shape

  def timed(args) -> float:
    t = time.perf_counter()
    jax.block_until_ready(forward(params, *args))
    return time.perf_counter() - t

  compile_s = timed(inputs)
  full = float(np.median([timed(inputs) for _ in range(repeats)]))
  one = [x[:1] for x in inputs]
  compile_s += timed(one)
  latencies = np.array([timed(one) for _ in range(latency_calls)]) * 1e3
  return {"batch": int(size), "length": int(length), "examples_per_s": size / full,
          "p50_ms": float(np.percentile(latencies, 50)),
          "p95_ms": float(np.percentile(latencies, 95)), "compile_s": compile_s}
