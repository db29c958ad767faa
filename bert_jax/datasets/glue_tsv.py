"""`glue_tsv`: the GLUE tasks from the official TSV files (`<glue_dir>/<TASK>/{train,dev}.tsv`).

`data.glue_task` (cola, sst2, mrpc, stsb, rte, wnli, qnli) and `data.glue_dir` (the folder
holding CoLA/, SST-2/, ...). Splits: `train` (train.tsv; QNLI has none here) and `validation`
(dev.tsv). Label names are TFDS's `glue` builder's, so ids match `glue/<task>`; STS-B's label
is its 0-5 similarity score (a float32 scalar, regression).

The files are read as the GLUE download script writes them: split on tabs, never csv-quoted
(text holds bare `"`), MRPC with a UTF-8 BOM, CoLA without a header (and its dev file without a
final newline). Every row is kept in file order; anything unexpected is a DataError naming the
file and line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import tensorflow_datasets as tfds

from bert_jax.datasets import base
from bert_jax.errors import DataError

_LAYOUT = "CoLA/, SST-2/, MRPC/, STS-B/, RTE/, WNLI/, QNLI/"
_CITATION = """@inproceedings{wang2019glue,
  title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer
          and Bowman, Samuel R.},
  booktitle={International Conference on Learning Representations},
  year={2019}
}"""
_NLI_HEADER = ("index", "sentence1", "sentence2", "label")
_STSB_HEADER = ("index", "genre", "filename", "year", "old_index", "source1", "source2",
                "sentence1", "sentence2", "score")


@dataclasses.dataclass(frozen=True)
class GlueSpec:
  """One GLUE task's TSV layout: columns (0-based), labels and splits."""
  folder: str
  header: tuple[str, ...] | None  # None: no header row (CoLA)
  num_columns: int
  text: int
  pair: int | None  # None: a single-sentence task
  label: int  # -1: the last column
  label_names: tuple[str, ...]  # () for regression (STS-B)
  label_ids: dict  # the file's label string -> id
  problem_type: str = "single_label_classification"
  has_train: bool = True


def _digits(names: tuple[str, ...]) -> dict:
  return {str(i): i for i in range(len(names))}


def _by_name(names: tuple[str, ...]) -> dict:
  return {name: i for i, name in enumerate(names)}


def _spec(folder, header, num_columns, text, pair, label, names, ids, **kw) -> GlueSpec:
  return GlueSpec(folder, header, num_columns, text, pair, label, names, ids(names), **kw)


_ENT = ("entailment", "not_entailment")
SPECS: dict[str, GlueSpec] = {
    "cola": _spec("CoLA", None, 4, 3, None, 1, ("unacceptable", "acceptable"), _digits),
    "sst2": _spec("SST-2", ("sentence", "label"), 2, 0, None, 1, ("negative", "positive"),
                  _digits),
    "mrpc": _spec("MRPC", ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"), 5, 3, 4, 0,
                  ("not_equivalent", "equivalent"), _digits),
    "stsb": _spec("STS-B", _STSB_HEADER, 10, 7, 8, -1, (), _digits, problem_type="regression"),
    "rte": _spec("RTE", _NLI_HEADER, 4, 1, 2, 3, _ENT, _by_name),
    "wnli": _spec("WNLI", _NLI_HEADER, 4, 1, 2, 3, ("not_entailment", "entailment"), _digits),
    "qnli": _spec("QNLI", ("index", "question", "sentence", "label"), 4, 1, 2, 3, _ENT,
                  _by_name, has_train=False),
}


def spec_of(task: str) -> GlueSpec:
  if task not in SPECS:
    raise DataError(f"glue task {task!r} is not one of {sorted(SPECS)}")
  return SPECS[task]


