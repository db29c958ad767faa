"""Token classification (named-entity recognition): a label for every word, BERT + linear.

Data: CoNLL-format files (one token a line, the tag column chosen by `data.tag_column`,
default the last; `-DOCSTART-` skipped) or JSON Lines `{"tokens": [...], "tags": [...]}` from
`data.train_file` / `data.eval_file` (`data.name="local_tagged"`), or a TFDS dataset by name
(e.g. `conll2003`, online only). Tags are IOB2 (IOB1 files are converted); the label list
comes from the training file in a fixed order (O, then B-/I- per type) and is saved with
every checkpoint; an eval tag unseen in training is a one-line error.

Words become word pieces; every piece is labelled (`data.label_all_pieces`, the default: a
word's later pieces continue its entity as `I-X`), so an export gives the same entities under
transformers' `aggregation_strategy="simple"` as under "first"; prediction reads each word's
first piece. `data.label_all_pieces=False` trains the first piece only (google-research/bert's
choice: dev F1 0.31 vs 0.52 after 100 MiniLM steps, 0.833 vs 0.830 after 500; 20 of 200
dev sentences then differ under "simple"; docs/RESULTS_tasks.md). Sentences longer
than `max_seq_length` are split into overlapping windows at word boundaries; each word is
predicted by the window where it has the most context (google-research/bert's max-context
rule, `ner_windows.encode`), so no word is dropped at evaluation. Loss: the mean cross-entropy over
labelled pieces only. Reported: entity-level precision / recall / F1 (seqeval, CoNLL
conventions), `word_accuracy` (the share of words tagged right; `accuracy` is the same
number under its old name, kept as an alias; classification's `accuracy` is per example,
`piece_accuracy` is per labelled piece); the final evaluation writes predictions.conll
(`word gold predicted`, conlleval's format) and report.md.

Batch keys: input_ids, attention_mask, token_type_ids, labels, label_mask [batch, length];
word_ids, predict_mask [batch, length], sentence_index and sentence_windows [batch] stay on
the host. Packed training rows (`data.packing`) add segment_ids and drop the host keys.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import losses
from bert_jax.config import BertConfig
from bert_jax.tasks import shared
from bert_jax.tasks.base import FinishedRun, Task, complete_groups, group_sizes, split_file
from bert_jax.tasks.token_classification import conll
from bert_jax.tasks.token_classification import metrics as ner_metrics
from bert_jax.tasks.token_classification import windows as ner_windows

HOST_KEYS = ("word_ids", "predict_mask", "sentence_index", "sentence_windows", "labels")


@dataclasses.dataclass(frozen=True)
class TokenClassification(Task):
  """One IOB2 tag per word."""

  label_names: tuple[str, ...]
  label_all_pieces: bool = True

  name = "token_classification"
  best_metric = "f1"
  host_keys = HOST_KEYS
  host_only_keys = ("word_ids", "predict_mask", "sentence_index", "sentence_windows")
  hf_head = "token_classification"
  required_keys = ("input_ids", "attention_mask", "token_type_ids", "labels", "label_mask")

  # --- building ----------------------------------------------------------------------------

  @classmethod
  def from_config(cls, config, info: dict) -> TokenClassification:
    return cls(tuple(info["label_names"]), bool(config.data.get("label_all_pieces", True)))

  @classmethod
  def from_checkpoint_info(cls, info: dict) -> TokenClassification:
    # A checkpoint from before the key was recorded trained first pieces only.
    return cls(tuple(info["label_names"]), bool(info.get("label_all_pieces", False)))

  @classmethod
  def from_transformers_config(cls, path: str, hf_config: dict) -> TokenClassification:
    from bert_jax.hf import id2label_names
    return cls(tuple(id2label_names(path, hf_config, "a token classifier")))

  def checkpoint_info(self) -> dict:
    return {"label_names": list(self.label_names), "label_all_pieces": self.label_all_pieces}

  def model(self, cfg: BertConfig):
    from bert_jax.model import BertForTokenClassification
    return BertForTokenClassification(cfg, len(self.label_names))

  # --- data --------------------------------------------------------------------------------

  @classmethod
  def data_info(cls, config) -> dict:
    from bert_jax.tokenizer import Tokenizer
    data = config.data
    train = read_split(data, data.train_split)
    label_names = conll.label_list(train)
    evaluation = read_split(data, data.eval_split)
    conll.check_eval_labels(evaluation, label_names, _source(data, data.eval_split))
    tokenizer = Tokenizer(data.get("vocab_file") or "")
    return {"name": data.name, "label_names": label_names,
            "split_sizes": {data.train_split: len(train), data.eval_split: len(evaluation)},
            "max_seq_length": int(data.max_seq_length), "vocab_size": tokenizer.vocab_size,
            "vocab_file": tokenizer.vocab_file}

  def features(self, config, split: str) -> tuple[dict[str, np.ndarray], dict]:
    """(features, stats) of a split: `ner_windows.encode` windows (cached per file and settings)."""
    data = config.data
    return _features(_source(data, split), split, _reader_args(data),
                     data.get("vocab_file") or "", self.label_names, int(data.max_seq_length),
                     self.label_all_pieces)

  def iterator(self, config, *, split: str, global_batch_size: int, seed: int, shuffle: bool,
               num_epochs: int | None, process_index: int = 0, process_count: int = 1,
               packed: bool = False):
    from bert_jax import input_pipeline
    features, _ = self.features(config, split)
    if packed:  # training rows: the host-only keys (word ids, sentence index) are not needed
      return input_pipeline.packed_array_iterator(
          features, token_keys=("input_ids", "token_type_ids", "labels", "label_mask"),
          max_per_row=int(config.data.get("max_examples_per_row", 16)),
          dataset=_source(config.data, split), split=split,
          global_batch_size=global_batch_size, seed=seed, shuffle=shuffle,
          num_epochs=num_epochs, process_index=process_index, process_count=process_count)
    return input_pipeline.array_iterator(
        features, dataset=_source(config.data, split), split=split,
        global_batch_size=global_batch_size, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
        process_index=process_index, process_count=process_count)

  # --- device ------------------------------------------------------------------------------

  def denominators(self, batch):
    return {"label_count": jnp.sum(_label_weights(batch))}

  def forward(self, model, params, batch, *, deterministic, dropout_rng):
    logits = shared.apply(model, params, batch, deterministic=deterministic,
                          dropout_rng=dropout_rng)  # [batch, length, labels]
    w = _label_weights(batch)  # [batch, length]
    sums = {
        "loss_sum": jnp.sum(losses.cross_entropy(logits, batch["labels"]) * w),
        "correct_sum": jnp.sum(losses.top1_correct(logits, batch["labels"]) * w),
        "label_count": jnp.sum(w),
        "tokens_sum": shared.tokens_sum(batch),
    }
    probs = jax.nn.softmax(logits.astype(jnp.float32), -1)
    outputs = {"pred": jnp.argmax(probs, -1).astype(jnp.int32),  # [batch, length]
               "score": jnp.max(probs, -1)}
    return sums, outputs

  def loss(self, sums, denominators):
    return shared.mean_loss(sums, denominators, "label_count")

  # --- host --------------------------------------------------------------------------------

  def summarize(self, sums):
    return shared.summary(sums, "label_count", "num_labelled_pieces",
                          piece_accuracy="correct_sum")

  def word_tags(self, outputs: dict, rows: dict) -> tuple[list, list, list]:
    """(gold tags, predicted tags, predicted scores) per word of each evaluated sentence."""
    rows, outputs = complete_groups(rows, outputs, "sentence_index", "sentence_windows")
    n = int(rows["sentence_index"].max()) + 1 if len(rows["sentence_index"]) else 0
    pred, scores = ner_windows.merge(rows, outputs["pred"], outputs["score"], n)
    gold, _ = ner_windows.merge(rows, rows["labels"], outputs["score"], n)
    names = self.label_names
    return ([[names[i] for i in s] for s in gold], [[names[i] for i in s] for s in pred],
            scores)

  def host_metrics(self, config, outputs, rows):
    gold, pred, _ = self.word_tags(outputs, rows)
    m = ner_metrics.metrics(gold, pred)
    out = {k: m[k] for k in ("f1", "precision", "recall", "word_accuracy")}
    out["accuracy"] = out["word_accuracy"]  # the name before word_accuracy; kept as an alias
    out.update({f"f1_{t}": v["f1"] for t, v in m["per_type"].items()})
    out["num_sentences"] = float(len(gold))
    return out

  def finish(self, run: FinishedRun) -> list[str]:
    from bert_jax import report
    data = run.config.data
    sentences = read_split(data, data.eval_split)
    gold, pred, scores = self.word_tags(run.outputs, run.rows)
    sentences = sentences[:len(pred)]
    conll_path = ner_metrics.write_conll(os.path.join(run.workdir, "predictions.conll"), sentences,
                                         pred) or os.path.join(run.workdir, "predictions.conll")
    analysis = ner_metrics.error_analysis(sentences, gold, pred, scores)
    _, stats = self.features(run.config, data.eval_split)
    analysis["windows"] = stats
    example = " ".join(sentences[0].words) if sentences else "EU rejects German call."
    md = report.write_report(run, analysis=analysis, failure_lines=failure_lines(analysis),
                             examples=[(example, None)])
    return [md, conll_path]

  # --- prediction --------------------------------------------------------------------------

  def tag(self, model, params, tokenizer, texts: list[str], *, max_length: int,
          batch_size: int = 32) -> list[list[dict]]:
    """Raw text lines -> per line, entities {type, text, start, end, score} (char offsets)."""
    from bert_jax import inference
    split = [ner_windows.words_with_spans(t) for t in texts]
    features, _ = ner_windows.encode([conll.Sentence(tuple(w)) for w, _ in split], tokenizer, None,
                                     max_seq_length=max_length)
    pred = np.zeros(features["input_ids"].shape, np.int32)
    score = np.zeros(features["input_ids"].shape, np.float32)
    for rows, batch in inference.feature_batches(features, batch_size=batch_size):
      p, s = tag_batch(model, params, *(batch[k] for k in inference.FIELDS))  # [batch, len]
      length = p.shape[1]
      pred[rows, :length] = np.asarray(p)[:len(rows)]
      score[rows, :length] = np.asarray(s)[:len(rows)]
    word_pred, word_scores = ner_windows.merge(features, pred, score, len(texts))
    out = []
    for text, (words, spans), ids, sc in zip(texts, split, word_pred, word_scores):
      tags = [self.label_names[i] for i in ids]
      ents = ner_metrics.entities(tags, spans, sc)
      out.append([{"type": e["type"], "text": text[e["start"]:e["end"]], "start": e["start"],
                   "end": e["end"], "score": round(float(e["score"]), 4)} for e in ents])
    return out

  def predict_examples(self, model, params, tokenizer, examples, *, max_length: int,
                       batch_size: int = 32, top_k: int = 5,
                       truncated: list[int] | None = None) -> list[dict]:
    """Examples {"text"} -> per example {"text", "entities"} (`tag`); long lines are split
    into windows, never cut, so `truncated` stays empty."""
    del top_k, truncated
    texts = [str(e["text"]) for e in examples]
    entities = self.tag(model, params, tokenizer, texts, max_length=max_length,
                        batch_size=batch_size)
    return [{"text": t, "entities": ents} for t, ents in zip(texts, entities)]


@functools.partial(jax.jit, static_argnums=0)
def tag_batch(model, params, input_ids, attention_mask, token_type_ids
              ) -> tuple[jax.Array, jax.Array]:
  """[batch, length] -> (label ids, their probabilities) [batch, length] each.

  Jitted at module level with the (hashable) model static, so each model and batch shape
  compiles once per process; a `jax.jit` made inside `tag` compiled on every call.
  """
  logits = model.apply({"params": params}, input_ids, attention_mask, token_type_ids)
  probs = jax.nn.softmax(logits.astype(jnp.float32), -1)  # [batch, length, labels]
  return jnp.argmax(probs, -1).astype(jnp.int32), jnp.max(probs, -1)


TASK = TokenClassification


def failure_lines(analysis: dict) -> list[str]:
  """The NER failure check: per-type table, entity-type confusion, confident errors."""
  stats = analysis.get("windows", {})
  lines = [f"Sentences split into windows (longer than max_seq_length): "
           f"{stats.get('num_windowed', 0)} of {stats.get('num_sentences', '?')} "
           f"({stats.get('num_windows', '?')} windows); words longer than a window: "
           f"{stats.get('num_cut_words', 0)}.", "",
           "| type | precision | recall | F1 | support |", "|---|---|---|---|---|"]
  for t, v in sorted(analysis["per_type"].items()):
    lines.append(f"| {t} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | "
                 f"{v['support']} |")
  confusion = analysis["confusion"]
  cols = sorted({c for row in confusion.values() for c in row})
  lines += ["", "Entity-type confusion (rows: gold type or spurious; columns: predicted type "
            "with the same span, or missed):", "",
            "| gold \\ predicted | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
  for r, row in confusion.items():
    lines.append(f"| {r} | " + " | ".join(str(row.get(c, 0)) for c in cols) + " |")
  errors = analysis["confident_errors"]
  lines += ["", f"The {len(errors)} most confident wrong entities:", "",
            "| score | entity | predicted | gold type of that span | gold tags there | sentence |",
            "|---|---|---|---|---|---|"]
  for e in errors:
    sentence = e["text"].replace("|", "\\|")
    lines.append(f"| {e['score']:.3f} | {e['words']} | {e['predicted']} | "
                 f"{e.get('gold') or '-'} | {' '.join(e['gold_tags'])} | {sentence} |")
  return lines


def _label_weights(batch) -> jax.Array:
  """[batch, length] float32: labelled pieces of real rows."""
  return batch["label_mask"].astype(jnp.float32) * losses.token_mask(batch)


def _source(data, split: str) -> str:
  return split_file(data, split, "local_tagged")


def _reader_args(data) -> tuple:
  return (int(data.get("tag_column", -1)), data.get("data_dir") or "")


def read_split(data, split: str):
  """The sentences of a split (IOB2)."""
  return _read(_source(data, split), split, _reader_args(data))


@functools.lru_cache(maxsize=8)
def _read(source: str, split: str, reader_args: tuple):
  tag_column, data_dir = reader_args
  return shared.read_file_or_tfds(
      source, functools.partial(conll.read_tagged, tag_column=tag_column),
      lambda name: conll.read_tfds(name, split=split, data_dir=data_dir or None))


@functools.lru_cache(maxsize=4)
def _features(source: str, split: str, reader_args: tuple, vocab_file: str,
              label_names: tuple[str, ...], max_seq_length: int, label_all_pieces: bool):
  from bert_jax.tokenizer import Tokenizer
  sentences = _read(source, split, reader_args)
  label_to_id = {name: i for i, name in enumerate(label_names)}
  features, stats = ner_windows.encode(sentences, Tokenizer(vocab_file), label_to_id,
                                       max_seq_length=max_seq_length,
                                       label_all_pieces=label_all_pieces)
  # [N] windows of each row's sentence: tells a complete sentence in a truncated evaluation.
  features["sentence_windows"] = group_sizes(features["sentence_index"])
  return features, stats
