"""Sentence (and sentence-pair) classification: BERT + a sentence vector + linear.

The sentence vector is `config.pooling` (`model.POOLINGS`): "cls_pooler" (BERT's tanh dense
over [CLS], the default and what transformers' BertForSequenceClassification computes), "cls",
"mean" or "max" over the real tokens; it is saved with the checkpoint (`checkpoint_info`).

Data: `datasets.classification_builder` (Rotten Tomatoes, your CSV / JSON Lines, any prepared
TFDS dataset with a ClassLabel), tokenized per batch (longest-first truncation for pairs).
Loss: mean cross-entropy over the real examples. Reported: loss, accuracy, num_examples; the
final evaluation writes report.md (confusion matrix, accuracy by length, the most confidently
wrong examples) and predictions.jsonl.

Batch keys: input_ids, attention_mask, token_type_ids [batch, length], label [batch],
example_mask [batch]. Packed (`data.packing`, training only): also segment_ids [batch, length]
and cls_positions [batch, examples]; label and example_mask become [batch, examples].
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import losses
from bert_jax.config import BertConfig
from bert_jax.tasks.base import FinishedRun, Task, is_sum, mean, packed_inputs, rngs
from bert_jax.tasks.classification import analysis as clf_analysis

FIELDS = ("input_ids", "attention_mask", "token_type_ids")


@dataclasses.dataclass(frozen=True)
class Classification(Task):
  """One label per text (or text pair)."""

  num_labels: int
  label_names: tuple[str, ...] = ()
  pooling: str = "cls_pooler"  # the sentence vector the classifier reads (model.POOLINGS)

  name = "classification"
  best_metric = "accuracy"
  host_keys = ("input_ids", "label")

  def __post_init__(self):
    from bert_jax.model import POOLINGS
    if self.pooling not in POOLINGS:
      raise ValueError(f"pooling={self.pooling!r} is not one of {', '.join(POOLINGS)} "
                       "(config.pooling)")

  # --- building ----------------------------------------------------------------------------

  @classmethod
  def from_config(cls, config, info: dict) -> Classification:
    return cls(num_labels=len(info["label_names"]), label_names=tuple(info["label_names"]),
               pooling=str(config.get("pooling", "cls_pooler")))

  @classmethod
  def from_checkpoint_info(cls, info: dict) -> Classification:
    # Checkpoints written before the pooling choice pooled with cls_pooler.
    return cls(num_labels=len(info["label_names"]), label_names=tuple(info["label_names"]),
               pooling=info.get("pooling", "cls_pooler"))

  @classmethod
  def from_transformers_config(cls, path: str, hf_config: dict) -> Classification:
    from bert_jax.hf import POOLING_KEY
    return cls(*_labels_of(path, hf_config), pooling=hf_config.get(POOLING_KEY, "cls_pooler"))

  def checkpoint_info(self) -> dict:
    return {"label_names": list(self.label_names), "pooling": self.pooling}

  hf_head = "classification"

  def model(self, cfg: BertConfig):
    from bert_jax.model import BertForSequenceClassification
    return BertForSequenceClassification(cfg, self.num_labels, pooling=self.pooling)

  # --- data --------------------------------------------------------------------------------

  @classmethod
  def data_info(cls, config) -> dict:
    return data_info(config.data, config.data.get("data_dir") or None)

  def iterator(self, config, *, split: str, global_batch_size: int, seed: int, shuffle: bool,
               num_epochs: int | None, process_index: int = 0, process_count: int = 1,
               packed: bool = False, **kwargs):
    if packed:
      return make_packed_iterator(
          config.data, split=split, global_batch_size=global_batch_size, seed=seed,
          shuffle=shuffle, num_epochs=num_epochs, process_index=process_index,
          process_count=process_count, data_dir=config.data.get("data_dir") or None)
    return make_iterator(config.data, split=split, global_batch_size=global_batch_size,
                         seed=seed, shuffle=shuffle, num_epochs=num_epochs,
                         process_index=process_index, process_count=process_count,
                         data_dir=config.data.get("data_dir") or None, **kwargs)

  # --- device ------------------------------------------------------------------------------

  required_keys = FIELDS + ("label",)

  def denominators(self, batch):
    return {"example_count": jnp.sum(losses.example_mask(batch))}

  def forward(self, model, params, batch, *, deterministic, dropout_rng):
    logits = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                         batch["token_type_ids"], **packed_inputs(batch, cls=True),
                         deterministic=deterministic,
                         rngs=rngs(deterministic, dropout_rng))  # [batch, (examples,) labels]
    ex = losses.example_mask(batch)  # [batch] ([batch, examples] packed)
    sums = {
        "loss_sum": jnp.sum(losses.cross_entropy(logits, batch["label"]) * ex),
        "correct_sum": jnp.sum(losses.top1_correct(logits, batch["label"]) * ex),
        "example_count": jnp.sum(ex),
        "tokens_sum": jnp.sum(batch["attention_mask"]).astype(jnp.float32),
    }
    return sums, {"probs": jax.nn.softmax(logits.astype(jnp.float32), -1)}

  def loss(self, sums, denominators):
    return sums["loss_sum"] / jnp.maximum(denominators["example_count"], 1.0)

  # --- host --------------------------------------------------------------------------------

  def summarize(self, sums):
    out = {k: v for k, v in sums.items() if not is_sum(k)}
    out["loss"] = mean(sums, "loss_sum", "example_count")
    out["accuracy"] = mean(sums, "correct_sum", "example_count")
    out["num_examples"] = sums["example_count"]
    out["num_tokens"] = sums.get("tokens_sum", 0.0)
    return out

  def finish(self, run: FinishedRun) -> list[str]:
    from bert_jax import report
    tok = run.tokenizer
    texts = [tok.decode(ids) for ids in run.rows["input_ids"]]
    labels, probs = run.rows["label"], run.outputs["probs"]
    names = list(self.label_names)
    analysis = clf_analysis.error_analysis(texts, labels, probs, names)
    predictions = os.path.join(run.workdir, "predictions.jsonl")
    report.write_lines(predictions, (json.dumps(
        {"text": t, "label": names[int(g)], "predicted": names[int(p.argmax())],
         "probability": round(float(p.max()), 6)}) for t, g, p in zip(texts, labels, probs)))
    md = report.write_report(
        run, analysis=analysis, failure_lines=clf_analysis.failure_lines(analysis),
        examples=[(report.EXAMPLE_SINGLE, None), report.EXAMPLE_PAIR])
    return [md, predictions]

  # --- prediction --------------------------------------------------------------------------

  def predict(self, model, params, tokenizer, texts: list[str], *, max_length: int,
              batch_size: int = 64, truncated: list[int] | None = None) -> np.ndarray:
    """Texts -> probabilities [n, num_labels] (length buckets and `truncated`: see
    `inference.batches`)."""
    from bert_jax import inference
    probs = np.zeros((len(texts), self.num_labels), np.float32)
    for rows, enc in inference.batches(tokenizer, texts, max_length=max_length,
                                       batch_size=batch_size, truncated=truncated):
      out = predict_batch(model, params, *(enc[k] for k in FIELDS))  # [batch, labels]
      probs[rows] = np.asarray(out)[:len(rows)]
    return probs


@functools.partial(jax.jit, static_argnums=0)
def predict_batch(model, params, input_ids, attention_mask, token_type_ids) -> jax.Array:
  """[batch, length] -> probabilities [batch, labels] (float32).

  Jitted at module level with the (hashable) model static, so each model and batch shape
  compiles once per process; a `jax.jit` made inside `predict` compiled on every call.
  """
  logits = model.apply({"params": params}, input_ids, attention_mask, token_type_ids)
  return jax.nn.softmax(logits.astype(jnp.float32), -1)


TASK = Classification


def _labels_of(path: str, hf_config: dict) -> tuple[int, tuple[str, ...]]:
  """(num_labels, names) from a transformers config.json's id2label."""
  id2label = hf_config.get("id2label") or {}
  if not id2label:
    raise ValueError(f"{path}/config.json has no id2label: not a fine-tuned classifier")
  names = tuple(id2label[k] for k in sorted(id2label, key=int))
  return len(names), names


