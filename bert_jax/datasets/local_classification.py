"""`local_classification`: fine-tuning on your own labelled CSV or JSON Lines files.

`data.train_file` (required) and `data.eval_file` (optional, becomes the `validation`
split) are `.csv`, `.tsv` (with a header row) or `.jsonl` files with a text and a label
column/field, named by `data.text_key` and `data.label_key` (default `text`, `label`), and an
optional second text for sentence-pair tasks: `data.text_pair_key` when set (then required),
else a `text_pair` column if there is one. If the train file has a pair, the eval file must too.
The prepared dataset stores them as `text`, `text_pair`, `label`.

Labels: any strings (or numbers). Their names are `data.label_names` when given (the
declared set, in that order), otherwise the distinct labels of the train file, sorted
(numerically when all are integers). The names are stored with the prepared dataset and
the label ids are their positions. Rows are kept in file order.

`problem_type` (config.problem_type): "single_label_classification" as above; "regression":
the label is a number (stored as float32, no names); "multi_label_classification": each row
has zero or more labels: a CSV/TSV cell split on `data.label_separator` (default "|"; an
empty cell is no labels), or in JSON Lines an array of strings or such a string. Each example
stores its label ids (sorted, distinct); the names are declared or the sorted distinct labels.

Rows whose text (or text pair) is empty or only whitespace are skipped and counted, with one
warning per file; a file left with no rows is an error. Every other problem is an error
(DataError) naming the file and line: not UTF-8 (with the byte offset), an empty file, a
missing column, a missing value or label, an eval label the train file does not have, a pair
in one file only, invalid JSON. Classification data is usually small and curated, so nothing
else is skipped.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import logging
import os

import tensorflow_datasets as tfds

from bert_jax import fileio
from bert_jax.datasets import base
from bert_jax.errors import ConfigError, DataError

log = logging.getLogger("bert_jax.datasets")

_warned: set[tuple] = set()  # (path, size, mtime): the empty-text warning, once per process


@dataclasses.dataclass
class ClassificationConfig(tfds.core.BuilderConfig):
  train_file: str = ""
  eval_file: str = ""
  label_names: tuple[str, ...] = ()  # () = derived from the train file
  text_key: str = "text"
  text_pair_key: str = ""  # "" = a `text_pair` column when the file has one
  label_key: str = "label"
  problem_type: str = "single_label_classification"
  label_separator: str = "|"  # multi-label: between the labels of a CSV/TSV cell


@dataclasses.dataclass(frozen=True)
class Columns:
  """Which column/field of the files holds the text, the optional pair and the label."""
  text: str = "text"
  label: str = "label"
  text_pair: str = ""  # "" = use a `text_pair` column if present


def classification_config(train_file: str, eval_file: str = "",
                          label_names: tuple[str, ...] | list[str] | str = (), *,
                          text_key: str = "text", text_pair_key: str = "",
                          label_key: str = "label",
                          problem_type: str = "single_label_classification",
                          label_separator: str = "|") -> ClassificationConfig:
  """A config named by a hash of the files (paths, sizes, mtimes), the declared labels, the
  column names and (when not single-label) the problem type and label separator."""
  if not train_file:
    raise DataError("local_classification needs data.train_file (a .csv/.tsv/.jsonl file)")
  if isinstance(label_names, str):
    label_names = [n.strip() for n in label_names.split(",") if n.strip()]
  files = [os.path.abspath(os.path.expanduser(f)) for f in (train_file, eval_file) if f]
  h = hashlib.sha256()
  for path in files:
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path}: classification file not found")
    st = os.stat(path)
    h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
  h.update("\0".join(label_names).encode())
  keys = (text_key or "text", text_pair_key or "", label_key or "label")
  if keys != ("text", "", "label"):  # the default keeps the names of already prepared data
    h.update(("\1" + "\0".join(keys)).encode())
  base.label_feature((), problem_type)  # a ConfigError for an unknown problem type
  if problem_type == "regression" and label_names:
    raise ConfigError(f"data.label_names={list(label_names)} is for class labels, not "
                      "problem_type='regression'")
  if problem_type == "multi_label_classification" and not label_separator:
    raise ConfigError("data.label_separator='' cannot split multi-label cells; set e.g. '|'")
  if problem_type != "single_label_classification":  # single label keeps the old names
    h.update(f"\2{problem_type}\0{label_separator}".encode())
  return ClassificationConfig(name=f"f{h.hexdigest()[:8]}", train_file=files[0],
                              eval_file=files[1] if eval_file else "",
                              label_names=tuple(str(n) for n in label_names),
                              text_key=keys[0], text_pair_key=keys[1], label_key=keys[2],
                              problem_type=problem_type, label_separator=label_separator)


def read_rows(path: str, columns: Columns = Columns(), *,
              problem_type: str = "single_label_classification", label_separator: str = "|"
              ) -> tuple[list[dict], bool]:
  """Rows {"text", "label", "text_pair"?, "line"} of a .csv/.tsv/.jsonl file, and whether
  it has a text pair. Labels are strings (single label), floats (regression) or lists of
  strings (multi-label); rows with empty text are skipped."""
  content = fileio.read_text(path, "the file is not UTF-8 text; convert it (e.g. iconv -f "
                             "latin1 -t utf-8)")
  if not content.strip():
    raise DataError(f"{path}: empty file (expected a header row with {columns.text},"
                    f"{columns.label} and rows)")
  multi = problem_type == "multi_label_classification"
  if path.endswith(".jsonl"):
    rows, has_pair = _jsonl_rows(path, content, columns, multi)
  elif path.endswith((".csv", ".tsv")):
    rows, has_pair = _csv_rows(path, content, "\t" if path.endswith(".tsv") else ",", columns,
                               multi)
  else:
    raise DataError(f"{path}: unsupported file type (expected .csv, .tsv or .jsonl)")
  for row in rows:
    row["label"] = _parse_label(path, row, problem_type, label_separator)
  return _drop_empty_texts(path, rows), has_pair


def _parse_label(path: str, row: dict, problem_type: str, separator: str):
  """A row's raw label (a string, or a JSON list) -> str / float / list[str]."""
  label = row["label"]
  if problem_type == "regression":
    try:
      value = float(label)
    except (TypeError, ValueError):
      value = float("nan")
    if isinstance(label, list) or value != value or value in (float("inf"), float("-inf")):
      raise DataError(f"{path}:{row['line']}: label {label!r} is not a number "
                      f"(problem_type='regression')")
    return value
  if problem_type == "multi_label_classification":
    if isinstance(label, list):
      bad = [x for x in label if not isinstance(x, str) or not x.strip()]
      if bad:
        raise DataError(f"{path}:{row['line']}: label {bad[0]!r} in {label!r} is not a "
                        "non-empty string (problem_type='multi_label_classification')")
      parts = [x.strip() for x in label]
    else:
      parts = [x.strip() for x in str(label or "").split(separator) if x.strip()]
    return sorted(set(parts), key=parts.index)
  return label


