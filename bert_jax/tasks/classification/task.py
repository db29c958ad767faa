"""Sentence (and sentence-pair) classification: BERT + a sentence vector + linear.

The sentence vector is `config.pooling` (`model.POOLINGS`): "cls_pooler" (BERT's tanh dense
over [CLS], the default and what transformers' BertForSequenceClassification computes), "cls",
"mean" or "max" over the real tokens; it is saved with the checkpoint (`checkpoint_info`).

`config.problem_type` (transformers' names, saved with the checkpoint and exported):

  single_label_classification  softmax; mean cross-entropy; accuracy, f1 (binary: class 1,
                               else macro), matthews_corrcoef; label int32 [batch]
  regression                   one score (logits [..., 1] squeezed); mean squared error;
                               pearson, spearman, mse; label float32 [batch]
  multi_label_classification   a sigmoid per label; binary cross-entropy, the mean over labels
                               per example (torch BCEWithLogitsLoss); f1_micro, f1_macro,
                               exact_match at 0.5; label float32 multi-hot [batch, labels]

Data: `datasets.classification_builder` (Rotten Tomatoes, your CSV / JSON Lines, any prepared
TFDS dataset whose label feature fits the problem type: ClassLabel, a float scalar, a
Sequence of ClassLabel), tokenized per batch (longest-first truncation for pairs). Losses are
means over the real examples; the metrics are exact over the eval split (confusion / tp-fp-fn
sums, eval only; spearman and the exact pearson from every prediction, `host_metrics`). The
final evaluation writes report.md and predictions.jsonl.

Documents longer than `max_seq_length` pieces (`data.long_inputs`, `windows.py`): "truncate"
(the default) keeps the first pieces; "windows" reads every piece in overlapping windows
(`data.window_step` pieces between window starts, 0: half a window; pairs: windows over the
second text), each window trained with its document's label, and evaluates and predicts per
document on the mean or max (`data.window_aggregation`) of its windows' logits.

Batch keys: input_ids, attention_mask, token_type_ids [batch, length], label [batch] (multi-
label [batch, labels]), example_mask [batch]; with windows also doc_index and doc_windows
[batch] (host only). Packed (`data.packing`, training only): also
segment_ids [batch, length] and cls_positions [batch, examples]; label and example_mask become
[batch, examples] (multi-label label [batch, examples, labels]).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import losses
from bert_jax.config import BertConfig
from bert_jax.errors import ConfigError, DataError
from bert_jax.tasks import shared
from bert_jax.tasks.base import FinishedRun, Task, complete_groups, mean
from bert_jax.tasks.classification import analysis as clf_analysis
from bert_jax.tasks.classification import metrics
from bert_jax.tasks.classification import windows as clf_windows

FIELDS = ("input_ids", "attention_mask", "token_type_ids")
SINGLE, REGRESSION, MULTI = ("single_label_classification", "regression",
                             "multi_label_classification")
PROBLEM_TYPES = (SINGLE, REGRESSION, MULTI)
BEST_METRIC = {SINGLE: "accuracy", REGRESSION: "pearson", MULTI: "f1_micro"}


@dataclasses.dataclass(frozen=True)
class Classification(Task):
  """One label per text (or text pair), a score (regression), or a set of labels."""

  num_labels: int
  label_names: tuple[str, ...] = ()
  pooling: str = "cls_pooler"  # the sentence vector the classifier reads (model.POOLINGS)
  problem_type: str = SINGLE  # PROBLEM_TYPES (config.problem_type)
  long_inputs: str = "truncate"  # clf_windows.LONG_INPUTS (data.long_inputs)
  window_step: int = 0  # pieces between window starts, 0: half a window (data.window_step)
  window_aggregation: str = "mean"  # clf_windows.AGGREGATIONS (data.window_aggregation)

  name = "classification"

  def __post_init__(self):
    from bert_jax.model import POOLINGS
    if self.pooling not in POOLINGS:
      raise ConfigError(f"pooling={self.pooling!r} is not one of {', '.join(POOLINGS)} "
                        "(config.pooling)")
    if self.problem_type not in PROBLEM_TYPES:
      raise ConfigError(f"problem_type={self.problem_type!r} is not one of "
                        f"{', '.join(PROBLEM_TYPES)} (config.problem_type)")
    if self.problem_type == REGRESSION and self.num_labels != 1:
      raise ConfigError(f"problem_type='regression' has one output, not num_labels="
                        f"{self.num_labels}")
    clf_windows.check(self.long_inputs, self.window_aggregation, self.window_step)

  @property
  def windowed(self) -> bool:
    return self.long_inputs == "windows"

  @property
  def host_keys(self) -> tuple[str, ...]:
    return ("input_ids", "label") + (("doc_index", "doc_windows") if self.windowed else ())

  @property
  def host_only_keys(self) -> tuple[str, ...]:
    return ("doc_index", "doc_windows") if self.windowed else ()

  @property
  def best_metric(self) -> str:
    return BEST_METRIC[self.problem_type]

  # --- building ----------------------------------------------------------------------------

  @classmethod
  def _of(cls, label_names, pooling: str, problem_type: str, **long_inputs) -> Classification:
    names = tuple(label_names)
    return cls(num_labels=1 if problem_type == REGRESSION else len(names), label_names=names,
               pooling=pooling, problem_type=problem_type, **long_inputs)

  @classmethod
  def from_config(cls, config, info: dict) -> Classification:
    data = config.data
    return cls._of(info["label_names"], str(config.get("pooling", "cls_pooler")),
                   str(config.get("problem_type", SINGLE)),
                   long_inputs=str(data.get("long_inputs", "truncate")),
                   window_step=int(data.get("window_step", 0)),
                   window_aggregation=str(data.get("window_aggregation", "mean")))

  @classmethod
  def from_checkpoint_info(cls, info: dict) -> Classification:
    # Checkpoints written before the pooling choice pooled with cls_pooler, before the
    # problem type were single-label, and before long_inputs truncated.
    return cls._of(info["label_names"], info.get("pooling", "cls_pooler"),
                   info.get("problem_type", SINGLE),
                   **{k: info[k] for k in ("long_inputs", "window_step", "window_aggregation")
                      if k in info})

  @classmethod
  def from_transformers_config(cls, path: str, hf_config: dict) -> Classification:
    from bert_jax.hf import POOLING_KEY
    num_labels, names = _labels_of(path, hf_config)
    problem_type = hf_config.get("problem_type") or (REGRESSION if num_labels == 1 else SINGLE)
    return cls._of(() if problem_type == REGRESSION else names,
                   hf_config.get(POOLING_KEY, "cls_pooler"), problem_type)

  def checkpoint_info(self) -> dict:
    info = {"label_names": list(self.label_names), "pooling": self.pooling}
    if self.problem_type != SINGLE:  # absent = single label, as in older checkpoints
      info["problem_type"] = self.problem_type
    if self.windowed:  # absent = truncate, as in older checkpoints
      info.update(long_inputs=self.long_inputs, window_step=self.window_step,
                  window_aggregation=self.window_aggregation)
    return info

  hf_head = "classification"

  def model(self, cfg: BertConfig):
    from bert_jax.model import BertForSequenceClassification
    return BertForSequenceClassification(cfg, self.num_labels, pooling=self.pooling)

  # --- data --------------------------------------------------------------------------------

  @classmethod
  def data_info(cls, config) -> dict:
    return data_info(config.data, config.data.get("data_dir") or None,
                     problem_type=str(config.get("problem_type", SINGLE)))

  def iterator(self, config, *, split: str, global_batch_size: int, seed: int, shuffle: bool,
               num_epochs: int | None, process_index: int = 0, process_count: int = 1,
               packed: bool = False, **kwargs):
    if self.windowed:
      return window_iterator(
          config.data, split=split, global_batch_size=global_batch_size, seed=seed,
          shuffle=shuffle, num_epochs=num_epochs, process_index=process_index,
          process_count=process_count, packed=packed,
          data_dir=config.data.get("data_dir") or None, problem_type=self.problem_type,
          window_step=self.window_step)
    if packed:
      return make_packed_iterator(
          config.data, split=split, global_batch_size=global_batch_size, seed=seed,
          shuffle=shuffle, num_epochs=num_epochs, process_index=process_index,
          process_count=process_count, data_dir=config.data.get("data_dir") or None,
          problem_type=self.problem_type)
    return make_iterator(config.data, split=split, global_batch_size=global_batch_size,
                         seed=seed, shuffle=shuffle, num_epochs=num_epochs,
                         process_index=process_index, process_count=process_count,
                         data_dir=config.data.get("data_dir") or None,
                         problem_type=self.problem_type, **kwargs)

  # --- device ------------------------------------------------------------------------------

  required_keys = FIELDS + ("label",)

  def denominators(self, batch):
    return {"example_count": jnp.sum(losses.example_mask(batch))}

  def forward(self, model, params, batch, *, deterministic, dropout_rng):
    logits = shared.apply(model, params, batch, deterministic=deterministic,
                          dropout_rng=dropout_rng, cls=True)  # [batch, (examples,) labels]
    ex = losses.example_mask(batch)  # [batch] ([batch, examples] packed)
    logits = logits.astype(jnp.float32)
    if self.problem_type == REGRESSION:
      sums = _regression_sums(logits[..., 0], batch["label"], ex)
      outputs = {"scores": logits}  # [batch, 1]
    elif self.problem_type == MULTI:
      sums = _multi_label_sums(logits, batch["label"], ex, per_label=deterministic)
      outputs = {"probs": jax.nn.sigmoid(logits)}
    else:
      sums = _single_label_sums(logits, batch["label"], ex, confusion=deterministic)
      outputs = {"probs": jax.nn.softmax(logits, -1)}
    sums["example_count"] = jnp.sum(ex)
    sums["tokens_sum"] = shared.tokens_sum(batch)
    if self.windowed and deterministic:  # aggregated per document on the host
      outputs["logits"] = logits  # [batch, labels]
    return sums, outputs

  def loss(self, sums, denominators):
    return shared.mean_loss(sums, denominators, "example_count")

  # --- host --------------------------------------------------------------------------------

  def summarize(self, sums):
    out = shared.summary(sums, "example_count", "num_examples")
    if self.problem_type == REGRESSION:
      out["mse"] = out["loss"]
      out["pearson"] = metrics.pearson_from_sums(*(sums.get(k, 0.0) for k in (
          "example_count", "pred_sum", "gold_sum", "pred_sq_sum", "gold_sq_sum",
          "pred_gold_sum")))
    elif self.problem_type == MULTI:
      counts = [sums.get(f"label_{c}_sum", 0.0) for c in ("tp", "fp", "fn")]
      out["f1_micro"] = metrics.f1_micro(*counts)
      out["exact_match"] = mean(sums, "exact_match_sum", "example_count")
      if "label_tp_0_sum" in sums:  # eval: per-label counts
        per_label = [[sums[f"label_{c}_{j}_sum"] for j in range(self.num_labels)]
                     for c in ("tp", "fp", "fn")]
        out["f1_macro"] = metrics.f1_macro(*(np.array(x) for x in per_label))
    else:
      out["accuracy"] = mean(sums, "correct_sum", "example_count")
      if "confusion_0_0_sum" in sums:  # eval: the confusion matrix
        n = self.num_labels
        confusion = np.array([[sums[f"confusion_{g}_{p}_sum"] for p in range(n)]
                              for g in range(n)])
        out["f1"] = metrics.f1(confusion)
        out["matthews_corrcoef"] = metrics.matthews_corrcoef(confusion)
    return out

  def documents(self, outputs, rows) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Windows: (documents [D], their aggregated logits [D, labels], labels [D] ([D, labels]
    multi-label), windows read) of an evaluation's window rows; documents whose windows an
    evaluation cut short (`num_eval_batches`) are left out."""
    rows, outputs = complete_groups(rows, outputs, "doc_index", "doc_windows")
    docs, logits = clf_windows.aggregate(outputs["logits"], rows["doc_index"],
                                         self.window_aggregation)
    _, first = np.unique(rows["doc_index"], return_index=True)  # [D] each document's first row
    return docs, logits, rows["label"][first], len(rows["doc_index"])

  def host_metrics(self, config, outputs, rows):
    """Regression: pearson (exact, float64), spearman and mse from every prediction. Windows:
    every metric per document, on its aggregated logits (`documents`), and num_windows."""
    del config
    if self.windowed and "logits" in outputs:
      _, logits, labels, num_windows = self.documents(outputs, rows)
      out = clf_windows.document_metrics(self.problem_type, logits, labels, self.num_labels)
      return {**out, "num_windows": float(num_windows)}
    if self.problem_type != REGRESSION or "scores" not in outputs:
      return {}
    scores, gold = outputs["scores"][:, 0], rows["label"]
    return {"pearson": metrics.pearson(scores, gold), "spearman": metrics.spearman(scores, gold),
            "mse": metrics.mse(scores, gold)}

  def finish(self, run: FinishedRun) -> list[str]:
    from bert_jax import report
    data = run.config.data
    split = _batcher(data, data.eval_split, data.get("data_dir") or None, self.problem_type)
    if self.windowed:  # per document: its text, label and aggregated prediction
      docs, logits, labels, _ = self.documents(run.outputs, run.rows)
      texts, pairs, _ = _records_text(split, docs)
      pieces = split.tokenizer.tokenize_to_ids(
          texts if pairs is None else [f"{a} {b}" for a, b in zip(texts, pairs)])
      texts = [split.tokenizer.decode(ids) for ids in pieces]
      key = "scores" if self.problem_type == REGRESSION else "probs"
      outputs = {key: clf_windows.activate(logits, self.problem_type)}
      features, stats = split_windows(data, data.eval_split, data.get("data_dir") or None,
                                      self.problem_type, self.window_step)
      windows = features["doc_windows"][np.searchsorted(features["doc_index"], docs)]  # [D]
      stats = {"num_documents": len(docs), "num_windows": int(windows.sum()),
               "num_windowed": int(np.sum(windows > 1)),
               "num_truncated": int(np.isin(stats["truncated"], docs).sum())}
    else:
      texts = [run.tokenizer.decode(ids) for ids in run.rows["input_ids"]]
      labels, outputs = run.rows["label"], run.outputs
      stats = _truncated_stats(split, len(texts))
    analysis, lines = self._analysis(texts, labels, outputs)
    analysis["long_inputs"] = {"long_inputs": self.long_inputs,
                               "window_aggregation": self.window_aggregation,
                               "max_seq_length": split.max_seq_length, **stats}
    predictions = report.write_lines(os.path.join(run.workdir, "predictions.jsonl"), lines)
    md = report.write_report(
        run, analysis=analysis, failure_lines=clf_analysis.failure_lines(analysis),
        examples=[(report.EXAMPLE_SINGLE, None), report.EXAMPLE_PAIR])
    return [md, predictions]

  def _analysis(self, texts, labels, outputs) -> tuple[dict, Any]:
    """(the failure analysis, the predictions.jsonl lines) of evaluated texts."""
    names = list(self.label_names)
    if self.problem_type == REGRESSION:
      scores = outputs["scores"][:, 0]
      analysis = clf_analysis.regression_analysis(texts, labels, scores)
      lines = (json.dumps({"text": t, "label": float(g), "predicted": round(float(p), 6)})
               for t, g, p in zip(texts, labels, scores))
    elif self.problem_type == MULTI:
      probs = outputs["probs"]
      analysis = clf_analysis.multi_label_analysis(texts, labels, probs, names)
      lines = (json.dumps(
          {"text": t, "labels": [names[j] for j in np.flatnonzero(g > 0.5)],
           "predicted": [names[j] for j in np.flatnonzero(p > metrics.THRESHOLD)],
           "probabilities": {n: round(float(x), 6) for n, x in zip(names, p)}})
          for t, g, p in zip(texts, labels, probs))
    else:
      probs = outputs["probs"]
      analysis = clf_analysis.error_analysis(texts, labels, probs, names)
      lines = (json.dumps(
          {"text": t, "label": names[int(g)], "predicted": names[int(p.argmax())],
           "probability": round(float(p.max()), 6)}) for t, g, p in zip(texts, labels, probs))
    return analysis, lines

  # --- prediction --------------------------------------------------------------------------

  def predict(self, model, params, tokenizer, texts: list[str], *, max_length: int,
              batch_size: int = 64, truncated: list[int] | None = None,
              pairs: list[str] | None = None) -> np.ndarray:
    """Texts (and their `pairs`) -> probabilities [n, num_labels] (single label), scores
    [n, 1] (regression) or sigmoid probabilities [n, num_labels] (multi-label); length buckets
    and `truncated`: see `inference.batches`. Windows: per text, of its windows' aggregated
    logits (`truncated` gets the texts that lost pieces, `clf_windows.encode`)."""
    from bert_jax import inference
    if self.windowed:
      features, stats = clf_windows.encode(tokenizer, texts, pairs, max_seq_length=max_length,
                                           window_step=self.window_step)
      if truncated is not None:
        truncated.extend(stats["truncated"])
      logits = np.zeros((len(features["input_ids"]), self.num_labels), np.float32)
      for rows, batch in inference.feature_batches(features, batch_size=batch_size):
        out = predict_batch(model, params, *(batch[k] for k in FIELDS), problem_type=None)
        logits[rows] = np.asarray(out)[:len(rows)]
      _, logits = clf_windows.aggregate(logits, features["doc_index"], self.window_aggregation)
      return clf_windows.activate(logits, self.problem_type).reshape(len(texts), -1)
    probs = np.zeros((len(texts), self.num_labels), np.float32)
    for rows, enc in inference.batches(tokenizer, texts, pairs, max_length=max_length,
                                       batch_size=batch_size, truncated=truncated):
      out = predict_batch(model, params, *(enc[k] for k in FIELDS),
                          problem_type=self.problem_type)  # [batch, labels]
      probs[rows] = np.asarray(out)[:len(rows)]
    return probs

  def predict_examples(self, model, params, tokenizer, examples, *, max_length: int,
                       batch_size: int = 32, top_k: int = 5,
                       truncated: list[int] | None = None) -> list[dict]:
    """Examples {"text", optional "text_pair"} -> per example {"label", "probability",
    "probabilities" {label: p}}; regression {"score"}; multi-label {"labels" (those over
    0.5), "probabilities" {label: p}} (`predict`'s numbers, as Python floats)."""
    del top_k
    texts = [str(e["text"]) for e in examples]
    with_pair = ["text_pair" in e for e in examples]
    if any(with_pair) and not all(with_pair):
      raise DataError(f"example {with_pair.index(not with_pair[0]) + 1} differs from the "
                      "first in having a \"text_pair\": give one to every example or to none")
    pairs = [str(e["text_pair"]) for e in examples] if all(with_pair) and examples else None
    probs = self.predict(model, params, tokenizer, texts, max_length=max_length,
                         batch_size=batch_size, truncated=truncated, pairs=pairs)
    names = list(self.label_names) or [str(i) for i in range(probs.shape[-1])]
    out = []
    for p in probs.tolist():
      if self.problem_type == REGRESSION:
        out.append({"score": p[0]})
        continue
      by_name = dict(zip(names, p))
      if self.problem_type == MULTI:
        out.append({"labels": [n for n, q in by_name.items() if q > metrics.THRESHOLD],
                    "probabilities": by_name})
      else:
        best = int(np.argmax(p))
        out.append({"label": names[best], "probability": p[best], "probabilities": by_name})
    return out


