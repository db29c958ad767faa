"""TFDS builders for bert_jax, prepared to array_record and read without TensorFlow.

| data.name              | builder for    | splits            | stores                         |
|------------------------|----------------|-------------------|--------------------------------|
| movie_reviews_text     | pretraining    | train, validation | packed token ids               |
| local_text             | pretraining    | train, validation | packed token ids               |
| any prepared TFDS name | pretraining    | train, validation | packed token ids (`tfds_text`) |
| rotten_tomatoes        | classification | train, test       | text, label                    |
| local_classification   | classification | train, validation | text, (text_pair), label       |
| glue_tsv               | classification | train, validation | text, (text_pair), label/score |
| any prepared TFDS name | classification | as prepared       | as prepared                    |

`pretraining_builder` and `classification_builder` serve the tasks of those names
(`bert_jax/tasks/`); token classification and QA read their files directly.
Prepared data lives under `data_dir`: the argument, else `$BERT_JAX_DATA_DIR`, else
`~/tensorflow_datasets`. Each builder function prepares on first use
(`download_and_prepare(file_format="array_record")`) and reuses it afterwards. Processes on
one machine that share a data dir prepare it once: the first holds a lock file under
`<data_dir>/.bert_jax_locks/`, the others wait for it and then read its data. Hosts that
share a data dir over a network file system (multi-host) should prepare once beforehand
(`prepare(data_config)`): such locks may not hold across machines.

Importing this package imports tensorflow_datasets (never TensorFlow); the core
bert_jax package does not import it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys

from bert_jax.errors import ConfigError

log = logging.getLogger("bert_jax.datasets")

PRETRAINING_BUILDERS = ("movie_reviews_text", "local_text")
CLASSIFICATION_BUILDERS = ("rotten_tomatoes", "local_classification", "glue_tsv")


class _NoCustomConfigNotice(logging.Filter):
  """TFDS logs every config not listed in BUILDER_CONFIGS; ours never are (they are built
  from the experiment config), so the notice is noise."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Using custom data configuration")


logging.getLogger("absl").addFilter(_NoCustomConfigNotice())


def default_data_dir() -> str:
  return os.path.expanduser(os.environ.get("BERT_JAX_DATA_DIR") or "~/tensorflow_datasets")


def _field(data_config, key: str, default):
  value = getattr(data_config, key, default)
  return default if value is None else value


def pretraining_builder(data_config, data_dir: str | None = None):
  """The prepared corpus of `data_config` (packed token ids; prepared on first use)."""
  from bert_jax.datasets import base

  options = {}  # builder attributes that do not change the data (local_text: num_workers)
  data_dir = data_dir or default_data_dir()
  name = data_config.name
  kwargs = dict(vocab_file=_field(data_config, "vocab_file", ""),
                max_seq_length=int(_field(data_config, "max_seq_length", 128)),
                nsp=bool(_field(data_config, "nsp", True)),
                short_seq_prob=float(_field(data_config, "short_seq_prob", 0.1)),
                max_documents=int(_field(data_config, "max_documents", 0)))
  if name == "movie_reviews_text":
    from bert_jax.datasets.movie_reviews_text import MovieReviewsText as cls
    config = base.pretraining_config(**kwargs)
  elif name == "local_text":
    from bert_jax.datasets import local_text
    cls = local_text.LocalText
    text_files = _field(data_config, "text_files", "")
    if not text_files:
      raise ConfigError("data.name='local_text' needs data.text_files (a glob or folder "
                        "of .txt/.txt.gz/.jsonl files)")
    tag = "f" + local_text.files_fingerprint(local_text.list_files(text_files))
    config = base.pretraining_config(source=text_files, source_tag=tag, **kwargs)
    options = {"num_workers": int(_field(data_config, "num_workers", 0))}
  elif name in CLASSIFICATION_BUILDERS:
    raise ConfigError(f"data.name={name!r} is a classification dataset, not a corpus")
  else:  # a prepared TFDS text dataset, packed by tfds_text
    from bert_jax.datasets import tfds_text
    cls = tfds_text.TfdsText
    features = tfds_text.open_prepared(name, data_dir).info.features  # fail early
    text_key = _field(data_config, "text_key", "text")
    if text_key not in features:
      raise ConfigError(f"{name}: no text feature {text_key!r} (features: "
                        f"{sorted(features)}); set data.text_key")
    tag = name.replace("/", "-").replace(":", "-")
    config = base.pretraining_config(source=name, source_tag=tag, text_key=text_key,
                                     **kwargs)
  return _prepared(cls, config, data_dir, options)