def _drop_empty_texts(path: str, rows: list[dict]) -> list[dict]:
  has_text = [bool(r["text"].strip() and r.get("text_pair", "x").strip()) for r in rows]
  kept = [r for r, ok in zip(rows, has_text) if ok]
  if not kept:
    raise DataError(f"{path}: no row has text (all {len(rows)} are empty)")
  st = os.stat(path)
  if len(kept) < len(rows) and (path, st.st_size, st.st_mtime_ns) not in _warned:
    _warned.add((path, st.st_size, st.st_mtime_ns))
    first = next(r["line"] for r, ok in zip(rows, has_text) if not ok)
    log.warning("%s: skipped %d of %d rows with empty text (first at line %d)", path,
                len(rows) - len(kept), len(rows), first)
  return kept


def _pair_key(available, columns: Columns) -> str:
  """The text-pair column of a file: the declared one, else `text_pair` if present."""
  if columns.text_pair:
    return columns.text_pair
  return "text_pair" if "text_pair" in available else ""


def _key_hint(missing: str, columns: Columns) -> str:
  which = {columns.text: "data.text_key", columns.label: "data.label_key",
           columns.text_pair: "data.text_pair_key"}.get(missing, "")
  return f"; set {which} to the column that holds it" if which else ""


def _csv_rows(path: str, content: str, delimiter: str, columns: Columns, multi: bool = False
              ) -> tuple[list[dict], bool]:
  reader = csv.DictReader(io.StringIO(content, newline=""), delimiter=delimiter)
  header = reader.fieldnames or []
  pair = _pair_key(header, columns)
  wanted = {"text": columns.text, "label": columns.label, **({"text_pair": pair} if pair else {})}
  missing = [c for c in wanted.values() if c not in header]
  if missing:
    raise DataError(f"{path}: missing column{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(map(repr, missing))} (header has {header})"
                    + _key_hint(missing[0], columns))
  rows = []
  for row in reader:
    for column in wanted.values():
      if row.get(column) is None:
        raise DataError(f"{path}:{reader.line_num}: missing value for {column!r}")
    if not multi and not row[columns.label].strip():  # multi-label: empty = no labels
      raise DataError(f"{path}:{reader.line_num}: empty label")
    rows.append({"line": reader.line_num, **{k: row[c] for k, c in wanted.items()}})
  if not rows:
    raise DataError(f"{path}: header but no rows")
  return rows, bool(pair)


