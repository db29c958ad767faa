"""`local_text`: pretraining on your own documents (`--config.data.text_files=GLOB`).

`text_files` is a glob (`**` allowed), a folder (every supported file under it), or
several of these separated by commas; files are read in sorted path order.

Documents:
- `.txt` / `.txt.gz`: blank-line-separated blocks are documents (so a file without blank
  lines is one document; the google-research/bert format is one sentence per line and a
  blank line between documents). Every line break ends a sentence: unwrap hard-wrapped
  prose first.
- `.jsonl` / `.jsonl.gz`: one document per line, a JSON object with a string `"text"`.

Bad input:
- Invalid UTF-8 is *skipped and counted*: the offending line (a `.txt` line or a `.jsonl`
  record) is dropped, a warning names the file and the byte offset (in the decompressed
  stream for `.gz`), and the counts land in the prepared dataset's metadata
  (`dataset_info(...)["metadata"]["read"]["invalid_utf8_lines"]`).
- Empty files and files with only blank lines are skipped with a warning naming them.
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

from bert_jax.datasets import base

log = logging.getLogger("bert_jax.datasets")

SUFFIXES = (".txt", ".txt.gz", ".jsonl", ".jsonl.gz")


@dataclasses.dataclass
class ReadStats:
  """What reading skipped (all counts), for the warnings and the dataset metadata."""
  files: int = 0
  documents: int = 0
  empty_files: int = 0
  invalid_utf8_lines: int = 0
  empty_documents: int = 0  # .jsonl records whose text is empty or whitespace


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
        raise ValueError(f"{unsupported[0]}: unsupported file type for local_text "
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
  opener = gzip.open if path.endswith(".gz") else open
  offset = 0
  with opener(path, "rb") as f:
    for raw in f:
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        stats.invalid_utf8_lines += 1
        if not quiet:
          log.warning("%s: invalid UTF-8 at byte offset %d (%s); line skipped",
                      path, offset + e.start, e.reason)
        offset += len(raw)
        continue
      offset += len(raw)
      yield line.rstrip("\r\n")
  if offset == 0:
    stats.empty_files += 1
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
  if not found and os.path.getsize(path) and not quiet:
    log.warning("%s: no text (only blank or undecodable lines); skipped", path)


def _jsonl_documents(path: str, stats: ReadStats, quiet: bool) -> Iterator[str]:
  for lineno, record in base.json_lines(path, _decoded_lines(path, stats, quiet)):
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
      raise ValueError(f"{path}:{lineno}: expected a JSON object with a string \"text\" "
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

  def _documents(self, quiet: bool = False) -> Iterator[str]:
    stats = ReadStats()
    if not quiet:
      self._stats = stats
    yield from iter_documents(list_files(self.builder_config.source), stats, quiet)

  def _read_stats(self) -> dict:
    stats = getattr(self, "_stats", None)
    return {} if stats is None else dataclasses.asdict(stats)