def _single_label_sums(logits, label, ex, confusion: bool) -> dict:
  """Cross-entropy and hits; with `confusion` (eval) the confusion matrix as scalar sums
  `confusion_<gold>_<predicted>_sum` (steps.accumulate_metrics adds scalars only)."""
  sums = {"loss_sum": jnp.sum(losses.cross_entropy(logits, label) * ex),
          "correct_sum": jnp.sum(losses.top1_correct(logits, label) * ex)}
  if confusion:
    n = logits.shape[-1]
    gold = jax.nn.one_hot(label, n) * ex[..., None]  # [..., L] (a -1 label: zeros)
    pred = jax.nn.one_hot(jnp.argmax(logits, -1), n)  # [..., L]
    matrix = jnp.einsum("...g,...p->gp", gold, pred)  # [L, L]
    sums.update({f"confusion_{g}_{p}_sum": matrix[g, p] for g in range(n) for p in range(n)})
  return sums


def _regression_sums(scores, label, ex) -> dict:
  """[batch, (examples)] scores and float labels -> squared error and the Pearson sums."""
  gold = label.astype(jnp.float32)
  squared = losses.squared_error(scores, gold) * ex
  return {"loss_sum": jnp.sum(squared), "squared_error_sum": jnp.sum(squared),
          "pred_sum": jnp.sum(scores * ex), "gold_sum": jnp.sum(gold * ex),
          "pred_sq_sum": jnp.sum(scores * scores * ex), "gold_sq_sum": jnp.sum(gold * gold * ex),
          "pred_gold_sum": jnp.sum(scores * gold * ex)}