def _jsonl_rows(path: str, content: str, columns: Columns, multi: bool = False
                ) -> tuple[list[dict], bool]:
  rows, has_pair = [], None
  for lineno, record in fileio.json_lines(path, content.splitlines()):
    if not isinstance(record, dict):
      raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
    pair = _pair_key(record, columns)
    missing = [k for k in (columns.text, columns.label) + ((pair,) if pair else ())
               if k not in record]
    if missing:
      raise DataError(f"{path}:{lineno}: missing field{'s' if len(missing) > 1 else ''} "
                      f"{', '.join(map(repr, missing))} (has {sorted(record)})"
                      + _key_hint(missing[0], columns))
    if has_pair is None:
      has_pair = bool(pair)
    elif has_pair != bool(pair):
      raise DataError(f"{path}:{lineno}: 'text_pair' must be on every record or on none")
    label = record[columns.label]
    if not multi and (label is None or not str(label).strip()):
      raise DataError(f"{path}:{lineno}: empty label")
    if not (multi and isinstance(label, list)):
      label = "" if label is None else str(label)
    row = {"line": lineno, "text": str(record[columns.text] or ""), "label": label}
    if has_pair:
      row["text_pair"] = str(record[pair] or "")
    rows.append(row)
  if not rows:
    raise DataError(f"{path}: no records")
  return rows, bool(has_pair)


def label_names_of(rows: list[dict]) -> list[str]:
  """Distinct labels, sorted numerically when all are integers, else as strings."""
  labels = {x for r in rows for x in (r["label"] if isinstance(r["label"], list)
                                      else [r["label"]])}
  try:
    return sorted(labels, key=int)
  except ValueError:
    return sorted(labels)


def check_labels(path: str, rows: list[dict], label_names: list[str],
                 source: str = "the declared labels", hint: str = "") -> None:
  """Every row's label is one of `label_names` (`source` says where those came from)."""
  allowed = set(label_names)
  for row in rows:
    for label in row["label"] if isinstance(row["label"], list) else [row["label"]]:
      if label not in allowed:
        raise DataError(f"{path}:{row['line']}: label {label!r} is not one of {source} "
                        f"{label_names}{hint}")


class LocalClassification(tfds.core.GeneratorBasedBuilder):
  """Your own labelled text (CSV/TSV/JSON Lines), for sequence classification."""

  code_path = base.module_path(__file__)

  VERSION = base.VERSION
  BUILDER_CONFIG_CLASS = ClassificationConfig

  def _read(self):
    if getattr(self, "_cache", None) is None:
      cfg = self.builder_config
      columns = Columns(text=cfg.text_key, label=cfg.label_key, text_pair=cfg.text_pair_key)
      reading = dict(problem_type=cfg.problem_type, label_separator=cfg.label_separator)
      regression = cfg.problem_type == "regression"
      train_rows, has_pair = read_rows(cfg.train_file, columns, **reading)
      names = [] if regression else list(cfg.label_names) or label_names_of(train_rows)
      source = "the declared labels" if cfg.label_names else f"the labels of {cfg.train_file}"
      hint = (" (data.label_names)" if cfg.label_names
              else " (declare every label in data.label_names)")
      if not regression:
        check_labels(cfg.train_file, train_rows, names, source, hint)
      splits = {"train": train_rows}
      if cfg.eval_file:
        eval_rows, eval_pair = read_rows(cfg.eval_file, columns, **reading)
        if eval_pair != has_pair:
          raise DataError(f"{cfg.eval_file}: {'has' if eval_pair else 'lacks'} a "
                          f"text pair column but {cfg.train_file} "
                          f"{'does not' if eval_pair else 'does'}")
        if not regression:
          check_labels(cfg.eval_file, eval_rows, names, source, hint)
        splits["validation"] = eval_rows
      self._cache = (splits, has_pair, names)
    return self._cache

  def _info(self) -> tfds.core.DatasetInfo:
    _, has_pair, names = self._read()
    return base.classification_info(self, names, has_pair, description=self.__doc__,
                                    problem_type=self.builder_config.problem_type)

  def _split_generators(self, dl_manager):
    del dl_manager
    splits, _, names = self._read()
    return {split: self._generate_examples(rows, names) for split, rows in splits.items()}

  def _generate_examples(self, rows, names):
    index = {name: i for i, name in enumerate(names)}
    problem_type = self.builder_config.problem_type
    for i, row in enumerate(rows):
      label = row["label"]
      if problem_type == "regression":
        label = float(label)
      elif problem_type == "multi_label_classification":
        label = sorted(index[x] for x in label)
      else:
        label = index[label]
      example = {"text": row["text"], "label": label}
      if "text_pair" in row:
        example["text_pair"] = row["text_pair"]
      yield i, example