def _lines(path: str) -> list[str]:
  """The file's lines (BOM and line ends removed; a final newline is optional)."""
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except FileNotFoundError:
    raise DataError(f"{path}: file not found (glue_dir must hold the GLUE layout "
                    f"{_LAYOUT} each with train.tsv / dev.tsv)") from None
  try:
    content = raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: invalid UTF-8 at byte offset {e.start} ({e.reason})") from None
  lines = content.split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  return [line[:-1] if line.endswith("\r") else line for line in lines]


def _label(path: str, lineno: int, value: str, spec: GlueSpec):
  if spec.problem_type == "regression":
    try:
      return float(value)
    except ValueError:
      raise DataError(f"{path}:{lineno}: score {value!r} is not a number") from None
  if value not in spec.label_ids:
    raise DataError(f"{path}:{lineno}: label {value!r} is not one of {list(spec.label_ids)}")
  return spec.label_ids[value]


def read_glue(task: str, path: str) -> list[dict]:
  """Rows {"text", "text_pair"?, "label" (int id; float score for stsb), "line"} of one
  GLUE TSV file of `task`, in file order."""
  spec = spec_of(task)
  lines = _lines(path)
  first = 1
  if spec.header is not None:
    found = lines[0].split("\t") if lines else []
    if tuple(found) != spec.header:
      raise DataError(f"{path}: expected header {list(spec.header)} for glue/{task}, "
                      f"found {found}")
    first = 2
  rows = []
  for lineno, line in enumerate(lines[first - 1:], start=first):
    cells = line.split("\t")
    if len(cells) != spec.num_columns:
      raise DataError(f"{path}:{lineno}: expected {spec.num_columns} tab-separated columns, "
                      f"found {len(cells)}")
    row = {"text": cells[spec.text], "label": _label(path, lineno, cells[spec.label], spec),
           "line": lineno}
    if spec.pair is not None:
      row["text_pair"] = cells[spec.pair]
    rows.append(row)
  return rows


def split_files(task: str, glue_dir: str) -> dict[str, str]:
  """{split: absolute path} of `task` under `glue_dir`."""
  spec = spec_of(task)
  folder = os.path.join(os.path.abspath(os.path.expanduser(glue_dir)), spec.folder)
  files = {"train": os.path.join(folder, "train.tsv")} if spec.has_train else {}
  files["validation"] = os.path.join(folder, "dev.tsv")
  return files


@dataclasses.dataclass
class GlueConfig(tfds.core.BuilderConfig):
  task: str = ""
  glue_dir: str = ""


def glue_config(task: str, glue_dir: str) -> GlueConfig:
  """A config named `<task>_<hash of the files' paths, sizes, mtimes>`."""
  h = hashlib.sha256()
  for path in split_files(task, glue_dir).values():
    if not os.path.isfile(path):
      raise DataError(f"{path}: file not found (glue_dir must hold the GLUE layout "
                      f"{_LAYOUT} each with train.tsv / dev.tsv)")
    st = os.stat(path)
    h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
  return GlueConfig(name=f"{task}_{h.hexdigest()[:8]}", task=task,
                    glue_dir=os.path.abspath(os.path.expanduser(glue_dir)))


class GlueTsv(tfds.core.GeneratorBasedBuilder):
  """A GLUE task from the official TSV files, for sequence classification (or regression)."""

  code_path = base.module_path(__file__)

  VERSION = base.VERSION
  BUILDER_CONFIG_CLASS = GlueConfig

  def _info(self) -> tfds.core.DatasetInfo:
    spec = spec_of(self.builder_config.task)
    return base.classification_info(
        self, spec.label_names, spec.pair is not None, description=self.__doc__,
        citation=_CITATION, homepage="https://gluebenchmark.com",
        problem_type=spec.problem_type)

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg = self.builder_config
    return {split: self._generate_examples(read_glue(cfg.task, path))
            for split, path in split_files(cfg.task, cfg.glue_dir).items()}

  def _generate_examples(self, rows):
    for i, row in enumerate(rows):
      yield i, {k: v for k, v in row.items() if k != "line"}