def _multi_label_sums(logits, label, ex, per_label: bool) -> dict:
  """[..., L] logits and multi-hot labels -> BCE and tp/fp/fn (per label with `per_label`)."""
  gold = label.astype(jnp.float32)
  pred = (jax.nn.sigmoid(logits) > metrics.THRESHOLD).astype(jnp.float32)  # [..., L]
  w = ex[..., None]
  tp, fp, fn = (jnp.sum(x * w, axis=tuple(range(x.ndim - 1)))  # [L]
                for x in (pred * gold, pred * (1 - gold), (1 - pred) * gold))
  sums = {"loss_sum": jnp.sum(losses.binary_cross_entropy(logits, gold) * ex),
          "label_tp_sum": jnp.sum(tp), "label_fp_sum": jnp.sum(fp), "label_fn_sum": jnp.sum(fn),
          "exact_match_sum": jnp.sum(jnp.all(pred == gold, -1) * ex)}
  if per_label:
    for j in range(logits.shape[-1]):
      sums.update({f"label_tp_{j}_sum": tp[j], f"label_fp_{j}_sum": fp[j],
                   f"label_fn_{j}_sum": fn[j]})
  return sums


@functools.partial(jax.jit, static_argnums=0, static_argnames=("problem_type",))
def predict_batch(model, params, input_ids, attention_mask, token_type_ids,
                  problem_type: str | None = SINGLE) -> jax.Array:
  """[batch, length] -> float32 [batch, labels]: softmax probabilities (single label), the
  raw scores [batch, 1] (regression) or sigmoid probabilities (multi-label); the logits for
  `problem_type=None` (windows, aggregated before the activation).

  Jitted at module level with the (hashable) model static, so each model and batch shape
  compiles once per process; a `jax.jit` made inside `predict` compiled on every call.
  """
  logits = model.apply({"params": params}, input_ids, attention_mask,
                       token_type_ids).astype(jnp.float32)
  if problem_type in (REGRESSION, None):
    return logits
  if problem_type == MULTI:
    return jax.nn.sigmoid(logits)
  return jax.nn.softmax(logits, -1)


