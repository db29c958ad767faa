"""Extractive question answering on SQuAD v1.1, host side: read, split, encode, decode, score.

Pure Python and numpy (no jax): the task module feeds `encode`'s arrays to the model and hands
its start/end logits back to `postprocess`.

Reading. `read_squad(path)` reads a SQuAD v1.1 JSON file (`data[].paragraphs[].context`,
`qas[].id/question/answers[].text/answer_start`) into `Example`s; `read_tfds` does the same for
the TFDS `squad/v1.1` dataset. Errors a file can cause are one line naming the file and the
question id. An answer whose `answer_start` does not point at its text is, with
`training=True`, dropped with one warning giving the count (a question left without answers is
skipped), as google-research/bert's `read_squad_examples` skips answers it cannot find; for
evaluation every answer is kept as a reference (the metric compares texts only).

Split. No SQuAD training set is available offline, so `split_articles` splits one file by
article: the LAST `num_eval_articles` articles in file order evaluate, all earlier ones train
(no randomness; a paragraph's questions never straddle the sides). On the shared 48-article
`dev-v1.1-part.json` (`scripts/split_squad.py` writes the two files):
  train (38 articles, 1,456 paragraphs, 7,612 questions): Super_Bowl_50 ... Kenya, i.e.
    articles 1-38 of the file;
  eval (10 articles, 371 paragraphs, 1,768 questions): Intergovernmental_Panel_on_Climate_Change,
    Chloroplast, Prime_number, Rhine, Scottish_Parliament, Islamism, Imperialism,
    United_Methodist_Church, French_and_Indian_War, Force.

Features. `encode` builds one row per window: `[CLS] question [SEP] context-window [SEP]`,
padded to `max_seq_length`. The question is cut to its first `max_query_length` wordpieces.
A context longer than a window is covered by several windows; `doc_stride` is the OVERLAP:
consecutive windows share `doc_stride` context pieces (transformers' tokenizer `stride`, with
which the windows agree piece for piece; google-research/bert's `doc_stride` is instead the
step between window starts). Answers are located by character offsets, not by re-tokenizing.

Post-processing. `postprocess` picks, over all windows of a question, the best span whose
start and end are context pieces, end >= start, at most `max_answer_length` pieces, and whose
start piece has its maximum context in that window; score = start logit + end logit; the text
is cut from the original context by character offsets.

Metric. `normalize_answer`, `exact_match`, `f1` and `squad_metrics` follow the official SQuAD
v1.1 `evaluate-v1.1.py` definitions (reported as fractions, not percentages).

SQuAD v2 (unanswerable questions) is not supported: a question marked `is_impossible` is an
error.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import string
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from bert_jax import fileio

FEATURE_KEYS = ("input_ids", "attention_mask", "token_type_ids", "start_positions",
                "end_positions", "example_index", "offsets", "max_context")
QUESTION_TYPES = ("what", "who", "when", "where", "why", "which", "how many", "how much", "how",
                  "other")
# (name, min words, max words) of the first reference answer.
ANSWER_LENGTH_BUCKETS = (("1", 1, 1), ("2-3", 2, 3), ("4-6", 4, 6), (">6", 7, None))


@dataclasses.dataclass(frozen=True)
class Example:
  """One question. `answers`: (text, answer_start) pairs in file order; the first trains."""
  id: str
  title: str
  question: str
  context: str
  answers: tuple[tuple[str, int], ...]


@dataclasses.dataclass(frozen=True)
class Prediction:
  """The best span of one question; `alternatives` is the n-best list, best first.

  For a question without any valid span (a context with no wordpieces): text "",
  start_char = end_char = 0, score -inf, no alternatives.
  """
  text: str
  start_char: int  # context[start_char:end_char] == text
  end_char: int
  score: float  # start logit + end logit
  alternatives: tuple[tuple[str, float], ...]


# ---------------------------------------------------------------------------------------------
# Reading


def load_json(path: str) -> Any:
  """A JSON file, with one-line errors for a missing file, non-UTF-8 bytes or broken JSON."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such file")
  with open(path, "rb") as f:
    raw = f.read()
  try:
    text = raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not UTF-8 (byte offset {e.start})") from None
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None


def read_squad(path: str, *, training: bool = False) -> list[Example]:
  """A SQuAD v1.1 JSON file -> its questions, in file order (see the module docstring)."""
  return examples_from_json(load_json(path), source=path, training=training)


