"""What every bert_jax builder shares: configs, the held-out rule, text -> packed examples.

Pretraining builders store token ids (tokenized once, at preparation), so the vocabulary,
`max_seq_length` and NSP mode are part of the BuilderConfig, and the config *name*
encodes them (`v<vocab hash>_s128_nsp_p0.1`): different settings never collide in the
data directory. Classification builders store text and labels; the loader tokenizes
(short texts, any vocabulary or length without re-preparing).

Classification rows are stored in file order (`disable_shuffling`, integer keys).
Pretraining examples are stored in TFDS's key-hash order: that shuffle spreads a large
corpus over TFDS's on-disk buckets (generation order would sort it all in memory), and
the loader shuffles anyway.

Held-out rule for pretraining corpora: `round(2%)` of the documents (at least one when
there are two or more), chosen by `np.random.default_rng(seed).permutation(n)`, form
the `validation` split; the rest form `train`.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from bert_jax import pretraining_examples
from bert_jax.errors import ConfigError, DataError
from bert_jax.tokenizer import Tokenizer, resolve_vocab_file, vocab_hash

log = logging.getLogger("bert_jax.datasets")

VERSION = tfds.core.Version("1.0.0")
VALIDATION_FRACTION = 0.02
CHUNK_DOCUMENTS = 2048  # documents tokenized and packed together (random B comes from here)
CHUNK_CHARACTERS = 32_000_000  # ...or fewer, when documents are huge


@dataclasses.dataclass
class PretrainingConfig(tfds.core.BuilderConfig):
  """Packed-example settings; `name` must encode all of them (see `pretraining_config`)."""
  vocab_file: str = ""
  max_seq_length: int = 128
  nsp: bool = True
  short_seq_prob: float = 0.1
  max_documents: int = 0  # 0 = all; N = only the first N documents (quick runs, tests)
  source: str = ""  # local_text: the glob; tfds_text: the TFDS dataset name
  text_key: str = "text"  # tfds_text: the feature holding the document
  seed: int = 0  # held-out choice and packing randomness


def pretraining_config(*, vocab_file: str = "", max_seq_length: int = 128, nsp: bool = True,
                       short_seq_prob: float = 0.1, max_documents: int = 0, source: str = "",
                       source_tag: str = "", text_key: str = "text", seed: int = 0
                       ) -> PretrainingConfig:
  """A PretrainingConfig whose name encodes every setting that changes the stored examples."""
  if max_seq_length < 8:
    raise ConfigError(f"data.max_seq_length must be at least 8, got {max_seq_length}")
  if not 0.0 <= short_seq_prob <= 1.0:
    raise ConfigError(f"data.short_seq_prob must be in [0, 1], got {short_seq_prob}")
  vocab_file = resolve_vocab_file(vocab_file)
  parts = [source_tag] if source_tag else []
  parts += [f"v{vocab_hash(vocab_file)}", f"s{max_seq_length}"]
  parts += [f"nsp_p{short_seq_prob:g}"] if nsp else ["full"]
  if max_documents:
    parts.append(f"n{max_documents}")
  if seed:
    parts.append(f"r{seed}")
  return PretrainingConfig(
      name="_".join(parts), vocab_file=vocab_file, max_seq_length=max_seq_length, nsp=nsp,
      short_seq_prob=short_seq_prob, max_documents=max_documents, source=source,
      text_key=text_key, seed=seed,
      description=f"{'BERT NSP' if nsp else 'RoBERTa full-sentence'} packing, "
                  f"max_seq_length {max_seq_length}, vocab {vocab_file}")


def module_path(file: str):
  """A builder's `code_path`. TFDS would otherwise probe its package with the
  `importlib_resources` backport, which is not installed (nor needed)."""
  from etils import epath
  return epath.Path(file)


def validation_mask(num_documents: int, seed: int = 0) -> np.ndarray:
  """[num_documents] bool: the held-out documents (see the module docstring)."""
  n_val = 0 if num_documents < 2 else max(1, round(VALIDATION_FRACTION * num_documents))
  mask = np.zeros(num_documents, bool)
  mask[np.random.default_rng(seed).permutation(num_documents)[:n_val]] = True
  return mask


class PretrainingBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Documents -> sentences -> wordpiece ids -> packed examples; subclasses give `_documents`."""

  VERSION = VERSION
  BUILDER_CONFIG_CLASS = PretrainingConfig

  @abc.abstractmethod
  def _documents(self, quiet: bool = False) -> Iterator[str]:
    """The whole corpus, one string per document, always in the same order.

    `quiet`: the counting pass; do not log problems twice.
    """

  def _info(self) -> tfds.core.DatasetInfo:
    features = {
        "input_ids": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        "token_type_ids": tfds.features.Tensor(shape=(None,), dtype=np.int32),
    }
    if self.builder_config.nsp:
      features["next_sentence_label"] = tfds.features.Scalar(
          dtype=np.int32, doc="0: B follows A in the document, 1: B is from a random document")
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__, features=tfds.features.FeaturesDict(features),
        metadata=tfds.core.MetadataDict())

  def _limited_documents(self, quiet: bool = False) -> Iterator[str]:
    limit = self.builder_config.max_documents
    for i, document in enumerate(self._documents(quiet=quiet)):
      if limit and i >= limit:
        return
      yield document

  def _no_documents_message(self) -> str:
    """Why the corpus yielded no document (subclasses know their files)."""
    return (f"{self.name}: no documents to prepare (source: "
            f"{self.builder_config.source or self.name})")

  def _num_documents(self) -> int:
    """A first, quiet pass over the corpus (subclasses may know the count cheaply)."""
    return sum(1 for _ in self._limited_documents(quiet=True))

  def _split_generators(self, dl_manager):
    del dl_manager  # everything is local
    num_documents = self._num_documents()
    if num_documents == 0:
      raise DataError(self._no_documents_message())
    held_out = validation_mask(num_documents, self.builder_config.seed)
    splits = {"train": self._generate_examples(split="train", keep=~held_out)}
    if held_out.any():
      splits["validation"] = self._generate_examples(split="validation", keep=held_out)
    return splits

  def _generate_examples(self, split: str, keep: np.ndarray):
    cfg = self.builder_config
    tokenizer = Tokenizer(cfg.vocab_file)
    stats = dict.fromkeys(STAT_KEYS, 0)
    selected = (d for d, k in zip(self._limited_documents(quiet=split != "train"), keep) if k)
    for chunk_index, chunk in enumerate(chunks(selected)):
      examples, chunk_stats = pack_chunk(cfg, tokenizer, split, chunk_index, chunk)
      for key in STAT_KEYS:
        stats[key] += chunk_stats[key]
      for j, example in enumerate(examples):
        yield f"{chunk_index}_{j}", example
    self.info.metadata[split] = stats
    if split == "train":  # the train pass reads the whole corpus
      self.info.metadata["read"] = self._read_stats()
    log.info("%s/%s %s: %s", self.name, cfg.name, split, stats)

  def _read_stats(self) -> dict:
    """Counts from reading the corpus (skipped lines...), stored as metadata["read"]."""
    return {}