TASK = Classification


def _labels_of(path: str, hf_config: dict) -> tuple[int, tuple[str, ...]]:
  """(num_labels, names) from a transformers config.json's id2label."""
  from bert_jax.hf import id2label_names
  names = tuple(id2label_names(path, hf_config, "a fine-tuned classifier"))
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
    raise ConfigError(f"{builder.name}: no feature {missing[0]!r} (features: "
                      f"{sorted(builder.info.features)}); set data.text_key / "
                      f"data.text_pair_key / data.label_key")
  return keys


class _ClassificationBatch:
  """[B] record indices -> the classification batch (texts tokenized here)."""

  def __init__(self, source, tokenizer, max_seq_length: int, text_key: str,
               text_pair_key: str, label_key: str, problem_type: str = SINGLE,
               num_labels: int = 0):
    self.source, self.tokenizer, self.max_seq_length = source, tokenizer, max_seq_length
    self.text_key, self.text_pair_key, self.label_key = text_key, text_pair_key, label_key
    self.problem_type, self.num_labels = problem_type, num_labels

  def _labels(self, records, n: int, real: np.ndarray) -> np.ndarray:
    """int32 [n] ids, float32 [n] scores or float32 multi-hot [n, num_labels]."""
    if self.problem_type == MULTI:
      label = np.zeros((n, self.num_labels), np.float32)
      for row, r in zip(np.flatnonzero(real), records):
        label[row, np.asarray(r[self.label_key], np.int64)] = 1.0
      return label
    if self.problem_type == REGRESSION:
      label = np.zeros(n, np.float32)
      label[real] = [float(r[self.label_key]) for r in records]
      return label
    label = np.zeros(n, np.int32)
    label[real] = [int(r[self.label_key]) for r in records]
    return label

  def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    from bert_jax.input_pipeline import text
    real = indices >= 0
    records = self.source.__getitems__([int(i) for i in indices[real]])
    batch = {k: np.zeros((len(indices), self.max_seq_length), np.int32) for k in FIELDS}
    if records:
      texts = [text(r[self.text_key]) for r in records]
      pairs = [text(r[self.text_pair_key]) for r in records] if self.text_pair_key else None
      encoded = self.tokenizer.encode_batch(texts, pairs, max_length=self.max_seq_length)
      for k in FIELDS:
        batch[k][real] = encoded[k]  # [B, S]
    batch["label"] = self._labels(records, len(indices), real)  # [B] ([B, L] multi-label)
    batch["example_mask"] = real.astype(np.int32)  # [B]
    return batch


