"""`local_text`: pretraining on your own documents (`--config.data.text_files=GLOB`).

`text_files` is a glob (`**` allowed), a folder (every supported file under it), or
several of these separated by commas; files are read in sorted path order.

Documents:
- `.txt` / `.txt.gz`: blank-line-separated blocks are documents (so a file without blank
  lines is one document; the google-research/bert format is one sentence per line and a
  blank line between documents). Every line break ends a sentence: unwrap hard-wrapped
  prose first.
- `.jsonl` / `.jsonl.gz`: one document per line, a JSON object with a string `"text"`.

Preparation streams (`stream_prepare`): memory does not grow with the corpus, chunks are
tokenized and packed by `data.num_workers` processes (0: one per core), and a killed run
resumes after its last finished shard. `python -m bert_jax.corpus` prepares from the shell.

Bad input (checked by the first, counting pass over the corpus, before any example is
written; errors are DataError, one line naming the file):
- A file that is not UTF-8 text is an error: one with a NUL byte (binary data), or one where
  more than 10% of the non-blank lines are invalid UTF-8 (another encoding, e.g. latin-1);
  the message gives the byte offset of the first bad byte (in the decompressed stream for
  `.gz`).
- Below that, invalid UTF-8 is *skipped and counted*: the offending line (a `.txt` line or a
  `.jsonl` record) is dropped, one warning per file gives the count and the first byte
  offset, and the counts land in the prepared dataset's metadata
  (`pretraining.data_info(...)["metadata"]["read"]["invalid_utf8_lines"]`).
- Empty files and files with only blank lines are skipped with a warning naming them; a
  corpus left with no document at all is an error that says why (empty, not UTF-8, ...).
- A glob matching nothing, an unsupported file type, a `.jsonl` line that is not a JSON
  object with a string `"text"`: errors naming the file (and line).
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import hashlib
import logging
import os
from collections.abc import Iterator

import tensorflow_datasets as tfds

from bert_jax import fileio
from bert_jax.datasets import base
from bert_jax.errors import DataError

log = logging.getLogger("bert_jax.datasets")

SUFFIXES = (".txt", ".txt.gz", ".jsonl", ".jsonl.gz")
MAX_INVALID_UTF8_FRACTION = 0.1  # of a file's non-blank lines; more: not a UTF-8 file


@dataclasses.dataclass
class ReadStats:
  """What reading skipped (all counts), for the warnings and the dataset metadata."""
  files: int = 0
  documents: int = 0
  empty_files: int = 0
  invalid_utf8_lines: int = 0
  empty_documents: int = 0  # .jsonl records whose text is empty or whitespace
  empty_file_paths: list[str] = dataclasses.field(default_factory=list)
  blank_file_paths: list[str] = dataclasses.field(default_factory=list)  # only blank lines


def list_files(text_files: str) -> list[str]:
  """Expands `text_files` (globs, folders, comma-separated) into sorted supported files."""
  files = set()
  for pattern in (p.strip() for p in text_files.split(",")):
    if not pattern:
      continue
    pattern = os.path.expanduser(pattern)
    if os.path.isdir(pattern):
      matches = [p for p in glob.glob(os.path.join(pattern, "**", "*"), recursive=True)
                 if p.endswith(SUFFIXES)]
    else:
      matches = glob.glob(pattern, recursive=True)
      unsupported = [p for p in matches if os.path.isfile(p) and not p.endswith(SUFFIXES)]
      if unsupported:
        raise DataError(f"{unsupported[0]}: unsupported file type for local_text "
                         f"(expected {', '.join(SUFFIXES)})")
    files.update(os.path.abspath(p) for p in matches if os.path.isfile(p))
  if not files:
    raise FileNotFoundError(f"data.text_files={text_files!r} matches no "
                            f"{'/'.join(SUFFIXES)} files")
  return sorted(files)


def files_fingerprint(files: list[str]) -> str:
  """Short hash of paths, sizes and modification times: edited corpora are re-prepared."""
  h = hashlib.sha256()
  for path in files:
    st = os.stat(path)
    h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
  return h.hexdigest()[:8]


def _decoded_lines(path: str, stats: ReadStats, quiet: bool) -> Iterator[str]:
  """The lines of `path` without line ends; undecodable lines skipped, counted and summed up
  in one warning; a binary or non-UTF-8 file is a DataError (see the module docstring)."""
  opener = gzip.open if path.endswith(".gz") else open
  offset = lines = invalid = 0
  first_error = None  # (byte offset, reason) of the first undecodable line
  with opener(path, "rb") as f:
    for raw in f:
      nul = raw.find(b"\0")
      if nul >= 0:
        raise DataError(f"{path}: binary data, not text (a NUL byte at offset {offset + nul}); "
                        "remove it from data.text_files")
      if raw.strip():
        lines += 1
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        invalid += 1
        first_error = first_error or (offset + e.start, e.reason)
        offset += len(raw)
        continue
      offset += len(raw)
      yield line.rstrip("\r\n")
  stats.invalid_utf8_lines += invalid
  if invalid > MAX_INVALID_UTF8_FRACTION * lines:
    raise DataError(f"{path}: not UTF-8 text (invalid UTF-8 at byte offset {first_error[0]}: "
                    f"{first_error[1]}; {invalid} of {lines} lines); convert it (e.g. iconv -f "
                    "latin1 -t utf-8) or remove it from data.text_files")
  if invalid and not quiet:
    log.warning("%s: invalid UTF-8 at byte offset %d (%s); %d of %d lines skipped", path,
                first_error[0], first_error[1], invalid, lines)
  if offset == 0:
    stats.empty_files += 1
    stats.empty_file_paths.append(path)
    if not quiet:
      log.warning("%s: empty file; skipped", path)


def _txt_documents(path: str, stats: ReadStats, quiet: bool) -> Iterator[str]:
  block: list[str] = []
  found = False
  for line in _decoded_lines(path, stats, quiet):
    if line.strip():
      block.append(line)
    elif block:
      found = True
      yield "\n".join(block)
      block = []
  if block:
    found = True
    yield "\n".join(block)
  if not found and os.path.getsize(path):
    stats.blank_file_paths.append(path)
    if not quiet:
      log.warning("%s: no text (only blank lines); skipped", path)


def _jsonl_documents(path: str, stats: ReadStats, quiet: bool) -> Iterator[str]:
  for lineno, record in fileio.json_lines(path, _decoded_lines(path, stats, quiet)):
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
      raise DataError(f"{path}:{lineno}: expected a JSON object with a string \"text\" "
                       f"field, got {type(record).__name__}"
                       + (f" with keys {sorted(record)}" if isinstance(record, dict) else ""))
    if not record["text"].strip():
      stats.empty_documents += 1
      continue
    yield record["text"]


def iter_documents(files: list[str], stats: ReadStats | None = None, quiet: bool = False
                   ) -> Iterator[str]:
  """Documents of `files` in order (see the module docstring); counts problems in `stats`."""
  stats = ReadStats() if stats is None else stats
  for path in files:
    stats.files += 1
    reader = _jsonl_documents if path.endswith((".jsonl", ".jsonl.gz")) else _txt_documents
    for document in reader(path, stats, quiet):
      stats.documents += 1
      yield document


class LocalText(base.PretrainingBuilder):
  """Your own .txt/.txt.gz/.jsonl documents, packed for BERT pretraining."""

  code_path = base.module_path(__file__)
  num_workers = 0  # preparation processes (stream_prepare: 0 = one per core)
  shard_examples = 0  # examples per array_record shard (0: stream_prepare.SHARD_EXAMPLES)
  on_shard = None  # stream_prepare's hook after every finished shard (tests)

  def _download_and_prepare(self, dl_manager, download_config) -> None:
    """Streamed, parallel and resumable (stream_prepare) instead of TFDS's split writer."""
    del dl_manager, download_config  # everything is local
    from bert_jax.datasets import stream_prepare
    infos = stream_prepare.prepare(
        self, self.data_path, num_workers=self.num_workers,
        shard_examples=self.shard_examples or stream_prepare.SHARD_EXAMPLES,
        on_shard=self.on_shard)
    self.info.set_splits(tfds.core.SplitDict(infos))

  def _documents(self, quiet: bool = False) -> Iterator[str]:
    stats = ReadStats()
    if quiet:
      self._count_stats = stats
    else:
      self._stats = stats
    yield from iter_documents(list_files(self.builder_config.source), stats, quiet)

  def _no_documents_message(self) -> str:
    source = self.builder_config.source
    stats = getattr(self, "_count_stats", None) or ReadStats()
    if stats.files == 1 and stats.empty_file_paths:
      return f"{stats.empty_file_paths[0]}: empty file; no documents to prepare"
    if stats.files == 1 and stats.blank_file_paths:
      return f"{stats.blank_file_paths[0]}: only blank lines; no documents to prepare"
    parts = [f"{len(stats.empty_file_paths)} empty" if stats.empty_file_paths else "",
             f"{len(stats.blank_file_paths)} only blank lines" if stats.blank_file_paths else "",
             f"{stats.empty_documents} empty .jsonl texts" if stats.empty_documents else ""]
    detail = ", ".join(p for p in parts if p)
    return (f"data.text_files={source!r}: no documents in {stats.files} files"
            + (f" ({detail})" if detail else ""))

  def _read_stats(self) -> dict:
    stats = getattr(self, "_stats", None)
    if stats is None:
      return {}
    return {k: v for k, v in dataclasses.asdict(stats).items() if not k.endswith("_paths")}