STAT_KEYS = ("documents", "sentences", "tokens", "examples", "example_tokens")


def chunks(documents: Iterator[str]) -> Iterator[list[str]]:
  """`CHUNK_DOCUMENTS` documents at a time (fewer when they pass `CHUNK_CHARACTERS`)."""
  chunk, chars = [], 0
  for document in documents:
    chunk.append(document)
    chars += len(document)
    if len(chunk) >= CHUNK_DOCUMENTS or chars >= CHUNK_CHARACTERS:
      yield chunk
      chunk, chars = [], 0
  if chunk:
    yield chunk


def pack_chunk(cfg: PretrainingConfig, tokenizer: Tokenizer, split: str, chunk_index: int,
               chunk: list[str]) -> tuple[list[dict], dict]:
  """One chunk of a split's documents -> (its packed examples, their STAT_KEYS counts).

  One generator per (seed, split, chunk): examples do not depend on chunk order, and NSP's
  random B sentences come from the same chunk."""
  documents = pretraining_examples.tokenize_documents(chunk, tokenizer)
  rng = np.random.default_rng([cfg.seed, split == "validation", chunk_index])
  if cfg.nsp:
    examples = list(pretraining_examples.pack_nsp(
        documents, max_seq_length=cfg.max_seq_length, short_seq_prob=cfg.short_seq_prob,
        rng=rng, cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id))
  else:
    examples = list(pretraining_examples.pack_full_sentences(
        documents, max_seq_length=cfg.max_seq_length, cls_id=tokenizer.cls_id,
        sep_id=tokenizer.sep_id))
  stats = {"documents": len(chunk), "sentences": sum(len(d) for d in documents),
           "tokens": int(sum(len(s) for d in documents for s in d)),
           "examples": len(examples),
           "example_tokens": sum(len(e["input_ids"]) for e in examples)}
  return examples, stats


def check_enough_examples(data_info: dict, split: str, batch_size: int,
                          batch_key: str = "config.batch_size") -> None:
  """DataError unless `split` of a prepared dataset (a task's `data_info(...)`) holds
  at least one batch: a corpus too small to train on, said before any step runs."""
  found = data_info.get("split_sizes", {})
  if split not in found:
    raise DataError(f"{data_info.get('name')}: no split {split!r} (it has {sorted(found)})")
  n = found[split]
  if n < batch_size:
    stats = (data_info.get("metadata") or {}).get(split) or {}
    documents = f" from {stats['documents']} documents" if "documents" in stats else ""
    raise DataError(f"{data_info.get('name')}: split {split!r} has {n} examples{documents}, "
                    f"fewer than one batch ({batch_key}={batch_size}); add data or lower "
                    f"{batch_key}")


PROBLEM_TYPES = ("single_label_classification", "regression", "multi_label_classification")


def label_feature(label_names, problem_type: str = "single_label_classification"):
  """The label feature of a problem type: ClassLabel (single), float32 Scalar (regression),
  Sequence(ClassLabel) (multi-label: a list of label ids)."""
  if problem_type == "single_label_classification":
    return tfds.features.ClassLabel(names=list(label_names))
  if problem_type == "regression":
    return tfds.features.Scalar(dtype=np.float32)
  if problem_type == "multi_label_classification":
    return tfds.features.Sequence(tfds.features.ClassLabel(names=list(label_names)))
  raise ConfigError(f"problem_type={problem_type!r} is not one of {', '.join(PROBLEM_TYPES)}")


def classification_info(builder, label_names, has_pair: bool, description: str,
                        citation: str = "", homepage: str = "", *,
                        problem_type: str = "single_label_classification"
                        ) -> tfds.core.DatasetInfo:
  """Features of every classification builder: text, optional text_pair, label
  (`label_feature` of `problem_type`)."""
  features = {"text": tfds.features.Text()}
  if has_pair:
    features["text_pair"] = tfds.features.Text()
  features["label"] = label_feature(label_names, problem_type)
  return tfds.core.DatasetInfo(
      builder=builder, description=description, features=tfds.features.FeaturesDict(features),
      supervised_keys=("text", "label"), citation=citation, homepage=homepage,
      metadata=tfds.core.MetadataDict(), disable_shuffling=True)
