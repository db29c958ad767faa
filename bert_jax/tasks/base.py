"""The task interface: what one kind of training job owns, apart from the loop that runs it.

A task is a frozen dataclass (its settings, e.g. masking or the label names) with three groups
of methods, used by `steps.py` (device side) and `train.py` / the CLIs (host side):

  building    `model(cfg)`, `hf_head`, `checkpoint_info()`, `from_config(config, info)`
  data        `data_info(config)`, `iterator(config, split, ..., packed)`: host examples ->
              fixed-shape numpy batches, with `example_mask` [batch] (0 on padding rows);
              `packed=True` (training with `data.packing`) puts several examples in a row
              (`row_packing`: segment_ids, cls_positions, example_mask [batch, examples])
  device      `prepare(rng, batch, axis_name)`: in-step preparation (MLM masking);
              `denominators(batch)`: local counts the loss divides by (summed over devices and
              micro-batches before any loss is taken); `forward(...) -> (sums, outputs)`;
              `loss(sums, denominators)`
  host        `summarize(sums)`: sums -> reported means; `host_metrics(config, outputs, rows)`
              (metrics that need every prediction, e.g. entity F1); `finish(run)`: the report and
              prediction files after the final evaluation
  prediction  `predict_examples(model, params, tokenizer, examples, ...)`: plain dicts in,
              JSON-ready dicts out, one per input, through jitted functions on length buckets
              (`inference.batches` / `feature_batches`): what every prediction CLI calls
              (`inference.predict_examples`); the task's own helpers (classification
              `predict`, token classification `tag`, QA `answer`) are its building blocks

Metric names: a device-side sum ends in `_sum`, its denominator in `_count`; `summarize`
reports means under plain names (`mlm_loss_sum / mlm_count -> mlm_loss`). Everything else a
step returns (norms, learning rate) is a per-step scalar.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import numpy as np

from bert_jax.config import BertConfig
from bert_jax.errors import ConfigError

Array = jax.Array
Batch = dict[str, Any]
Metrics = dict[str, Array]


def is_sum(key: str) -> bool:
  """Metrics that add up over batches, steps and devices."""
  return key.endswith("_sum") or key.endswith("_count")


def mean(sums: dict[str, float], total: str, count: str) -> float:
  return sums[total] / max(sums[count], 1.0)


@dataclasses.dataclass
class FinishedRun:
  """What `Task.finish` gets after the final evaluation of a run (host values)."""

  workdir: str
  config: Any                  # the experiment ConfigDict
  model_config: BertConfig
  params: Any                  # host parameter tree
  num_params: int
  tokenizer: Any               # bert_jax.tokenizer.Tokenizer
  eval_results: dict           # final metrics (with "step")
  outputs: dict[str, np.ndarray]  # task outputs of the final evaluation, real rows in order
  rows: dict[str, np.ndarray]  # the host batch keys of those rows (`host_keys`)
  wall_time_s: float
  device: str
  inference_cost: dict | None = None  # `inference.measure_cost` on an eval batch


class Task:
  """Base class; subclasses are frozen dataclasses, one per folder of `bert_jax/tasks/`.

  Class attributes: `name` (the registry name, `config.task`), `best_metric` (the eval metric,
  higher is better, whose best step is kept in `workdir/best`; None keeps none), `host_keys`
  (eval batch keys `host_metrics` / `finish` read back in `FinishedRun.rows`),
  `host_only_keys` (batch keys that never go to the device), `measures_inference` (time the
  trained forward for the report). Shapes below: B rows of a batch, S positions a row, E
  examples a packed row.
  """

  name: ClassVar[str] = ""
  best_metric: ClassVar[str | None] = None  # eval metric (higher is better) kept in best/
  host_keys: ClassVar[tuple[str, ...]] = ()  # eval batch keys `finish`/`host_metrics` read
  measures_inference: ClassVar[bool] = True  # time the trained model's forward for the report

  # --- building ----------------------------------------------------------------------------

  @classmethod
  def from_config(cls, config, info: dict) -> Task:
    """The task of an experiment config.

    Args: `config` the experiment ConfigDict; `info` what `data_info(config)` returned (e.g.
    label_names). Returns the task; raises ConfigError for settings that cannot work.
    Called by `train.py` once per run, before the model is built.
    """
    raise NotImplementedError

  @classmethod
  def from_checkpoint_info(cls, info: dict) -> Task:
    """The task stored in a checkpoint's metadata: the inverse of `checkpoint_info()`.

    Args: `info` the JSON dict `checkpoint_info` wrote (older checkpoints may lack keys; the
    task supplies what they trained with). Returns the task. Called by `inference.load` (every
    CLI, export).
    """
    raise NotImplementedError

  @classmethod
  def from_transformers_config(cls, path: str, hf_config: dict) -> Task:
    """The task of a transformers directory with this task's head.

    Args: `path` the directory (for messages); `hf_config` its parsed config.json (labels,
    `bert_jax_*` settings an export recorded). Returns the task; the default refuses.
    Called by `inference.load(path, task=...)` on a transformers directory.
    """
    raise ConfigError(f"{path}: reading a transformers {cls.name} model is not supported")

  @classmethod
  def init_head(cls, config) -> str | None:
    """The `hf.load_hf_checkpoint` head to read from a transformers `config.init_from`
    directory, from the config alone (no data prepared): None, the encoder only, for tasks
    whose head starts fresh (the default). Called by `restore.py`."""
    del config
    return None

  def checkpoint_info(self) -> dict:
    """JSON-ready settings saved with every checkpoint (labels, NSP, ...): `train.py` writes
    them into the run identity; `from_checkpoint_info` reads them back."""
    return {}

  @property
  def hf_head(self) -> str | None:
    """The `hf.load_hf_checkpoint` / `hf.save_hf_checkpoint` head of this task's model (its
    transformers architecture); read by `inference.load` and `export.py`."""
    raise NotImplementedError

  def model(self, cfg: BertConfig):
    """The flax module of this task for encoder config `cfg` (e.g. BertForMaskedLM); its
    `apply({"params": p}, input_ids, attention_mask, token_type_ids, ...)` ([B, S] int32
    each) is what `forward` and `predict_examples` call. Built by `train.py` and
    `inference.Loaded.model()`."""
    raise NotImplementedError

  def export_params(self, params: dict) -> dict:
    """Our parameter tree -> the tree `hf.save_hf_checkpoint(head=self.hf_head)` takes (the
    identity unless the task's tree differs from transformers' layout). Called by
    `export.py`."""
    return params

  # --- data (host) -------------------------------------------------------------------------

  @classmethod
  def data_info(cls, config) -> dict:
    """Prepares the data of `config.data` (TFDS builders, or the task's own readers) and
    describes it.

    Returns a JSON-ready dict: `vocab_file`, `vocab_size`, `split_sizes` {split: examples} and
    whatever `from_config` needs (e.g. `label_names`). Raises DataError / ConfigError with
    one line naming the file (and line) for bad input. Called by `train.py` before
    `from_config`.
    """
    raise NotImplementedError

  def iterator(self, config, *, split: str, global_batch_size: int, seed: int, shuffle: bool,
               num_epochs: int | None, process_index: int = 0, process_count: int = 1,
               packed: bool = False):
    """The batches of one split, as a resumable `input_pipeline.DataIterator`.

    Args: `split` a split name of the data; `global_batch_size` B over all processes (this
    process yields B / process_count rows); `seed`, `shuffle`, `num_epochs` (None: repeat)
    fix the order, which depends on (seed, step) only, so a resumed run sees the same
    batches; `packed` several examples a row (`row_packing`: segment_ids [B, S],
    cls_positions and example_mask [B, E]).

    Yields dicts of numpy arrays with static shapes: at least input_ids, attention_mask,
    token_type_ids [B, S] int32 and example_mask [B] (0 on padding rows), plus the task's
    label and host keys. Called by `train.py` for the train and eval splits.
    """
    raise NotImplementedError

  def dummy_batch(self, seq_len: int) -> dict[str, np.ndarray]:
    """A one-row batch {key: [1, seq_len] int32 zeros} with the keys `model.init` needs
    (`train.py` initializes the parameters from it)."""
    return {k: np.zeros((1, seq_len), np.int32)
            for k in ("input_ids", "attention_mask", "token_type_ids")}

  def device_keys(self, batch: dict) -> dict:
    """The part of a host batch the step reads: every key but `host_only_keys` (`train.py`
    puts it on the devices)."""
    return {k: v for k, v in batch.items() if k not in self.host_only_keys}

  host_only_keys: ClassVar[tuple[str, ...]] = ()

  # --- device (pure) -----------------------------------------------------------------------

  @property
  def required_keys(self) -> tuple[str, ...]:
    """Batch keys the step reads: `steps.py` names a missing one before tracing gets far."""
    return ("input_ids", "attention_mask", "token_type_ids")

  def prepare(self, rng: Array, batch: Batch, axis_name: str | None) -> Batch:
    """In-step preparation inside the compiled step (pretraining: MLM masking).

    Args: `rng` a key folded per step (and per device under pmap); `batch` the device batch;
    `axis_name` the pmap axis or None under jit. Returns the batch the loss reads (same
    leading shapes). The default returns `batch`. Called by `steps.py` inside the compiled
    train and eval steps, before `denominators` and `forward`.
    """
    del rng, axis_name
    return batch

  def denominators(self, batch: Batch) -> Metrics:
    """The counts the loss divides by, {name_count: float32 scalar} over this device's batch
    (e.g. real examples, masked tokens). The step sums them over devices and over all
    micro-batches before any loss is taken, so the loss is the global mean however the batch
    is split. Called by `steps.py`."""
    raise NotImplementedError

  def forward(self, model, params, batch: Batch, *, deterministic: bool,
              dropout_rng: Array | None) -> tuple[Metrics, dict[str, Array]]:
    """The model on one (micro-)batch.

    Args: `model` the module of `model()`; `params` its parameters; `batch` prepared device
    arrays ([B, S] token keys); `deterministic` False in training (dropout on, with
    `dropout_rng`). Returns (sums, outputs): sums {name_sum / name_count: float32 scalar},
    the loss's numerators among them; outputs {name: [B, ...]} per-row values the host needs
    (logits, probabilities), {} when none. Called by `steps.py` per micro-batch (train) and
    per batch (eval); the eval outputs go to `host_metrics` and `finish`.
    """
    raise NotImplementedError

  def loss(self, sums: Metrics, denominators: Metrics) -> Array:
    """The scalar loss to differentiate: `forward`'s sums of one micro-batch over the global
    `denominators` (so micro-batch losses add up to the batch's mean). Called by `steps.py`
    under `jax.grad`."""
    raise NotImplementedError

  # --- host --------------------------------------------------------------------------------

  def summarize(self, sums: dict[str, float]) -> dict[str, float]:
    """Host floats summed over steps / batches -> the reported metrics (means under plain
    names, `mean(sums, "mlm_loss_sum", "mlm_count") -> mlm_loss`), with "loss". Called by
    `train.py` on the train log rows and on each evaluation."""
    raise NotImplementedError

  def host_metrics(self, config, outputs: dict[str, np.ndarray], rows: dict[str, np.ndarray]
                   ) -> dict[str, float]:
    """Metrics that need every prediction of an evaluation (entity F1, SQuAD EM/F1).

    Args: `outputs` {name: [N, ...]} of `forward` and `rows` {key: [N, ...]} the `host_keys`
    of the same N real rows, in eval order. Returns {metric: float}; default {}. Called by
    `train.py` after each evaluation; merged into its metrics.
    """
    del config, outputs, rows
    return {}

  def finish(self, run: FinishedRun) -> list[str]:
    """After the final evaluation: writes the run's report.md / report.json and prediction
    files (predictions.jsonl, .conll, .json) into `run.workdir`; returns their paths.
    Called by `train.py` once, after the final evaluation."""
    del run
    return []


  # --- prediction (host) -------------------------------------------------------------------

  def predict_examples(self, model, params, tokenizer, examples: list[dict], *,
                       max_length: int, batch_size: int = 32, top_k: int = 5,
                       truncated: list[int] | None = None) -> list[dict]:
    """The trained model on raw inputs: the one prediction path of every CLI.

    Args: `model` the module of `model(cfg)` and `params` its tree (`inference.Loaded.model()`
    / `.params`); `tokenizer` the checkpoint's `Tokenizer`; `examples` plain dicts, one per
    input: classification {"text", optional "text_pair" (all or none)}, token classification
    {"text"}, question answering {"question", "context"}, pretraining {"text"} with [MASK]s;
    `max_length` pieces a row, [CLS] and [SEP] included (the checkpoint's max_seq_length);
    `batch_size` rows a forward pass (inputs run in [rows, bucket] batches: `inference.batches`,
    so each shape compiles once); `top_k` QA alternatives / fillers per [MASK] (ignored
    elsewhere); `truncated` gets the indices of inputs cut to fit (texts over `max_length`,
    questions over QA's max_query_length; NER windows long lines and cuts none).

    Returns one JSON-ready dict per example, in order (what the task's CLI prints):
    classification {"label", "probability", "probabilities" {label: p}} (regression
    {"score"}; multi-label {"labels", "probabilities"}), token classification {"text",
    "entities": [{"type", "text", "start", "end", "score"}]}, QA {"question", "answer",
    "start", "end", "score", "alternatives"}, pretraining {"text", "masks": per [MASK]
    [{"token", "probability"}] best first}. Bad input is a one-line DataError. Called by
    `inference.predict_examples` (the CLIs predict, tag, answer, fill_mask).
    """
    del model, params, tokenizer, examples, max_length, batch_size, top_k, truncated
    raise NotImplementedError(f"task {self.name!r} implements no predict_examples")


def packed_inputs(batch: dict[str, Array], cls: bool = False) -> dict[str, Array]:
  """The model's packed-row keyword arguments present in `batch` ({} for unpacked batches):
  segment_ids, and with `cls` each example's [CLS] position (sentence-level heads)."""
  if "segment_ids" not in batch:
    return {}
  out = {"segment_ids": batch["segment_ids"]}
  if cls:
    out["cls_positions"] = batch["cls_positions"]
  return out


def rngs(deterministic: bool, dropout_rng):
  return None if deterministic else {"dropout": dropout_rng}


def complete_groups(rows: dict, outputs: dict, index_key: str, count_key: str
                    ) -> tuple[dict, dict]:
  """Keeps the rows of groups (a sentence's or a question's windows, `rows[index_key]`) whose
  `rows[count_key]` windows are all present: `num_eval_batches` may cut the last group."""
  index = rows[index_key]
  present = np.bincount(index, minlength=index.max() + 1)[index] if len(index) else index
  keep = present == rows[count_key]
  if keep.all():
    return rows, outputs
  return ({k: v[keep] for k, v in rows.items()}, {k: v[keep] for k, v in outputs.items()})


def split_file(data, split: str, local_name: str) -> str:
  """The file of a split (`data.train_file` / `data.eval_file`) for `data.name == local_name`,
  else "<TFDS name>:<split>" (a dataset read by name)."""
  import os
  if data.name == local_name:
    path = data.train_file if split == data.train_split else data.eval_file
    if not path:
      raise ConfigError(f"data.name={local_name!r} needs data.train_file and data.eval_file "
                        f"(split {split!r} has none)")
    return os.path.abspath(path)
  return f"{data.name}:{split}"


def group_sizes(index: np.ndarray) -> np.ndarray:
  """[N] group index of each row -> [N] number of rows of that row's group."""
  return np.bincount(index)[index].astype(np.int32)
