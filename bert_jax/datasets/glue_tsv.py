"""`glue_tsv`: the GLUE tasks from the official TSV files (`<glue_dir>/<TASK>/{train,dev}.tsv`).

`data.glue_task` (cola, sst2, mrpc, stsb, rte, wnli, qnli: TFDS's names) and `data.glue_dir`
(the folder holding CoLA/, SST-2/, ...). Splits: `train` (train.tsv; QNLI has none offline)
and `validation` (dev.tsv). GLUE's test files carry no labels and are not read. Features:
`text`, `text_pair` (pair tasks), `label`: a ClassLabel with TFDS `glue`'s names, so ids match
`glue/<task>`; STS-B's label is its 0-5 similarity score (float32, regression).

The files are read as the GLUE download script writes them: split on tabs, never csv-quoted
(MRPC and SST-2 hold bare `"`), MRPC with a UTF-8 BOM, CoLA without a header (its dev file
without a final newline), STS-B with 10 columns (score last). Every row is kept, in file
order; anything unexpected is a DataError naming the file (and line).

Online, TFDS `glue/<task>` gives the same labelled examples: set `data.name="glue/<task>"`,
`data.text_key` / `data.text_pair_key` to `GlueSpec.tfds_keys` and `data.eval_split` to
"validation". Differences from TFDS's builder (tensorflow_datasets/text/glue.py): its text
features keep the task's names (`sentence1`, `question`, ...) and it adds `idx` (the 0-based
row); it also has the unlabelled `test` split (label -1); it builds MRPC from Microsoft's
original files (the same pairs as MRPC/train.tsv, dev.tsv); it silently drops rows with a
missing cell, which are errors here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os

import tensorflow_datasets as tfds

from bert_jax import fileio
from bert_jax.datasets import base
from bert_jax.errors import ConfigError, DataError

LAYOUT = "CoLA/, SST-2/, MRPC/, STS-B/, RTE/, WNLI/, QNLI/ each with train.tsv and dev.tsv"
CITATION = """@inproceedings{wang2019glue,
  title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer
          and Bowman, Samuel R.},
  booktitle={International Conference on Learning Representations},
  year={2019}
}"""
SPLIT_FILES = {"train": "train.tsv", "validation": "dev.tsv"}


@dataclasses.dataclass(frozen=True)
class GlueSpec:
  """One GLUE task: its TSV layout (0-based columns), labels, TFDS names, metrics, splits."""
  folder: str
  header: tuple[str, ...] | None  # None: no header row (CoLA)
  num_columns: int
  text: int
  pair: int | None  # None: a single-sentence task
  label: int
  label_names: tuple[str, ...]  # TFDS glue's ClassLabel names; () for regression (STS-B)
  file_labels: tuple[str, ...]  # the file's label values in id order; () = a float score
  tfds_keys: tuple[str, ...]  # TFDS glue/<task>'s text feature names: (text, pair?)
  metrics: tuple[str, ...]  # GLUE's official metrics, the first the task's main score
  splits: tuple[str, ...] = ("train", "validation")  # those present offline
  problem_type: str = "single_label_classification"

  @property
  def label_ids(self) -> dict[str, int]:
    return {value: i for i, value in enumerate(self.file_labels)}


_BINARY = ("0", "1")
_ENT = ("entailment", "not_entailment")
_NLI = ("index", "sentence1", "sentence2", "label")
_PAIR = ("sentence1", "sentence2")
SPECS: dict[str, GlueSpec] = {
    "cola": GlueSpec("CoLA", None, 4, 3, None, 1, ("unacceptable", "acceptable"), _BINARY,
                     ("sentence",), ("matthews_corrcoef",)),
    "sst2": GlueSpec("SST-2", ("sentence", "label"), 2, 0, None, 1, ("negative", "positive"),
                     _BINARY, ("sentence",), ("accuracy",)),
    "mrpc": GlueSpec("MRPC", ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"), 5, 3, 4,
                     0, ("not_equivalent", "equivalent"), _BINARY, _PAIR, ("f1", "accuracy")),
    "stsb": GlueSpec("STS-B", ("index", "genre", "filename", "year", "old_index", "source1",
                               "source2", "sentence1", "sentence2", "score"), 10, 7, 8, 9,
                     (), (), _PAIR, ("pearson", "spearman"), problem_type="regression"),
    "rte": GlueSpec("RTE", _NLI, 4, 1, 2, 3, _ENT, _ENT, _PAIR, ("accuracy",)),
    "wnli": GlueSpec("WNLI", _NLI, 4, 1, 2, 3, ("not_entailment", "entailment"), _BINARY, _PAIR,
                     ("accuracy",)),
    "qnli": GlueSpec("QNLI", ("index", "question", "sentence", "label"), 4, 1, 2, 3, _ENT, _ENT,
                     ("question", "sentence"), ("accuracy",), splits=("validation",)),
}


def spec_of(task: str) -> GlueSpec:
  if task not in SPECS:
    raise ConfigError(f"glue task {task!r} is not one of {', '.join(SPECS)}")
  return SPECS[task]


def _not_found(path: str) -> DataError:
  return DataError(f"{path}: file not found (glue_dir must be the GLUE distribution's layout: "
                   f"{LAYOUT}; QNLI dev.tsv only)")


def _lines(path: str) -> list[str]:
  """The file's lines (BOM and line ends removed; a final newline is optional)."""
  try:
    content = fileio.read_text(path, "the GLUE files are UTF-8")
  except (FileNotFoundError, NotADirectoryError):
    raise _not_found(path) from None
  lines = content.split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  return [line[:-1] if line.endswith("\r") else line for line in lines]