def examples_from_json(data: Any, *, source: str = "<data>", training: bool = False
                       ) -> list[Example]:
  """Parsed SQuAD v1.1 JSON -> Examples; `source` names the file in error messages."""
  articles = _articles(data, source)
  rows = []
  for a, article in enumerate(articles):
    title = article.get("title", "") if isinstance(article, dict) else ""
    paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
    if not isinstance(paragraphs, list):
      raise ValueError(f"{source}: article {a} ({title!r}) has no 'paragraphs' list")
    for p, paragraph in enumerate(paragraphs):
      qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
      if not isinstance(qas, list):
        raise ValueError(f"{source}: article {a} ({title!r}) paragraph {p} has no 'qas' list")
      for qa in qas:
        if not isinstance(qa, dict):
          raise ValueError(f"{source}: article {a} ({title!r}) paragraph {p}: a question is "
                           f"{type(qa).__name__}, not an object")
        if qa.get("is_impossible"):
          raise ValueError(f"{source}: question {qa.get('id')}: is_impossible (SQuAD v2 "
                           "unanswerable questions are not supported)")
        answers = qa.get("answers")
        if not isinstance(answers, list) or not all(isinstance(x, dict) for x in answers):
          raise ValueError(f"{source}: question {qa.get('id')}: 'answers' is not a list of "
                           "objects")
        rows.append((title, paragraph.get("context"), qa.get("id"), qa.get("question"),
                     [(x.get("text"), x.get("answer_start")) for x in answers]))
  return _make_examples(rows, source, training)


def read_tfds(name: str = "squad/v1.1", split: str = "validation", *,
              data_dir: str | None = None, training: bool = False) -> list[Example]:
  """The TFDS `squad/v1.1` dataset -> Examples, with the same checks as `read_squad`.

  Reads through `tfds.data_source` (random access), which downloads and prepares the dataset
  in `data_dir` the first time. Not covered by the tests: the test machines are offline (the
  record conversion, `examples_from_records`, is tested).
  """
  import tensorflow_datasets as tfds
  source = tfds.data_source(name, split=split, data_dir=data_dir)
  return examples_from_records((source[i] for i in range(len(source))),
                               source=f"tfds:{name}[{split}]", training=training)


def examples_from_records(records: Iterable[Mapping[str, Any]], *, source: str,
                          training: bool = False) -> list[Example]:
  """TFDS squad-like records ({id, title, context, question, answers: {text, answer_start}},
  strings as bytes or str) -> Examples."""
  rows = []
  for record in records:
    answers = record.get("answers") or {}
    texts = [_str(t) for t in answers.get("text", ())]
    starts = [int(s) for s in answers.get("answer_start", ())]
    qid = _str(record.get("id"))
    if len(texts) != len(starts):
      raise ValueError(f"{source}: question {qid}: {len(texts)} answer texts but "
                       f"{len(starts)} answer_starts")
    rows.append((_str(record.get("title", "")), _str(record.get("context")), qid,
                 _str(record.get("question")), list(zip(texts, starts))))
  return _make_examples(rows, source, training)


def _str(value):
  return value.decode("utf-8") if isinstance(value, bytes) else value


def _articles(data: Any, source: str) -> list:
  if not isinstance(data, dict) or not isinstance(data.get("data"), list):
    raise ValueError(f"{source}: not SQuAD JSON (no top-level 'data' list of articles)")
  return data["data"]


def _make_examples(rows, source: str, training: bool) -> list[Example]:
  """Checks (title, context, id, question, [(text, answer_start)]) rows into Examples."""
  examples, seen = [], set()
  dropped_answers = dropped_questions = 0
  first_dropped = None  # (id, context, (text, answer_start)) of the first question dropped
  for title, context, qid, question, answers in rows:
    if not isinstance(qid, str) or not qid:
      raise ValueError(f"{source}: a question of article {title!r} has no id")
    if qid in seen:
      raise ValueError(f"{source}: question {qid}: id appears twice")
    seen.add(qid)
    if not isinstance(context, str) or not context.strip():
      raise ValueError(f"{source}: question {qid}: context has no text")
    if not isinstance(question, str) or not question.strip():
      raise ValueError(f"{source}: question {qid}: empty question")
    if not answers:
      raise ValueError(f"{source}: question {qid}: no answers (SQuAD v1.1 answers every "
                       "question)")
    kept = []
    for text, start in answers:
      if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{source}: question {qid}: an answer has no text")
      if isinstance(start, bool) or not isinstance(start, int):
        raise ValueError(f"{source}: question {qid}: answer_start {start!r} is not an integer")
      if training and (start < 0 or context[start:start + len(text)] != text):
        dropped_answers += 1
        continue
      kept.append((text, start))
    if not kept:
      dropped_questions += 1
      first_dropped = first_dropped or (qid, context, answers[0])
      continue
    examples.append(Example(id=qid, title=title or "", question=question, context=context,
                            answers=tuple(kept)))
  if training and not examples and first_dropped:
    qid, context, (text, start) = first_dropped
    raise ValueError(
        f"{source}: every training question was dropped: all {dropped_answers} answers do not "
        f"match their context at answer_start (the first, question {qid}: {text!r} at "
        f"{start}, where the context has {context[max(start, 0):max(start, 0) + len(text)]!r}); "
        "fix answer_start (0-based character offsets into the context)")
  if dropped_answers:
    warnings.warn(f"{source}: dropped {dropped_answers} training answers whose answer_start "
                  f"does not point at their text ({dropped_questions} questions left without "
                  "an answer were skipped)", stacklevel=3)
  return examples


