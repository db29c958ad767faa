"""Masked-language-model pretraining (+ next-sentence prediction when `data.nsp`).

Batches come from a prepared corpus (`datasets.pretraining_builder`: packed token ids);
`prepare` masks them inside the step (BERT's 15% / 80-10-10, `masking.py`), keyed by each
row's global index so the masks do not depend on the device layout. `config.masking`:
mask_prob (the rate), max_predictions_per_seq, whole_word, and the split of a selected token:
mask_token_prob (0.8) to [MASK], random_token_prob (0.1) to a random id, the rest unchanged
(e.g. 0.8 / 0.0: crammed BERT's 80/20 without random tokens). The loss is the mean
cross-entropy over masked tokens (+ the mean NSP cross-entropy), with global denominators.

Batch keys: input_ids, attention_mask, token_type_ids, special_tokens_mask, word_starts
[batch, length] int32; next_sentence_label [batch] (NSP); example_mask [batch]; segment_ids
[batch, length] with `data.per_document_attention`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import losses
from bert_jax.config import BertConfig
from bert_jax.errors import ConfigError, DataError
from bert_jax.masking import MASK_PROB, RANDOM_PROB, MaskedBatch, check_split, mask_tokens
from bert_jax.tasks.base import Task, is_sum, mean, packed_inputs, rngs


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
  """BERT's corruption: `mask_prob` of eligible tokens, at most `max_predictions` per row;
  a selected token becomes [MASK] (`mask_token_prob`), a random id (`random_token_prob`) or
  stays."""

  vocab_size: int
  mask_token_id: int
  mask_prob: float = 0.15
  max_predictions: int = 20
  whole_word: bool = False
  mask_token_prob: float = MASK_PROB
  random_token_prob: float = RANDOM_PROB

  def info(self) -> dict:
    """The fields, the split only where it differs from 80/10/10 (so workdirs written before
    it was an option still resume)."""
    info = dataclasses.asdict(self)
    for key, default in (("mask_token_prob", MASK_PROB), ("random_token_prob", RANDOM_PROB)):
      if info[key] == default:
        del info[key]
    return info


def apply_masking(rng: jax.Array, batch: dict, masking: MaskingConfig,
                  axis_name: str | None = None) -> MaskedBatch:
  """Runs `mask_tokens` on a batch; rows are keyed by their global index."""
  ids = batch["input_ids"]
  masked = mask_tokens(
      rng, ids, batch["special_tokens_mask"], vocab_size=masking.vocab_size,
      mask_token_id=masking.mask_token_id, mask_prob=masking.mask_prob,
      max_predictions=masking.max_predictions,
      word_starts=batch.get("word_starts") if masking.whole_word else None,
      attention_mask=batch["attention_mask"], row_ids=losses.row_ids(ids.shape[0], axis_name),
      mask_token_prob=masking.mask_token_prob, random_token_prob=masking.random_token_prob)
  weights = masked.masked_weights * losses.example_mask(batch)[:, None]
  return masked.replace(masked_weights=weights)


@dataclasses.dataclass(frozen=True)
class Pretraining(Task):
  """MLM (+ NSP) on packed token ids."""

  masking: MaskingConfig
  nsp: bool = False

  name = "pretraining"
  measures_inference = False  # no report; its forward is the MLM head over every position

  # --- building ----------------------------------------------------------------------------

  @classmethod
  def from_config(cls, config, info: dict) -> Pretraining:
    m = config.masking
    split = (float(m.get("mask_token_prob", MASK_PROB)),
             float(m.get("random_token_prob", RANDOM_PROB)))
    try:
      check_split(*split)
    except ValueError as e:
      raise ConfigError(f"config.masking: {e}") from None
    masking = MaskingConfig(
        vocab_size=int(info["vocab_size"]), mask_token_id=int(info["mask_token_id"]),
        mask_prob=float(m.mask_prob), max_predictions=int(m.max_predictions_per_seq),
        whole_word=bool(m.whole_word), mask_token_prob=split[0], random_token_prob=split[1])
    return cls(masking=masking, nsp=bool(config.data.nsp))

  @classmethod
  def from_checkpoint_info(cls, info: dict) -> Pretraining:
    return cls(masking=MaskingConfig(**info["masking"]), nsp=bool(info["nsp"]))

  @classmethod
  def from_transformers_config(cls, path: str, hf_config: dict) -> Pretraining:
    import os

    from bert_jax.tokenizer import Tokenizer, default_vocab_file
    vocab = os.path.join(path, "vocab.txt")
    tok = Tokenizer(vocab if os.path.exists(vocab) else default_vocab_file())
    nsp = "BertForPreTraining" in (hf_config.get("architectures") or ())
    return cls(MaskingConfig(vocab_size=tok.vocab_size, mask_token_id=tok.mask_id), nsp=nsp)

  def checkpoint_info(self) -> dict:
    return {"masking": self.masking.info(), "nsp": self.nsp}

  @property
  def hf_head(self) -> str:
    return "pretraining" if self.nsp else "mlm"

  @classmethod
  def init_head(cls, config) -> str:
    """A transformers init_from gives its MLM (and NSP) head too."""
    return "pretraining" if config.data.nsp else "mlm"

  def model(self, cfg: BertConfig):
    from bert_jax.model import BertForMaskedLM, BertForPreTraining
    return BertForPreTraining(cfg) if self.nsp else BertForMaskedLM(cfg)

  def export_params(self, params: dict) -> dict:
    if self.nsp:
      return params
    # BertForMaskedLM's encoder has no pooler.
    return {**params, "bert": {k: v for k, v in params["bert"].items() if k != "pooler"}}

  # --- data --------------------------------------------------------------------------------

  @classmethod
  def data_info(cls, config) -> dict:
    return data_info(config.data, config.data.get("data_dir") or None)

  def iterator(self, config, *, split: str, global_batch_size: int, seed: int, shuffle: bool,
               num_epochs: int | None, process_index: int = 0, process_count: int = 1,
               packed: bool = False, **kwargs):
    """Batches of packed pretraining examples (int32): `input_ids`, `attention_mask`,
    `token_type_ids`, `special_tokens_mask`, `word_starts` [B, S], `next_sentence_label`
    [B] (when data.nsp), `example_mask` [B]; B = global_batch_size // process_count.

    Rows are always full; `data.per_document_attention=True` (old name: `data.packing`) gives
    them `segment_ids` (one per document), so documents sharing a row do not attend to each
    other, in training and evaluation alike (`packed`, the training-only flag, is therefore
    not read)."""
    del packed
    return make_iterator(config.data, split=split, global_batch_size=global_batch_size,
                         seed=seed, shuffle=shuffle, num_epochs=num_epochs,
                         process_index=process_index, process_count=process_count,
                         data_dir=config.data.get("data_dir") or None, **kwargs)

  # --- device ------------------------------------------------------------------------------

  @property
  def required_keys(self):
    return ("input_ids", "attention_mask", "token_type_ids", "special_tokens_mask") + (
        ("next_sentence_label",) if self.nsp else ())

  def prepare(self, rng, batch, axis_name):
    return {**batch, "masked": apply_masking(rng, batch, self.masking, axis_name)}

  def denominators(self, batch):
    counts = {"mlm_count": jnp.sum(batch["masked"].masked_weights)}
    if self.nsp:
      counts["nsp_count"] = jnp.sum(losses.example_mask(batch))
    return counts

  def forward(self, model, params, batch, *, deterministic, dropout_rng):
    masked = batch["masked"]
    out = model.apply({"params": params}, masked.input_ids, batch["attention_mask"],
                      batch["token_type_ids"], masked.masked_positions,
                      **packed_inputs(batch), deterministic=deterministic,
                      rngs=rngs(deterministic, dropout_rng))
    mlm_logits, nsp_logits = out if self.nsp else (out, None)  # [batch, P, vocab], [batch, 2]
    w = masked.masked_weights
    sums = {
        "mlm_loss_sum": jnp.sum(losses.cross_entropy(mlm_logits, masked.masked_labels) * w),
        "mlm_correct_sum": jnp.sum(losses.top1_correct(mlm_logits, masked.masked_labels) * w),
        "mlm_count": jnp.sum(w),
        "tokens_sum": jnp.sum(batch["attention_mask"]).astype(jnp.float32),
    }
    if self.nsp:
      ex, labels = losses.example_mask(batch), batch["next_sentence_label"]
      sums["nsp_loss_sum"] = jnp.sum(losses.cross_entropy(nsp_logits, labels) * ex)
      sums["nsp_correct_sum"] = jnp.sum(losses.top1_correct(nsp_logits, labels) * ex)
      sums["nsp_count"] = jnp.sum(ex)
    return sums, {}

  def loss(self, sums, denominators):
    loss = sums["mlm_loss_sum"] / jnp.maximum(denominators["mlm_count"], 1.0)
    if self.nsp:
      loss += sums["nsp_loss_sum"] / jnp.maximum(denominators["nsp_count"], 1.0)
    return loss

  # --- host --------------------------------------------------------------------------------

  def summarize(self, sums):
    out = {k: v for k, v in sums.items() if not is_sum(k)}
    out["mlm_loss"] = mean(sums, "mlm_loss_sum", "mlm_count")
    out["mlm_accuracy"] = mean(sums, "mlm_correct_sum", "mlm_count")
    out["loss"] = out["mlm_loss"]
    if "nsp_count" in sums:
      out["nsp_loss"] = mean(sums, "nsp_loss_sum", "nsp_count")
      out["nsp_accuracy"] = mean(sums, "nsp_correct_sum", "nsp_count")
      out["loss"] += out["nsp_loss"]
    out["num_tokens"] = sums.get("tokens_sum", 0.0)
    return out


  # --- prediction --------------------------------------------------------------------------

  def predict_examples(self, model, params, tokenizer, examples, *, max_length: int,
                       batch_size: int = 32, top_k: int = 5,
                       truncated: list[int] | None = None) -> list[dict]:
    """Fill-mask: examples {"text" with [MASK]s} -> per example {"text", "masks": per [MASK]
    in order, its `top_k` fillers [{"token", "probability"}], best first}.

    Runs `fill_mask_batch` (jitted, logits only at the [MASK] positions) over length buckets
    (`inference.batches`). A text without [MASK], or with one beyond the model's window, is a
    DataError; the indices of longer texts (cut to the window) go to `truncated`."""
    from bert_jax import inference
    texts = [str(e["text"]) for e in examples]
    window = min(max_length, model.config.max_position_embeddings)
    check_masks(tokenizer, texts, window)
    results = [None] * len(texts)
    for rows, enc in inference.batches(tokenizer, texts, max_length=window,
                                       batch_size=batch_size, truncated=truncated):
      ids = np.asarray(enc["input_ids"])  # [batch, length]
      found = [np.flatnonzero(row == tokenizer.mask_id) for row in ids]
      width = inference.batch_rows(max(len(f) for f in found), ids.shape[1])
      positions = np.zeros((len(ids), width), np.int32)  # [batch, P]; 0 ([CLS]) pads
      for row, f in enumerate(found):
        positions[row, :len(f)] = f
      best, probs = fill_mask_batch(model, params, *(enc[k] for k in FIELDS[:3]), positions,
                                    top_k=min(top_k, model.config.vocab_size))  # [batch, P, k]
      best, probs = np.asarray(best), np.asarray(probs)
      for row, i in enumerate(rows):
        results[i] = {"text": texts[i], "masks": [
            [{"token": t, "probability": float(p)}
             for t, p in zip(tokenizer.convert_ids_to_tokens(best[row, m].tolist()),
                             probs[row, m])]
            for m in range(len(found[row]))]}
    return results


def check_masks(tokenizer, texts: list[str], window: int) -> None:
  """DataError for a text without [MASK] or with one beyond the window's `window - 2` pieces
  ([CLS] ... [SEP]); a warning for a longer text, cut to the window."""
  from absl import logging
  for text, pieces in zip(texts, tokenizer.tokenize_to_ids(texts)):
    masks = np.flatnonzero(pieces == tokenizer.mask_id)
    if masks.size == 0:
      raise DataError(f"no [MASK] token in {text[:80]!r}")
    if len(pieces) + 2 > window:
      if masks[-1] >= window - 2:
        raise DataError(f"a [MASK] is word piece {masks[-1] + 1} of {len(pieces)}, beyond the "
                        f"model's window of {window - 2} pieces; shorten the text")
      logging.warning("input of %d word pieces truncated to the model's window of %d: %r",
                      len(pieces), window - 2, text[:60])


@functools.partial(jax.jit, static_argnums=0, static_argnames=("top_k",))
def fill_mask_batch(model, params, input_ids, attention_mask, token_type_ids, positions, *,
                    top_k: int) -> tuple[jax.Array, jax.Array]:
  """[batch, length] inputs, [batch, P] positions -> the `top_k` token ids (int32) and their
  softmax probabilities (float32), [batch, P, top_k] each, best first.

  The MLM head runs only at `positions` (gathered before the vocabulary projection, as in
  training), so a batch costs [batch, P, vocab] logits, not [batch, length, vocab]. Jitted at
  module level with the (hashable) model static: each model and shape compiles once.
  """
  out = model.apply({"params": params}, input_ids, attention_mask, token_type_ids, positions)
  logits = out[0] if isinstance(out, tuple) else out  # BertForPreTraining: (mlm, nsp)
  probs = jax.nn.softmax(logits.astype(jnp.float32), -1)  # [batch, P, vocab]
  top, best = jax.lax.top_k(probs, top_k)
  return best.astype(jnp.int32), top


TASK = Pretraining
FIELDS = ("input_ids", "attention_mask", "token_type_ids", "special_tokens_mask", "word_starts")


# --- the corpus as batches -------------------------------------------------------------------


class _PretrainingBatch:
  """[B] record indices -> the pretraining batch (records hold packed token ids)."""

  def __init__(self, source, tokenizer, max_seq_length: int, nsp: bool,
               documents: bool = False):
    self.source, self.tokenizer = source, tokenizer
    self.max_seq_length, self.nsp, self.documents = max_seq_length, nsp, documents

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
    if self.documents:
      batch["segment_ids"] = document_segments(input_ids, attention_mask,
                                               self.tokenizer.sep_id)  # [B, S]
    batch["example_mask"] = real.astype(np.int32)  # [B]
    return batch


def document_segments(input_ids: np.ndarray, attention_mask: np.ndarray, sep_id: int
                      ) -> np.ndarray:
  """Full-sentence rows `[CLS] doc1 [SEP] doc2 ... [SEP]` -> segment ids [B, S]: 1 up to and
  including the first [SEP], 2 after it, ..., 0 on padding (per-document attention)."""
  sep = (input_ids == sep_id) & (attention_mask > 0)
  after_sep = np.pad(np.cumsum(sep, axis=1)[:, :-1], ((0, 0), (1, 0)))  # [SEP]s strictly before
  return ((1 + after_sep) * (attention_mask > 0)).astype(np.int32)


def data_info(data_config, data_dir: str | None = None) -> dict:
  """Prepares the corpus if needed and describes it: name, split_sizes {split: n}, metadata
  (per split: documents, sentences and tokens read, examples written), max_seq_length, nsp,
  vocab_file, vocab_size, mask_token_id."""
  from bert_jax import datasets, input_pipeline
  from bert_jax.tokenizer import Tokenizer
  builder = datasets.pretraining_builder(data_config, data_dir)
  bc = builder.builder_config
  tokenizer = Tokenizer(bc.vocab_file)
  return {**input_pipeline.builder_info(builder, data_config.name),
          "label_names": [], "max_seq_length": bc.max_seq_length, "nsp": bc.nsp,
          "short_seq_prob": bc.short_seq_prob, "vocab_size": tokenizer.vocab_size,
          "vocab_file": tokenizer.vocab_file, "mask_token_id": tokenizer.mask_id}


def per_document_attention(data_config) -> bool:
  """`data.per_document_attention`, or its old name for pretraining, `data.packing` (which
  for fine-tuning means several examples per row, `row_packing.py`)."""
  from bert_jax import input_pipeline
  return bool(input_pipeline.field(data_config, "per_document_attention", False)
              or input_pipeline.field(data_config, "packing", False))


def make_iterator(data_config, *, split: str, global_batch_size: int, seed: int, shuffle: bool,
                  num_epochs: int | None, process_index: int = 0, process_count: int = 1,
                  data_dir: str | None = None, num_threads: int = 2, prefetch_batches: int = 4):
  """Pretraining batches of `data_config`'s corpus (see `Pretraining.iterator`)."""
  from bert_jax import datasets, input_pipeline
  from bert_jax.tokenizer import Tokenizer
  builder = datasets.pretraining_builder(data_config, data_dir)
  bc = builder.builder_config
  source = input_pipeline.data_source(builder, split)
  documents = per_document_attention(data_config)
  if documents and bc.nsp:
    raise ConfigError("data.per_document_attention=True needs full-sentence rows; "
                      "this corpus has NSP pairs (data.nsp=True)")
  to_batch = _PretrainingBatch(source, Tokenizer(bc.vocab_file), bc.max_seq_length, bc.nsp,
                               documents)
  return input_pipeline.make_iterator(
      source, to_batch, global_batch_size=global_batch_size, seed=seed, shuffle=shuffle,
      num_epochs=num_epochs,
      fingerprint={**input_pipeline.fingerprint(builder, split), "documents": documents},
      process_index=process_index, process_count=process_count, num_threads=num_threads,
      prefetch_batches=prefetch_batches)