def _describe(feature) -> str:
  import tensorflow_datasets as tfds
  if isinstance(feature, tfds.features.ClassLabel):
    return f"a ClassLabel {list(feature.names)}"
  if isinstance(feature, tfds.features.Sequence):
    return f"a Sequence of {_describe(feature.feature)}"
  if isinstance(feature, tfds.features.Tensor):
    return f"a {np.dtype(feature.np_dtype).name} tensor of shape {feature.shape}"
  return f"a {type(feature).__name__}"


def label_names_of(builder, label_key: str, problem_type: str = SINGLE) -> list[str]:
  """The label names of a dataset's label feature, checked against the problem type:
  ClassLabel (single label), a float scalar (regression: no names), Sequence(ClassLabel)
  (multi-label). ConfigError when the feature does not fit."""
  import tensorflow_datasets as tfds
  label = builder.info.features[label_key]
  if problem_type == REGRESSION:
    ok = (isinstance(label, tfds.features.Tensor) and tuple(label.shape) == ()
          and not isinstance(label, tfds.features.ClassLabel)
          and np.issubdtype(np.dtype(label.np_dtype), np.floating))
    names = []
  elif problem_type == MULTI:
    ok = (isinstance(label, tfds.features.Sequence)
          and isinstance(label.feature, tfds.features.ClassLabel))
    names = list(label.feature.names) if ok else []
  else:
    ok = hasattr(label, "names")
    names = list(label.names) if ok else []
  if not ok:
    want = {REGRESSION: "a float scalar", MULTI: "a Sequence of ClassLabel"}.get(
        problem_type, "a ClassLabel")
    raise ConfigError(f"problem_type={problem_type!r} but {builder.name} label "
                      f"{label_key!r} is {_describe(label)} (needs {want}; set "
                      "config.problem_type)")
  return names