def _label(path: str, lineno: int, value: str, task: str, spec: GlueSpec):
  """A file's label cell -> the id (int), or STS-B's score (float)."""
  if spec.problem_type == "regression":
    try:
      score = float(value)
    except ValueError:
      score = math.nan
    if not math.isfinite(score):
      raise DataError(f"{path}:{lineno}: score {value!r} is not a number (glue/{task})")
    return score
  if value not in spec.label_ids:
    hint = "; CoLA's files have no header row" if spec.header is None and lineno == 1 else ""
    raise DataError(f"{path}:{lineno}: label {value!r} is not one of {list(spec.file_labels)} "
                    f"(glue/{task}){hint}")
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
      raise DataError(f"{path}:{lineno}: expected {spec.num_columns} tab-separated columns "
                      f"for glue/{task}, found {len(cells)}")
    row = {"text": cells[spec.text]}
    if spec.pair is not None:
      row["text_pair"] = cells[spec.pair]
    row.update(label=_label(path, lineno, cells[spec.label], task, spec), line=lineno)
    rows.append(row)
  if not rows:
    raise DataError(f"{path}: no rows (an empty GLUE file for glue/{task})")
  return rows


def split_files(task: str, glue_dir: str) -> dict[str, str]:
  """{split: absolute path} of `task`'s files under `glue_dir` (those that exist offline)."""
  spec = spec_of(task)
  folder = os.path.join(os.path.abspath(os.path.expanduser(glue_dir)), spec.folder)
  return {split: os.path.join(folder, SPLIT_FILES[split]) for split in spec.splits}


@dataclasses.dataclass
class GlueConfig(tfds.core.BuilderConfig):
  task: str = ""
  glue_dir: str = ""


def glue_config(task: str, glue_dir: str) -> GlueConfig:
  """A config named `<task>_<hash of the files' paths, sizes, mtimes>`."""
  glue_dir = os.path.abspath(os.path.expanduser(glue_dir))
  if not os.path.isdir(glue_dir):
    raise DataError(f"data.glue_dir={glue_dir}: not a folder (expected the GLUE layout: "
                    f"{LAYOUT})")
  h = hashlib.sha256()
  for path in split_files(task, glue_dir).values():
    if not os.path.isfile(path):
      raise _not_found(path)
    st = os.stat(path)
    h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
  return GlueConfig(name=f"{task}_{h.hexdigest()[:8]}", task=task, glue_dir=glue_dir,
                    description=f"glue/{task} from {glue_dir}/{spec_of(task).folder}")


class GlueTsv(tfds.core.GeneratorBasedBuilder):
  """A GLUE task from the official TSV files, for sequence classification (or regression)."""

  code_path = base.module_path(__file__)

  VERSION = base.VERSION
  BUILDER_CONFIG_CLASS = GlueConfig

  def _info(self) -> tfds.core.DatasetInfo:
    spec = spec_of(self.builder_config.task)
    return base.classification_info(
        self, spec.label_names, spec.pair is not None, description=self.__doc__,
        citation=CITATION, homepage="https://gluebenchmark.com",
        problem_type=spec.problem_type)

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg = self.builder_config
    return {split: self._generate_examples(read_glue(cfg.task, path))
            for split, path in split_files(cfg.task, cfg.glue_dir).items()}

  def _generate_examples(self, rows):
    for i, row in enumerate(rows):
      yield i, {k: v for k, v in row.items() if k != "line"}
