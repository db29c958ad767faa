"""Extractive question answering (SQuAD v1.1 style): start and end logits on every token.

Data: SQuAD v1.1 JSON from `data.train_file` / `data.eval_file` (`data.name="local_squad"`;
`split.py` splits one file by article), or a TFDS dataset by name (e.g.
`squad/v1.1`, online only). `[CLS] question [SEP] context [SEP]` with segment ids; the
question keeps its first `data.max_query_length` pieces; contexts longer than the window are
split into windows that overlap by `data.doc_stride` pieces (transformers' `stride`
convention; `qa_windows.encode`). Training labels: the answer's first and last piece in each
window, or [CLS] (position 0) when a window does not hold the whole answer. Loss: the mean of
the start and end cross-entropies over the real windows.

Evaluation (`qa_prediction.postprocess`): over all windows of a question, the best of the top
`data.n_best_size` starts x ends with end >= start, at most `data.max_answer_length` pieces,
inside the context, whose start piece has its maximum context in that window (google-research/
bert's rule); the answer is cut from the original context by character offsets. Reported:
exact_match and f1 as the official SQuAD v1.1 script (fractions in [0, 1]) and
`num_examples`, the questions scored (`count`: the same number under its old name, kept as
an alias); the final evaluation writes predictions.json ({id: answer}, the official format)
and report.md (by question type, by answer length, the most confident wrong answers).
SQuAD v2 (unanswerable questions) is not supported.

Batch keys: input_ids, attention_mask, token_type_ids [batch, length], start_positions,
end_positions [batch]; example_index, example_windows [batch], offsets [batch, length, 2] and
max_context [batch, length] stay on the host. Packed training rows (`data.packing`) add
segment_ids; start/end_positions (row positions) and example_mask become [batch, windows].
A packed window's start/end softmax runs over its own tokens; a padded row's over the whole
row, padding included (as transformers computes it), so the two losses differ slightly.
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
from bert_jax.errors import DataError
from bert_jax.tasks import shared
from bert_jax.tasks.base import FinishedRun, Task, complete_groups, group_sizes, split_file
from bert_jax.tasks.question_answering import metrics as qa_metrics
from bert_jax.tasks.question_answering import prediction as qa_prediction
from bert_jax.tasks.question_answering import reader as qa_reader
from bert_jax.tasks.question_answering import windows as qa_windows

HOST_ONLY = ("example_index", "example_windows", "offsets", "max_context")


@dataclasses.dataclass(frozen=True)
class QuestionAnswering(Task):
  """A span of the context answers each question."""

  max_query_length: int = 64
  doc_stride: int = 128
  n_best_size: int = 20
  max_answer_length: int = 30

  name = "question_answering"
  best_metric = "f1"
  hf_head = "question_answering"
  host_keys = HOST_ONLY
  host_only_keys = HOST_ONLY
  required_keys = ("input_ids", "attention_mask", "token_type_ids", "start_positions",
                   "end_positions")

  # --- building ----------------------------------------------------------------------------

  @classmethod
  def from_config(cls, config, info: dict) -> QuestionAnswering:
    d = config.data
    return cls(int(d.max_query_length), int(d.doc_stride), int(d.n_best_size),
               int(d.max_answer_length))

  @classmethod
  def from_checkpoint_info(cls, info: dict) -> QuestionAnswering:
    return cls(**info)

  @classmethod
  def from_transformers_config(cls, path: str, hf_config: dict) -> QuestionAnswering:
    """The settings an export recorded (`bert_jax_doc_stride`, ...); defaults otherwise."""
    from bert_jax.hf import SETTINGS_PREFIX
    found = {}
    for field in dataclasses.fields(cls):
      value = hf_config.get(SETTINGS_PREFIX + field.name)
      if value is None:
        continue
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"{path}/config.json: {SETTINGS_PREFIX}{field.name}={value!r} is not "
                        "a positive integer")
      found[field.name] = value
    return cls(**found)

  def export_settings(self, max_seq_length: int) -> dict:
    """What an export records in config.json (as `bert_jax_<name>`) so that `answer` on it
    reads the same windows: max_seq_length and this task's settings."""
    return {"max_seq_length": int(max_seq_length), **dataclasses.asdict(self)}

  def checkpoint_info(self) -> dict:
    return dataclasses.asdict(self)

  def model(self, cfg: BertConfig):
    from bert_jax.model import BertForQuestionAnswering
    return BertForQuestionAnswering(cfg)

  # --- data --------------------------------------------------------------------------------

  @classmethod
  def data_info(cls, config) -> dict:
    from bert_jax.tokenizer import Tokenizer
    data = config.data
    counts = {s: len(read_split(data, s, training=s == data.train_split))
              for s in (data.train_split, data.eval_split)}
    tokenizer = Tokenizer(data.get("vocab_file") or "")
    return {"name": data.name, "label_names": [], "split_sizes": counts,
            "max_seq_length": int(data.max_seq_length), "vocab_size": tokenizer.vocab_size,
            "vocab_file": tokenizer.vocab_file}

  def features(self, config, split: str) -> dict[str, np.ndarray]:
    """`qa_windows.encode` windows of a split (cached per file and settings)."""
    data = config.data
    return _features(_source(data, split), split, split == data.train_split,
                     data.get("data_dir") or "", data.get("vocab_file") or "",
                     int(data.max_seq_length), self.max_query_length, self.doc_stride)

  def iterator(self, config, *, split: str, global_batch_size: int, seed: int, shuffle: bool,
               num_epochs: int | None, process_index: int = 0, process_count: int = 1,
               packed: bool = False):
    from bert_jax import input_pipeline
    if packed:  # training windows; answer positions shift with the window's start in the row
      features = self.features(config, split)
      return input_pipeline.packed_array_iterator(
          {k: features[k] for k in ("input_ids", "token_type_ids", "attention_mask",
                                    "start_positions", "end_positions")},
          token_keys=("input_ids", "token_type_ids"),
          offset_keys=("start_positions", "end_positions"),
          max_per_row=int(config.data.get("max_examples_per_row", 16)),
          dataset=_source(config.data, split), split=split,
          global_batch_size=global_batch_size, seed=seed, shuffle=shuffle,
          num_epochs=num_epochs, process_index=process_index, process_count=process_count)
    return input_pipeline.array_iterator(
        self.features(config, split), dataset=_source(config.data, split), split=split,
        global_batch_size=global_batch_size, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
        process_index=process_index, process_count=process_count)

  # --- device ------------------------------------------------------------------------------

  def denominators(self, batch):
    return {"window_count": jnp.sum(losses.example_mask(batch))}

  def forward(self, model, params, batch, *, deterministic, dropout_rng):
    start, end = shared.apply(model, params, batch, deterministic=deterministic,
                              dropout_rng=dropout_rng)  # [batch, length] each
    ex = losses.example_mask(batch)  # [batch] ([batch, windows] packed)
    s_pos, e_pos = batch["start_positions"], batch["end_positions"]
    if "segment_ids" in batch:  # each window's softmax over its own positions
      start, end = (losses.per_example_positions(x, batch["segment_ids"], ex.shape[1])
                    for x in (start, end))  # [batch, windows, length]
    both = losses.top1_correct(start, s_pos) & losses.top1_correct(end, e_pos)
    sums = {
        "loss_sum": jnp.sum(0.5 * (losses.cross_entropy(start, s_pos)
                                   + losses.cross_entropy(end, e_pos)) * ex),
        "span_correct_sum": jnp.sum(both * ex),
        "window_count": jnp.sum(ex),
        "tokens_sum": shared.tokens_sum(batch),
    }
    return sums, {"start_logits": start.astype(jnp.float32),
                  "end_logits": end.astype(jnp.float32)}

  def loss(self, sums, denominators):
    return shared.mean_loss(sums, denominators, "window_count")

  # --- host --------------------------------------------------------------------------------

  def summarize(self, sums):
    return shared.summary(sums, "window_count", "num_windows",
                          window_span_accuracy="span_correct_sum")

  def _predict(self, examples, outputs, rows):
    rows, outputs = complete_groups(rows, outputs, "example_index", "example_windows")
    done = sorted(set(rows["example_index"].tolist()))
    # postprocess indexes examples by example_index: keep the list whole, score `done` only.
    preds = qa_prediction.postprocess(examples, rows, outputs["start_logits"],
                                      outputs["end_logits"], n_best_size=self.n_best_size,
                                      max_answer_length=self.max_answer_length)
    return [examples[i] for i in done], preds

  def host_metrics(self, config, outputs, rows):
    data = config.data
    scored, preds = self._predict(read_split(data, data.eval_split), outputs, rows)
    out = qa_metrics.squad_metrics(scored, {e.id: preds[e.id] for e in scored})
    return {**out, "count": out["num_examples"]}  # count: the old name, kept as an alias

  def finish(self, run: FinishedRun) -> list[str]:
    from bert_jax import report
    data = run.config.data
    examples, preds = self._predict(read_split(data, data.eval_split), run.outputs, run.rows)
    path = os.path.join(run.workdir, "predictions.json")
    qa_prediction.write_predictions(path, {e.id: preds[e.id] for e in examples if e.id in preds})
    scores = {qid: p.score for qid, p in preds.items()}
    analysis = qa_metrics.error_analysis(examples, preds, scores)
    rows = run.rows
    windows = np.bincount(rows["example_index"]) if len(rows["example_index"]) else np.zeros(1)
    windows = windows[windows > 0]
    analysis["windows"] = {"questions": int(len(windows)), "windows": int(windows.sum()),
                           "windowed_questions": int((windows > 1).sum()),
                           "max_windows": int(windows.max())}
    analysis["questions_cut"] = {
        "max_query_length": self.max_query_length,
        **{name: _questions_cut(_source(data, split), split, split == data.train_split,
                                data.get("data_dir") or "", data.get("vocab_file") or "",
                                self.max_query_length)
           for name, split in (("train", data.train_split), ("eval", data.eval_split))}}
    first = examples[0] if examples else None
    md = report.write_report(
        run, analysis=analysis, failure_lines=failure_lines(analysis),
        examples=[(first.question, first.context)] if first else [])
    return [md, path]

  # --- prediction --------------------------------------------------------------------------

  def answer(self, model, params, tokenizer, questions: list[str], contexts: list[str], *,
             max_length: int, batch_size: int = 32, top_k: int = 5,
             truncated: list[int] | None = None) -> list[dict]:
    """Questions on contexts -> per question {answer, start, end, score, alternatives}; the
    indices of questions cut to `max_query_length` are appended to `truncated` when given."""
    from bert_jax import inference
    examples = [qa_reader.Example(id=str(i), title="", question=q, context=c, answers=())
                for i, (q, c) in enumerate(zip(questions, contexts, strict=True))]
    for e in examples:
      if not e.question.strip():
        raise DataError(f"question {int(e.id) + 1} is empty")
      if not e.context.strip():
        raise DataError(f"the context of question {int(e.id) + 1} has no text")
    features = qa_windows.encode(examples, tokenizer, max_seq_length=max_length,
                                 max_query_length=self.max_query_length, doc_stride=self.doc_stride,
                                 training=False, truncated=truncated)
    start = np.full(features["input_ids"].shape, -1e9, np.float32)
    end = np.full(features["input_ids"].shape, -1e9, np.float32)
    for rows, batch in inference.feature_batches(features, batch_size=batch_size):
      st, en = span_logits(model, params, *(batch[k] for k in inference.FIELDS))  # [batch, len]
      length = st.shape[1]
      start[rows, :length] = np.asarray(st)[:len(rows)]
      end[rows, :length] = np.asarray(en)[:len(rows)]
    preds = qa_prediction.postprocess(examples, features, start, end, n_best_size=self.n_best_size,
                                      max_answer_length=self.max_answer_length)
    out = []
    for e in examples:
      p = preds[e.id]
      out.append({"question": e.question, "answer": p.text, "start": p.start_char,
                  "end": p.end_char, "score": round(float(p.score), 4),
                  "alternatives": [{"answer": t, "score": round(float(sc), 4)}
                                   for t, sc in p.alternatives[1:top_k + 1]]})
    return out

  def predict_examples(self, model, params, tokenizer, examples, *, max_length: int,
                       batch_size: int = 32, top_k: int = 5,
                       truncated: list[int] | None = None) -> list[dict]:
    """Examples {"question", "context"} -> per example {"question", "answer", "start", "end",
    "score", "alternatives"} (`answer`)."""
    try:
      questions = [str(e["question"]) for e in examples]
      contexts = [str(e["context"]) for e in examples]
    except KeyError as e:
      raise DataError(f"a question-answering example needs \"question\" and \"context\" "
                      f"(missing {e})") from None
    return self.answer(model, params, tokenizer, questions, contexts, max_length=max_length,
                       batch_size=batch_size, top_k=top_k, truncated=truncated)