def data_info(data_config, data_dir: str | None = None, *, problem_type: str = SINGLE) -> dict:
  """Prepares the labelled dataset if needed and describes it: name, split_sizes
  {split: n}, label_names ([] for regression), max_seq_length, vocab_file, vocab_size."""
  from bert_jax import datasets, input_pipeline
  from bert_jax.tokenizer import Tokenizer
  builder = datasets.classification_builder(data_config, data_dir, problem_type=problem_type)
  names = label_names_of(builder, _keys(data_config, builder)[2], problem_type)
  tokenizer = Tokenizer(input_pipeline.field(data_config, "vocab_file", ""))
  slices = (input_pipeline.field(data_config, "train_split", "train"),
            input_pipeline.field(data_config, "eval_split", ""))
  return {**input_pipeline.builder_info(builder, data_config.name, slices),
          "label_names": names,
          "max_seq_length": int(input_pipeline.field(data_config, "max_seq_length", 128)),
          "vocab_size": tokenizer.vocab_size, "vocab_file": tokenizer.vocab_file}


class _Split(NamedTuple):
  """A split's records and how they become batches (`_batcher`)."""
  builder: Any                # the TFDS builder
  source: Any                 # its random-access records of the split
  tokenizer: Any
  max_seq_length: int
  to_batch: _ClassificationBatch  # record indices -> a padded batch