# ---------------------------------------------------------------------------------------------
# Split by article


def split_articles(path_or_data: str | Mapping[str, Any], num_eval_articles: int = 10
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
  """SQuAD JSON (a path or the parsed dict) -> (train, eval) SQuAD JSON dicts.

  The last `num_eval_articles` articles in file order go to eval, all earlier ones to train;
  both keep the file's `version`.
  """
  if isinstance(path_or_data, str):
    source, data = path_or_data, load_json(path_or_data)
  else:
    source, data = "<data>", path_or_data
  articles = _articles(data, source)
  if not 1 <= num_eval_articles < len(articles):
    raise ValueError(f"{source}: num_eval_articles must be between 1 and {len(articles) - 1} "
                     f"(the file has {len(articles)} articles), got {num_eval_articles}")
  version = data.get("version", "1.1")
  cut = len(articles) - num_eval_articles
  return ({"version": version, "data": articles[:cut]},
          {"version": version, "data": articles[cut:]})


def squad_counts(data: Mapping[str, Any]) -> dict[str, int]:
  """{"articles", "paragraphs", "questions"} of SQuAD JSON."""
  articles = _articles(data, "<data>")
  paragraphs = [p for a in articles for p in a["paragraphs"]]
  return {"articles": len(articles), "paragraphs": len(paragraphs),
          "questions": sum(len(p["qas"]) for p in paragraphs)}


def write_json_atomic(path: str, value: Any) -> None:
  """Writes JSON to a temporary file beside `path`, then renames it over `path`; the file gets
  the umask's mode (`fileio.output_mode`)."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(value, f, ensure_ascii=False)
      f.flush()
      os.fsync(f.fileno())
    fileio.chmod_for_umask(tmp)  # mkstemp creates 0600
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


# ---------------------------------------------------------------------------------------------
# Features


def window_spans(num_pieces: int, window: int, overlap: int) -> list[tuple[int, int]]:
  """(start, length) of each window over `num_pieces` context pieces.

  Windows hold `window` pieces (the last one may hold fewer), consecutive windows share
  `overlap` pieces, and the last one reaches the end. A context with no pieces gets one empty
  window, so every question has at least one row.
  """
  if not 0 <= overlap < window:
    raise ValueError(f"overlap must be in [0, {window}) for windows of {window}, got {overlap}")
  spans, start = [], 0
  while True:
    spans.append((start, min(window, num_pieces - start)))
    if start + window >= num_pieces:
      return spans
    start += window - overlap


def max_context_window(spans: Sequence[tuple[int, int]], num_pieces: int) -> np.ndarray:
  """[num_pieces] int: the window where each piece has the most context around it.

  google-research/bert's `_check_is_max_context`: score = min(pieces left, pieces right)
  + 0.01 * window length; the first window wins a tie.
  """
  scores = np.full((len(spans), num_pieces), -np.inf)  # [windows, pieces]
  for w, (start, length) in enumerate(spans):
    position = np.arange(start, start + length)
    scores[w, start:start + length] = (
        np.minimum(position - start, start + length - 1 - position) + 0.01 * length)
  return np.argmax(scores, axis=0) if num_pieces else np.zeros(0, np.int64)


def answer_pieces(offsets: np.ndarray, start_char: int, end_char: int) -> tuple[int, int] | None:
  """Context piece offsets [n, 2] and a character span -> (first, last) piece covering it.

  The first piece is the first one ending after `start_char`, the last one the last starting
  before `end_char`; None when no piece lies inside the span (only whitespace or characters
  the normalizer removes).
  """
  first = int(np.searchsorted(offsets[:, 1], start_char, side="right"))
  last = int(np.searchsorted(offsets[:, 0], end_char, side="left")) - 1
  return (first, last) if first <= last else None


def encode(examples: Sequence[Example], tokenizer, *, max_seq_length: int = 384,
           max_query_length: int = 64, doc_stride: int = 128, training: bool,
           truncated: list[int] | None = None) -> dict[str, np.ndarray]:
  """Questions and contexts -> model inputs, one row per window (see the module docstring).

  Returns, with N windows in all and S = max_seq_length:
    input_ids, attention_mask, token_type_ids: [N, S] int32; `[CLS] question [SEP] context
      [SEP]` then padding, segment 1 for the context and its [SEP].
    start_positions, end_positions: [N] int32, the first/last piece of the first answer in this
      row, or 0 ([CLS]) when the row does not hold the whole answer.
    example_index: [N] int32 index into `examples`; rows of one example are consecutive.
    offsets: [N, S, 2] int32 character span of each context piece in `Example.context`;
      -1 for [CLS], question, [SEP] and padding.
    max_context: [N, S] int32, 1 where this row is the one where the context piece has the most
      context (each context piece has exactly one such row).

  With `training=True` every example must have an answer that covers at least one piece; for
  evaluation the labels are filled the same way where possible (for an eval loss). The indices
  of questions longer than `max_query_length` pieces (cut to it) are appended to `truncated`
  when given.
  Raises ValueError naming the question id when the (truncated) question leaves a window no
  more than `doc_stride` context pieces.
  """
  if max_query_length < 1 or doc_stride < 0 or max_seq_length < 4:
    raise ValueError(f"need max_seq_length >= 4, max_query_length >= 1 and doc_stride >= 0; "
                     f"got {max_seq_length}, {max_query_length}, {doc_stride}")
  # Paragraphs carry several questions: tokenize each distinct context once.
  context_ids = {}
  for example in examples:
    context_ids.setdefault(example.context, len(context_ids))
  context_pieces = tokenizer.tokenize_with_offsets(list(context_ids))
  question_pieces = tokenizer.tokenize_with_offsets([e.question for e in examples])
  cls_id, sep_id, pad_id = tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id

  plans = []  # per example: (question pieces, context pieces, offsets, spans, best, answer)
  for index, example in enumerate(examples):
    question = question_pieces[index][0][:max_query_length]
    if truncated is not None and len(question_pieces[index][0]) > max_query_length:
      truncated.append(index)
    ids, offsets = context_pieces[context_ids[example.context]]
    window = max_seq_length - len(question) - 3
    if window <= doc_stride:
      raise ValueError(
          f"question {example.id}: its {len(question)} pieces leave {max(window, 0)} context "
          f"pieces per window of {max_seq_length}, not more than doc_stride {doc_stride} "
          "(raise max_seq_length, or lower max_query_length or doc_stride)")
    answer = None
    if example.answers:
      text, start = example.answers[0]
      answer = answer_pieces(offsets, start, start + len(text))
    if training and answer is None:
      raise ValueError(f"question {example.id}: the first answer covers no wordpiece of the "
                       "context")
    spans = window_spans(len(ids), window, doc_stride)
    plans.append((question, ids, offsets, spans, max_context_window(spans, len(ids)), answer))

  n, s = sum(len(plan[3]) for plan in plans), max_seq_length
  out = {k: np.zeros((n, s), np.int32) for k in ("attention_mask", "token_type_ids",
                                                   "max_context")}
  out["input_ids"] = np.full((n, s), pad_id, np.int32)
  out["offsets"] = np.full((n, s, 2), -1, np.int32)
  for k in ("start_positions", "end_positions", "example_index"):
    out[k] = np.zeros(n, np.int32)
  row = 0
  for index, (question, ids, offsets, spans, best, answer) in enumerate(plans):
    first = len(question) + 2  # row position of the window's first context piece
    for w, (start, length) in enumerate(spans):
      last = first + length  # the closing [SEP]
      out["input_ids"][row, :last + 1] = np.concatenate(
          [[cls_id], question, [sep_id], ids[start:start + length], [sep_id]])
      out["attention_mask"][row, :last + 1] = 1
      out["token_type_ids"][row, first:last + 1] = 1
      out["offsets"][row, first:last] = offsets[start:start + length]
      out["max_context"][row, first:last] = best[start:start + length] == w
      if answer is not None and start <= answer[0] and answer[1] < start + length:
        out["start_positions"][row] = answer[0] - start + first
        out["end_positions"][row] = answer[1] - start + first
      out["example_index"][row] = index
      row += 1
  return {k: out[k] for k in FEATURE_KEYS}


# ---------------------------------------------------------------------------------------------
# Post-processing


def postprocess(examples: Sequence[Example], features: Mapping[str, np.ndarray],
                start_logits, end_logits, *, n_best_size: int = 20,
                max_answer_length: int = 30) -> dict[str, Prediction]:
  """Start/end logits [N, S] of `encode`'s rows -> {question id: Prediction}.

  In each row the `n_best_size` best starts (context pieces with their maximum context in that
  row) and the `n_best_size` best ends (context pieces) are paired; a pair is a candidate when
  end >= start and it spans at most `max_answer_length` pieces. Candidates of all rows of a
  question compete on start + end logit; equal texts are listed once. The span is therefore
  always inside the context; a question with no candidate gets text "" (see `Prediction`).
  """
  start_logits = np.asarray(start_logits, np.float64)
  end_logits = np.asarray(end_logits, np.float64)
  offsets = np.asarray(features["offsets"])
  max_context = np.asarray(features["max_context"]).astype(bool)
  example_index = np.asarray(features["example_index"])
  if start_logits.shape != offsets.shape[:2] or end_logits.shape != offsets.shape[:2]:
    raise ValueError(f"start/end logits {start_logits.shape}/{end_logits.shape} do not match "
                     f"the features' [rows, length] {offsets.shape[:2]}")
  rows_of = collections.defaultdict(list)
  for row, index in enumerate(example_index):
    rows_of[int(index)].append(row)

  predictions = {}
  for index, example in enumerate(examples):
    candidates = []  # (score, start_char, end_char)
    for row in rows_of.get(index, ()):
      is_context = offsets[row, :, 0] >= 0
      starts = _top(start_logits[row], is_context & max_context[row], n_best_size)
      ends = _top(end_logits[row], is_context, n_best_size)
      # [starts, ends] pairs -> the valid ones
      length = ends[None, :] - starts[:, None] + 1
      s, e = np.nonzero((length >= 1) & (length <= max_answer_length))
      scores = start_logits[row, starts[s]] + end_logits[row, ends[e]]
      candidates += zip(scores.tolist(), offsets[row, starts[s], 0].tolist(),
                        offsets[row, ends[e], 1].tolist())
    candidates.sort(key=lambda c: -c[0])  # stable: ties keep row, start, end order
    best, alternatives = None, {}
    for score, start_char, end_char in candidates:
      text = example.context[start_char:end_char]
      if text in alternatives:
        continue
      best = best or (text, start_char, end_char, score)
      alternatives[text] = score
      if len(alternatives) == n_best_size:
        break
    if best is None:
      predictions[example.id] = Prediction("", 0, 0, float("-inf"), ())
    else:
      predictions[example.id] = Prediction(best[0], best[1], best[2], best[3],
                                           tuple(alternatives.items()))
  return predictions


def _top(logits: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
  """Positions of the k largest allowed logits, largest first (ties: lower position first)."""
  positions = np.flatnonzero(allowed)
  return positions[np.argsort(-logits[positions], kind="stable")[:k]]


# ---------------------------------------------------------------------------------------------
# Metric (official SQuAD v1.1 definitions)


def normalize_answer(text: str) -> str:
  """Lowercase, drop ASCII punctuation, drop the words a/an/the, collapse whitespace."""
  text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
  text = re.sub(r"\b(a|an|the)\b", " ", text)
  return " ".join(text.split())


_PUNCTUATION = frozenset(string.punctuation)


def exact_match(prediction: str, reference: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(reference))


def f1(prediction: str, reference: str) -> float:
  """Token F1 of the normalized texts (bag of words: repeated words count as often as shared)."""
  predicted, gold = normalize_answer(prediction).split(), normalize_answer(reference).split()
  shared = sum((collections.Counter(predicted) & collections.Counter(gold)).values())
  if shared == 0:
    return 0.0
  precision, recall = shared / len(predicted), shared / len(gold)
  return 2 * precision * recall / (precision + recall)


def _scores(example: Example, prediction: str) -> tuple[float, float]:
  """(EM, F1) of a prediction: the best over the example's reference answers."""
  references = [text for text, _ in example.answers]
  return (max(exact_match(prediction, r) for r in references),
          max(f1(prediction, r) for r in references))


def _text(prediction) -> str:
  return prediction.text if isinstance(prediction, Prediction) else prediction


def squad_metrics(examples: Sequence[Example], predictions: Mapping[str, Any]
                  ) -> dict[str, float]:
  """{"exact_match", "f1"} in [0, 1] averaged over all `examples`, and their "count".

  `predictions`: {id: text} (or {id: Prediction}). As the official script, a question without
  a prediction scores 0 (and a warning counts them).
  """
  em_sum = f1_sum = 0.0
  missing = 0
  for example in examples:
    if example.id not in predictions:
      missing += 1
      continue
    em, f = _scores(example, _text(predictions[example.id]))
    em_sum, f1_sum = em_sum + em, f1_sum + f
  if missing:
    warnings.warn(f"{missing} of {len(examples)} questions have no prediction and score 0",
                  stacklevel=2)
  count = len(examples)
  return {"exact_match": em_sum / max(count, 1), "f1": f1_sum / max(count, 1), "count": count}


def write_predictions(path: str, predictions: Mapping[str, Any]) -> None:
  """Writes {id: text} (the official prediction file format) atomically."""
  write_json_atomic(path, {qid: _text(p) for qid, p in predictions.items()})


# ---------------------------------------------------------------------------------------------
# Error analysis


def question_type(question: str) -> str:
  """The first wh-word of the question ("In what year ..." -> "what"); who/whom/whose are
  "who", "how many"/"how much" are told apart from other "how"; "other" without one."""
  words = re.findall(r"[a-z]+", question.lower())
  for i, word in enumerate(words):
    if word in ("who", "whom", "whose"):
      return "who"
    if word == "how":
      following = words[i + 1] if i + 1 < len(words) else ""
      return f"how {following}" if following in ("many", "much") else "how"
    if word in QUESTION_TYPES:
      return word
  return "other"


def answer_length_bucket(example: Example) -> str:
  """Bucket of the first reference answer's length in whitespace-separated words."""
  words = len(example.answers[0][0].split())
  for name, low, high in ANSWER_LENGTH_BUCKETS:
    if words >= low and (high is None or words <= high):
      return name
  return ANSWER_LENGTH_BUCKETS[0][0]


def error_analysis(examples: Sequence[Example], predictions: Mapping[str, Any],
                   scores: Mapping[str, float], top_k: int = 10) -> dict[str, Any]:
  """Where a QA model fails, as a JSON-ready dict.

  Args:
    examples: the evaluated questions.
    predictions: {id: text} (or {id: Prediction}); a missing one counts as "".
    scores: {id: the prediction's score} (start + end logit) to rank confident mistakes.
    top_k: how many confident mistakes to keep.

  Returns:
    {"count", "exact_match", "f1",
     "by_question_type": [{"type", "count", "exact_match", "f1"}] in QUESTION_TYPES order,
     "by_answer_length": [{"bucket", "count", "exact_match", "f1"}] (words of the first
       reference answer: 1, 2-3, 4-6, >6),
     "confidently_wrong": top_k [{"id", "question", "predicted", "answers", "score", "f1"}]
       with exact match 0, highest score first}.
    exact_match / f1 are None for an empty group.
  """
  by_type = {t: [] for t in QUESTION_TYPES}
  by_length = {name: [] for name, _, _ in ANSWER_LENGTH_BUCKETS}
  wrong, everything = [], []
  for example in examples:
    predicted = _text(predictions.get(example.id, ""))
    em, f = _scores(example, predicted)
    everything.append((em, f))
    by_type[question_type(example.question)].append((em, f))
    by_length[answer_length_bucket(example)].append((em, f))
    if not em:
      wrong.append({"id": example.id, "question": example.question, "predicted": predicted,
                    "answers": [text for text, _ in example.answers],
                    "score": float(scores.get(example.id, float("-inf"))), "f1": f})
  wrong.sort(key=lambda w: -w["score"])

  def summary(pairs):
    if not pairs:
      return {"count": 0, "exact_match": None, "f1": None}
    em, f = np.mean(pairs, axis=0).tolist()
    return {"count": len(pairs), "exact_match": em, "f1": f}

  return {**summary(everything),
          "by_question_type": [{"type": t, **summary(p)} for t, p in by_type.items()],
          "by_answer_length": [{"bucket": b, **summary(p)} for b, p in by_length.items()],
          "confidently_wrong": wrong[:top_k]}