@functools.partial(jax.jit, static_argnums=0)
def span_logits(model, params, input_ids, attention_mask, token_type_ids
                ) -> tuple[jax.Array, jax.Array]:
  """[batch, length] -> (start logits, end logits) [batch, length] each.

  Jitted at module level with the (hashable) model static, so each model and batch shape
  compiles once per process; a `jax.jit` made inside `answer` compiled on every call.
  """
  return model.apply({"params": params}, input_ids, attention_mask, token_type_ids)


TASK = QuestionAnswering


def failure_lines(analysis: dict) -> list[str]:
  """The QA failure check: windows, EM/F1 by question type and answer length, worst errors."""
  w = analysis["windows"]
  lines = [f"Questions whose context needed several windows: {w['windowed_questions']} of "
           f"{w['questions']} ({w['windows']} windows, at most {w['max_windows']} for one "
           "question).", ""]
  cut = analysis.get("questions_cut")
  if cut:
    sides = [f"{cut[s]['cut']} of {cut[s]['questions']} {s}" + (
        f" (first: {cut[s]['first']})" if cut[s]["first"] else "") for s in ("train", "eval")]
    lines += [f"Questions longer than max_query_length={cut['max_query_length']} pieces, cut "
              f"to their first {cut['max_query_length']}: {', '.join(sides)}.", ""]
  for key, title in (("by_question_type", "question type"),
                     ("by_answer_length", "gold answer length (words)")):
    lines += [f"By {title}:", "", "| group | questions | exact match | F1 |", "|---|---|---|---|"]
    for row in analysis.get(key, []):
      em = "-" if row.get("exact_match") is None else f"{row['exact_match']:.3f}"
      f1 = "-" if row.get("f1") is None else f"{row['f1']:.3f}"
      lines.append(f"| {row.get('type', row.get('bucket'))} | "
                   f"{row.get('count', 0)} | {em} | {f1} |")
    lines.append("")
  wrong = analysis.get("confidently_wrong", [])
  lines += [f"The {len(wrong)} most confident wrong answers:", "",
            "| score | question | predicted | gold |", "|---|---|---|---|"]
  for r in wrong:
    esc = lambda t: str(t).replace("|", "\\|").replace("\n", " ")
    lines.append(f"| {r['score']:.2f} | {esc(r['question'])} | {esc(r['predicted'])} | "
                 f"{esc(' / '.join(r['answers']))} |")
  return lines