def _batcher(data_config, split: str, data_dir: str | None, problem_type: str = SINGLE
             ) -> _Split:
  """The split's records, tokenizer and batch function."""
  from bert_jax import datasets, input_pipeline
  from bert_jax.tokenizer import Tokenizer
  builder = datasets.classification_builder(data_config, data_dir, problem_type=problem_type)
  source = input_pipeline.data_source(builder, split)
  tokenizer = Tokenizer(input_pipeline.field(data_config, "vocab_file", ""))
  max_seq_length = int(input_pipeline.field(data_config, "max_seq_length", 128))
  keys = _keys(data_config, builder)
  num_labels = len(label_names_of(builder, keys[2], problem_type)) if problem_type == MULTI else 0
  to_batch = _ClassificationBatch(source, tokenizer, max_seq_length, *keys,
                                  problem_type=problem_type, num_labels=num_labels)
  return _Split(builder, source, tokenizer, max_seq_length, to_batch)


def make_packed_iterator(data_config, *, split: str, global_batch_size: int, seed: int,
                         shuffle: bool, num_epochs: int | None, process_index: int = 0,
                         process_count: int = 1, data_dir: str | None = None,
                         problem_type: str = SINGLE):
  """Packed batches (`row_packing`): rows of max_seq_length holding up to
  `data.max_examples_per_row` whole examples; `label` (multi-label: [.., labels]),
  `cls_positions`, `example_mask` [B, max_examples_per_row]. The split is tokenized once, up
  front, to plan the rows."""
  from bert_jax import input_pipeline
  builder, source, tokenizer, max_seq_length, to_batch = _batcher(
      data_config, split, data_dir, problem_type)
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
                  data_dir: str | None = None, num_threads: int = 2, prefetch_batches: int = 4,
                  problem_type: str = SINGLE):
  """Batches of labelled text: `input_ids`, `attention_mask`, `token_type_ids` [B, S] int32
  (S = data_config.max_seq_length), `label` [B] (int32; regression float32; multi-label
  float32 multi-hot [B, labels]), `example_mask` [B].

  Labels are passed through as stored (e.g. GLUE test splits store -1)."""
  from bert_jax import input_pipeline
  builder, source, tokenizer, max_seq_length, to_batch = _batcher(
      data_config, split, data_dir, problem_type)
  fingerprint = input_pipeline.fingerprint(builder, split, vocab=tokenizer.vocab_hash,
                                           max_seq_length=max_seq_length)
  return input_pipeline.make_iterator(
      source, to_batch, global_batch_size=global_batch_size, seed=seed, shuffle=shuffle,
      num_epochs=num_epochs, fingerprint=fingerprint, process_index=process_index,
      process_count=process_count, num_threads=num_threads, prefetch_batches=prefetch_batches)