def _keys(data_config, builder) -> tuple[str, str, str]:
  """(text, text pair or "", label) feature names of a labelled dataset."""
  from bert_jax import datasets
  if data_config.name in datasets.CLASSIFICATION_BUILDERS:
    return "text", "text_pair" if "text_pair" in builder.info.features else "", "label"
  from bert_jax.input_pipeline import field
  keys = (field(data_config, "text_key", "text"), field(data_config, "text_pair_key", ""),
          field(data_config, "label_key", "label"))
  missing = [k for k in keys if k and k not in builder.info.features]
  if missing:
    raise ValueError(f"{builder.name}: no feature {missing[0]!r} (features: "
                     f"{sorted(builder.info.features)}); set data.text_key / "
                     f"data.text_pair_key / data.label_key")
  return keys


class _ClassificationBatch:
  """[B] record indices -> the classification batch (texts tokenized here)."""

  def __init__(self, source, tokenizer, max_seq_length: int, text_key: str,
               text_pair_key: str, label_key: str):
    self.source, self.tokenizer, self.max_seq_length = source, tokenizer, max_seq_length
    self.text_key, self.text_pair_key, self.label_key = text_key, text_pair_key, label_key

  def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    from bert_jax.input_pipeline import text
    real = indices >= 0
    records = self.source.__getitems__([int(i) for i in indices[real]])
    batch = {k: np.zeros((len(indices), self.max_seq_length), np.int32) for k in FIELDS}
    label = np.zeros(len(indices), np.int32)
    if records:
      texts = [text(r[self.text_key]) for r in records]
      pairs = [text(r[self.text_pair_key]) for r in records] if self.text_pair_key else None
      encoded = self.tokenizer.encode_batch(texts, pairs, max_length=self.max_seq_length)
      for k in FIELDS:
        batch[k][real] = encoded[k]  # [B, S]
      label[real] = [int(r[self.label_key]) for r in records]
    batch["label"] = label  # [B]
    batch["example_mask"] = real.astype(np.int32)  # [B]
    return batch