def _source(data, split: str) -> str:
  return split_file(data, split, "local_squad")


def read_split(data, split: str, training: bool = False):
  """The questions of a split (`training`: mismatched answer spans are counted and skipped)."""
  return _read(_source(data, split), split, training, data.get("data_dir") or "")


@functools.lru_cache(maxsize=8)
def _read(source: str, split: str, training: bool, data_dir: str):
  return shared.read_file_or_tfds(
      source, functools.partial(qa_reader.read_squad, training=training),
      lambda name: qa_reader.read_tfds(name, split=split, data_dir=data_dir or None,
                                       training=training))


@functools.lru_cache(maxsize=4)
def _features(source: str, split: str, training: bool, data_dir: str, vocab_file: str,
              max_seq_length: int, max_query_length: int, doc_stride: int):
  from bert_jax.tokenizer import Tokenizer
  examples = _read(source, split, training, data_dir)
  cut = []  # questions longer than max_query_length
  features = qa_windows.encode(examples, Tokenizer(vocab_file), max_seq_length=max_seq_length,
                               max_query_length=max_query_length, doc_stride=doc_stride,
                               training=training, truncated=cut)
  if cut:
    from absl import logging
    logging.warning("%s [%s]: %d of %d questions are longer than max_query_length=%d pieces "
                    "and were cut to it (first: %s)", source, split, len(cut), len(examples),
                    max_query_length, examples[cut[0]].id)
  # [N] windows of each row's question: tells a complete question in a truncated evaluation.
  features["example_windows"] = group_sizes(features["example_index"])
  return features


@functools.lru_cache(maxsize=4)
def _questions_cut(source: str, split: str, training: bool, data_dir: str, vocab_file: str,
                   max_query_length: int) -> dict:
  """{"cut", "questions", "first" (id)}: the questions of a split that `qa_windows.encode` cuts to
  `max_query_length` pieces (for report.md)."""
  from bert_jax.tokenizer import Tokenizer
  examples = _read(source, split, training, data_dir)
  pieces = Tokenizer(vocab_file).tokenize_to_ids([e.question for e in examples])
  cut = [e.id for e, ids in zip(examples, pieces) if len(ids) > max_query_length]
  return {"cut": len(cut), "questions": len(examples), "first": cut[0] if cut else ""}