def _records_text(split: _Split, indices) -> tuple[list[str], list[str] | None, list]:
  """(texts, pairs or None, records) of the split's records at `indices`."""
  from bert_jax.input_pipeline import text
  b = split.to_batch
  records = b.source.__getitems__([int(i) for i in indices]) if len(indices) else []
  texts = [text(r[b.text_key]) for r in records]
  pairs = [text(r[b.text_pair_key]) for r in records] if b.text_pair_key else None
  return texts, pairs, records


def _truncated_stats(split: _Split, n: int) -> dict:
  """Truncate mode: how many of the split's first `n` records (the evaluated ones, in eval
  order) are longer than max_seq_length pieces ([CLS] and [SEP]s included)."""
  texts, pairs, _ = _records_text(split, np.arange(n))
  lengths = np.array([len(x) + 2 for x in split.tokenizer.tokenize_to_ids(texts)], np.int64)
  if pairs is not None:
    lengths += [len(x) + 1 for x in split.tokenizer.tokenize_to_ids(pairs)]
  return {"num_documents": n, "num_truncated": int(np.sum(lengths > split.max_seq_length)),
          "num_windowed": 0, "num_windows": n}


_WINDOWS: dict[str, tuple[dict, dict]] = {}  # split_windows's cache, a few splits


def split_windows(data_config, split: str, data_dir: str | None, problem_type: str = SINGLE,
                  window_step: int = 0) -> tuple[dict[str, np.ndarray], dict]:
  """(features, stats) of a split's documents in windows (`clf_windows.encode`), with each
  window's `label` (its document's; [N], multi-label [N, labels]). Cached per split and
  settings: every evaluation reads the eval split again."""
  from bert_jax import input_pipeline
  parts = _batcher(data_config, split, data_dir, problem_type)
  key = json.dumps([input_pipeline.fingerprint(
      parts.builder, split, vocab=parts.tokenizer.vocab_hash,
      max_seq_length=parts.max_seq_length), str(parts.builder.data_dir), problem_type,
      window_step], sort_keys=True, default=str)
  if key not in _WINDOWS:
    texts, pairs, records = _records_text(parts, np.arange(len(parts.source)))
    features, stats = clf_windows.encode(parts.tokenizer, texts, pairs,
                                         max_seq_length=parts.max_seq_length,
                                         window_step=window_step)
    labels = parts.to_batch._labels(records, len(records), np.ones(len(records), bool))
    features["label"] = labels[features["doc_index"]]  # [N] ([N, labels])
    while len(_WINDOWS) >= 4:
      _WINDOWS.pop(next(iter(_WINDOWS)))
    _WINDOWS[key] = (features, stats)
  return _WINDOWS[key]


def window_iterator(data_config, *, split: str, global_batch_size: int, seed: int,
                    shuffle: bool, num_epochs: int | None, process_index: int = 0,
                    process_count: int = 1, packed: bool = False, data_dir: str | None = None,
                    problem_type: str = SINGLE, window_step: int = 0):
  """Batches of windows (`data.long_inputs="windows"`): `make_iterator`'s keys plus doc_index
  and doc_windows [B]; packed (training): `make_packed_iterator`'s, the windows as examples."""
  from bert_jax import input_pipeline
  features, _ = split_windows(data_config, split, data_dir, problem_type, window_step)
  common = dict(dataset=f"{data_config.name}:windows", split=split,
                global_batch_size=global_batch_size, seed=seed, shuffle=shuffle,
                num_epochs=num_epochs, process_index=process_index, process_count=process_count)
  if packed:
    return input_pipeline.packed_array_iterator(
        {k: features[k] for k in FIELDS + ("label",)},
        token_keys=("input_ids", "token_type_ids"), example_keys=("label",),
        max_per_row=int(input_pipeline.field(data_config, "max_examples_per_row", 16)),
        **common)
  return input_pipeline.array_iterator(features, **common)
