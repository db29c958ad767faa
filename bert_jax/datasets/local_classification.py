"""`local_classification`: fine-tuning on your own labelled CSV or JSON Lines files.

`data.train_file` (required) and `data.eval_file` (optional, becomes the `validation`
split) are `.csv`, `.tsv` (with a header row) or `.jsonl` files with a `text` and a
`label` column/field and an optional `text_pair` (sentence-pair tasks; if the train file
has it, the eval file must too).

Labels: any strings (or numbers). Their names are `data.label_names` when given (the
declared set, in that order), otherwise the distinct labels of the train file, sorted
(numerically when all are integers). The names are stored with the prepared dataset and
the label ids are their positions. Rows are kept in file order.

Bad input is an error naming the file (and line): not UTF-8 (with the byte offset), an
empty file, a missing `text`/`label` column, a missing value, a label outside the set,
invalid JSON. Classification data is usually small and curated, so nothing is skipped
silently.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os

import tensorflow_datasets as tfds

from bert_jax.datasets import base

REQUIRED = ("text", "label")


@dataclasses.dataclass
class ClassificationConfig(tfds.core.BuilderConfig):
  train_file: str = ""
  eval_file: str = ""
  label_names: tuple[str, ...] = ()  # () = derived from the train file


def classification_config(train_file: str, eval_file: str = "",
                          label_names: tuple[str, ...] | list[str] | str = ()
                          ) -> ClassificationConfig:
  """A config named by a hash of the files (paths, sizes, mtimes) and declared labels."""
  if not train_file:
    raise ValueError("local_classification needs data.train_file (a .csv/.tsv/.jsonl file)")
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
  return ClassificationConfig(name=f"f{h.hexdigest()[:8]}", train_file=files[0],
                              eval_file=files[1] if eval_file else "",
                              label_names=tuple(str(n) for n in label_names))


def read_rows(path: str) -> tuple[list[dict], bool]:
  """Rows {"text", "label", "text_pair"?, "line"} of a .csv/.tsv/.jsonl file, and whether
  it has `text_pair`. Labels are returned as strings."""
  with open(path, "rb") as f:
    raw = f.read()
  try:
    content = raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: invalid UTF-8 at byte offset {e.start} ({e.reason})") from None
  if not content.strip():
    raise ValueError(f"{path}: empty file (expected a header row with text,label and rows)")
  if path.endswith(".jsonl"):
    return _jsonl_rows(path, content)
  if path.endswith((".csv", ".tsv")):
    return _csv_rows(path, content, "\t" if path.endswith(".tsv") else ",")
  raise ValueError(f"{path}: unsupported file type (expected .csv, .tsv or .jsonl)")


def _csv_rows(path: str, content: str, delimiter: str) -> tuple[list[dict], bool]:
  reader = csv.DictReader(io.StringIO(content, newline=""), delimiter=delimiter)
  columns = reader.fieldnames or []
  missing = [c for c in REQUIRED if c not in columns]
  if missing:
    raise ValueError(f"{path}: missing column{'s' if len(missing) > 1 else ''} "
                     f"{', '.join(map(repr, missing))} (header has {columns})")
  has_pair = "text_pair" in columns
  rows = []
  for row in reader:
    keys = REQUIRED + (("text_pair",) if has_pair else ())
    for key in keys:
      if row.get(key) is None:
        raise ValueError(f"{path}:{reader.line_num}: missing value for {key!r}")
    if not row["label"].strip():
      raise ValueError(f"{path}:{reader.line_num}: empty label")
    rows.append({"line": reader.line_num, **{k: row[k] for k in keys}})
  if not rows:
    raise ValueError(f"{path}: header but no rows")
  return rows, has_pair


def _jsonl_rows(path: str, content: str) -> tuple[list[dict], bool]:
  rows, has_pair = [], None
  for lineno, record in base.json_lines(path, content.splitlines()):
    if not isinstance(record, dict):
      raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
    missing = [k for k in REQUIRED if k not in record]
    if missing:
      raise ValueError(f"{path}:{lineno}: missing field{'s' if len(missing) > 1 else ''} "
                       f"{', '.join(map(repr, missing))} (has {sorted(record)})")
    if has_pair is None:
      has_pair = "text_pair" in record
    elif has_pair != ("text_pair" in record):
      raise ValueError(f"{path}:{lineno}: 'text_pair' must be on every record or on none")
    row = {"line": lineno, "text": str(record["text"]), "label": str(record["label"])}
    if has_pair:
      row["text_pair"] = str(record["text_pair"])
    rows.append(row)
  return rows, bool(has_pair)


def label_names_of(rows: list[dict]) -> list[str]:
  """Distinct labels, sorted numerically when all are integers, else as strings."""
  labels = {r["label"] for r in rows}
  try:
    return sorted(labels, key=int)
  except ValueError:
    return sorted(labels)


def check_labels(path: str, rows: list[dict], label_names: list[str]) -> None:
  allowed = set(label_names)
  for row in rows:
    if row["label"] not in allowed:
      raise ValueError(f"{path}:{row['line']}: label {row['label']!r} is not one of the "
                       f"declared labels {label_names}")


class LocalClassification(tfds.core.GeneratorBasedBuilder):
  """Your own labelled text (CSV/TSV/JSON Lines), for sequence classification."""

  code_path = base.module_path(__file__)

  VERSION = base.VERSION
  BUILDER_CONFIG_CLASS = ClassificationConfig

  def _read(self):
    if getattr(self, "_cache", None) is None:
      cfg = self.builder_config
      train_rows, has_pair = read_rows(cfg.train_file)
      names = list(cfg.label_names) or label_names_of(train_rows)
      check_labels(cfg.train_file, train_rows, names)
      splits = {"train": train_rows}
      if cfg.eval_file:
        eval_rows, eval_pair = read_rows(cfg.eval_file)
        if eval_pair != has_pair:
          raise ValueError(f"{cfg.eval_file}: {'has' if eval_pair else 'lacks'} a "
                           f"text_pair column but {cfg.train_file} "
                           f"{'does not' if eval_pair else 'does'}")
        check_labels(cfg.eval_file, eval_rows, names)
        splits["validation"] = eval_rows
      self._cache = (splits, has_pair, names)
    return self._cache

  def _info(self) -> tfds.core.DatasetInfo:
    _, has_pair, names = self._read()
    return base.classification_info(self, names, has_pair, description=self.__doc__)

  def _split_generators(self, dl_manager):
    del dl_manager
    splits, _, names = self._read()
    return {split: self._generate_examples(rows, names) for split, rows in splits.items()}

  def _generate_examples(self, rows, names):
    index = {name: i for i, name in enumerate(names)}
    for i, row in enumerate(rows):
      example = {"text": row["text"], "label": index[row["label"]]}
      if "text_pair" in row:
        example["text_pair"] = row["text_pair"]
      yield i, example