def data_info(data_config, data_dir: str | None = None) -> dict:
  """Prepares the labelled dataset if needed and describes it: name, num_examples
  {split: n}, label_names, max_seq_length, vocab_file, vocab_size."""
  from bert_jax import datasets, input_pipeline
  from bert_jax.tokenizer import Tokenizer
  builder = datasets.classification_builder(data_config, data_dir)
  label_key = _keys(data_config, builder)[2]
  label = builder.info.features[label_key]
  if not hasattr(label, "names"):
    raise ValueError(f"{builder.name}: feature {label_key!r} is not a ClassLabel, so the "
                     "label names are unknown")
  tokenizer = Tokenizer(input_pipeline.field(data_config, "vocab_file", ""))
  slices = (input_pipeline.field(data_config, "train_split", "train"),
            input_pipeline.field(data_config, "eval_split", ""))
  return {**input_pipeline.builder_info(builder, data_config.name, slices),
          "label_names": list(label.names),
          "max_seq_length": int(input_pipeline.field(data_config, "max_seq_length", 128)),
          "vocab_size": tokenizer.vocab_size, "vocab_file": tokenizer.vocab_file}


def _batcher(data_config, split: str, data_dir: str | None):
  """(builder, source, tokenizer, max_seq_length, record indices -> batch) of a split."""
  from bert_jax import datasets, input_pipeline
  from bert_jax.tokenizer import Tokenizer
  builder = datasets.classification_builder(data_config, data_dir)
  source = input_pipeline.data_source(builder, split)
  tokenizer = Tokenizer(input_pipeline.field(data_config, "vocab_file", ""))
  max_seq_length = int(input_pipeline.field(data_config, "max_seq_length", 128))
  to_batch = _ClassificationBatch(source, tokenizer, max_seq_length,
                                  *_keys(data_config, builder))
  return builder, source, tokenizer, max_seq_length, to_batch


def make_packed_iterator(data_config, *, split: str, global_batch_size: int, seed: int,
                         shuffle: bool, num_epochs: int | None, process_index: int = 0,
                         process_count: int = 1, data_dir: str | None = None):
  """Packed batches (`row_packing`): rows of max_seq_length holding up to
  `data.max_examples_per_row` whole examples; `label`, `cls_positions`, `example_mask`
  [B, max_examples_per_row]. The split is tokenized once, up front, to plan the rows."""
  from bert_jax import input_pipeline
  builder, source, tokenizer, max_seq_length, to_batch = _batcher(data_config, split, data_dir)
  features = to_batch(np.arange(len(source)))
  features.pop("example_mask")
  return input_pipeline.packed_array_iterator(
      features, token_keys=("input_ids", "token_type_ids"), example_keys=("label",),
      max_per_row=int(input_pipeline.field(data_config, "max_examples_per_row", 16)),
      dataset=f"{builder.name}:{tokenizer.vocab_hash}:{max_seq_length}", split=split,
      global_batch_size=global_batch_size, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
      process_index=process_index, process_count=process_count)


def make_iterator(data_config, *, split: str, global_batch_size: int, seed: int, shuffle: bool,
                  num_epochs: int | None, process_index: int = 0, process_count: int = 1,
                  data_dir: str | None = None, num_threads: int = 2, prefetch_batches: int = 4):
  """Batches of labelled text (int32): `input_ids`, `attention_mask`, `token_type_ids`
  [B, S] (S = data_config.max_seq_length), `label` [B], `example_mask` [B].

  Labels are passed through as stored (e.g. GLUE test splits store -1)."""
  from bert_jax import input_pipeline
  builder, source, tokenizer, max_seq_length, to_batch = _batcher(data_config, split, data_dir)
  fingerprint = input_pipeline.fingerprint(builder, split, vocab=tokenizer.vocab_hash,
                                           max_seq_length=max_seq_length)
  return input_pipeline.make_iterator(
      source, to_batch, global_batch_size=global_batch_size, seed=seed, shuffle=shuffle,
      num_epochs=num_epochs, fingerprint=fingerprint, process_index=process_index,
      process_count=process_count, num_threads=num_threads, prefetch_batches=prefetch_batches)