def classification_builder(data_config, data_dir: str | None = None, *,
                           problem_type: str = "single_label_classification"):
  """The prepared labelled dataset of `data_config` (text, label; prepared on first use)."""
  data_dir = data_dir or default_data_dir()
  name = data_config.name
  if name == "rotten_tomatoes":
    from bert_jax.datasets.rotten_tomatoes import RottenTomatoes as cls
    config = None
  elif name == "local_classification":
    from bert_jax.datasets import local_classification as lc
    cls = lc.LocalClassification
    config = lc.classification_config(
        _field(data_config, "train_file", ""), _field(data_config, "eval_file", ""),
        _field(data_config, "label_names", ()), text_key=_field(data_config, "text_key", "text"),
        text_pair_key=_field(data_config, "text_pair_key", ""),
        label_key=_field(data_config, "label_key", "label"), problem_type=problem_type,
        label_separator=_field(data_config, "label_separator", "|"))
  elif name == "glue_tsv":
    from bert_jax.datasets import glue_tsv
    cls = glue_tsv.GlueTsv
    task, glue_dir = _field(data_config, "glue_task", ""), _field(data_config, "glue_dir", "")
    if task not in glue_tsv.SPECS:
      raise ConfigError(f"data.glue_task={task!r} is not one of {', '.join(glue_tsv.SPECS)}")
    if not glue_dir:
      raise ConfigError("set data.glue_dir to the folder holding CoLA/, SST-2/, ... "
                        "(e.g. ../shared/data/glue)")
    config = glue_tsv.glue_config(task, glue_dir)
  elif name in PRETRAINING_BUILDERS:
    raise ConfigError(f"data.name={name!r} is a pretraining corpus, not a labelled dataset")
  else:
    from bert_jax.datasets import tfds_text
    return tfds_text.open_prepared(name, data_dir)
  return _prepared(cls, config, data_dir)


def _prepared(cls, config, data_dir: str, options: dict | None = None):
  """`cls(config=config, data_dir=data_dir)`, prepared once however many processes ask
  (`options`: builder attributes set before preparing).

  Preparing holds `_lock(<data_dir>/.bert_jax_locks/<name>-<config>-<version>.lock)`; after
  it the builder is built anew (a builder reads whether it is prepared when constructed), so
  a process that waited reuses what the other one wrote.
  """
  import tensorflow_datasets as tfds
  if not sys.stderr.isatty():  # TFDS's tqdm bars are noise in a log file, a pipe or a test
    tfds.disable_progress_bar()
  builder = cls(config=config, data_dir=data_dir)
  if builder.data_path.exists():  # prepared (TFDS's test): no lock, the dir may be read-only
    return builder
  root = str(builder.data_dir_root)
  tag = os.path.relpath(builder.data_dir, root).replace(os.sep, "-")
  with _lock(os.path.join(root, ".bert_jax_locks", tag + ".lock"), f"{tag} in {root}"):
    builder = cls(config=config, data_dir=data_dir)  # another process may have prepared it
    for key, value in (options or {}).items():
      setattr(builder, key, value)
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder


@contextlib.contextmanager
def _lock(path: str, what: str):
  """An exclusive `flock` on the file `path`, created here and removed on release (a process
  that locked the removed file retries on the new one)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  waited = False
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      if not waited:
        log.info("waiting for another process preparing %s", what)
      waited = True
      fcntl.flock(fd, fcntl.LOCK_EX)
    try:
      if os.path.samestat(os.fstat(fd), os.stat(path)):
        break
    except FileNotFoundError:
      pass
    os.close(fd)
  try:
    yield
  finally:
    os.unlink(path)
    os.close(fd)


def get_builder(data_config, data_dir: str | None = None, kind: str | None = None):
  """The prepared builder of `data_config`: kind "corpus" (`pretraining_builder`) or
  "labelled" (`classification_builder`); our corpora's names imply "corpus", any other name
  defaults to "labelled"."""
  if kind not in (None, "corpus", "labelled"):
    raise ValueError(f"kind={kind!r} is not 'corpus' or 'labelled'")
  kind = kind or ("corpus" if data_config.name in PRETRAINING_BUILDERS else "labelled")
  if kind == "corpus":
    return pretraining_builder(data_config, data_dir)
  return classification_builder(data_config, data_dir)


def prepare(data_config, data_dir: str | None = None):
  """Prepares the dataset of `data_config` now (e.g. before starting many processes)."""
  return get_builder(data_config, data_dir)
