"""Host file I/O in one place.

Writes are atomic: a temporary file beside the target, fsync, rename over the target, fsync of
the directory (`write_bytes_atomic`, `write_text_atomic`, `write_json_atomic`); a reader sees
the old file or the new one, never a part, also after a crash. The file gets the mode a plain
`open` gives, 0o666 & ~umask (`tempfile.mkstemp` creates 0600, and so does safetensors).

Reads of UTF-8 text and JSON raise a one-line `DataError` that names the file and the byte
offset or line (`read_text`, `read_json`, `json_lines`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from bert_jax.errors import DataError


def umask() -> int:
  """The process umask, read without changing it (/proc/self/status); elsewhere the
  `os.umask` round trip, which sets it for a moment."""
  try:
    with open("/proc/self/status", encoding="ascii", errors="replace") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def output_mode() -> int:
  """The mode of a new output file: 0o666 & ~umask (0o644 under the usual umask 022)."""
  return 0o666 & ~umask()


def chmod_for_umask(path: str) -> None:
  """Gives `path` the mode `open` would have created it with (`output_mode`)."""
  os.chmod(path, output_mode())


def fsync_dir(folder: str) -> None:
  """Makes the renames in `folder` durable (fsync of the directory itself)."""
  fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def fsync_file(path: str) -> None:
  """Flushes a written file's data to disk (for files a library wrote by name)."""
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _write_atomic(path: str, write: Callable[[IO[bytes]], None], suffix: str = "") -> None:
  """`write(f)` into a temporary file beside `path`; fsync, umask mode, rename, fsync dir."""
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    chmod_for_umask(tmp)  # mkstemp creates 0600
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  fsync_dir(folder)


def write_bytes_atomic(path: str, data: bytes) -> None:
  """Writes `data` to `path` atomically (see the module docstring)."""
  _write_atomic(path, lambda f: f.write(data), os.path.splitext(path)[1])


def write_text_atomic(path: str, text: str) -> None:
  """Writes `text` as UTF-8 to `path` atomically (see the module docstring)."""
  write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str, value: Any, *, indent: int | None = None,
                      default: Callable | None = None) -> None:
  """Writes `value` as JSON (non-ASCII kept as UTF-8) to `path` atomically."""
  write_text_atomic(path, json.dumps(value, ensure_ascii=False, indent=indent, default=default))


def read_text(path: str, hint: str = "", *, bom: bool = True,
              universal_newlines: bool = False) -> str:
  """The UTF-8 text of `path` (a leading BOM dropped unless `bom=False`; "\r\n" and "\r" read
  as "\n" with `universal_newlines`, as text-mode `open` does). Bytes that are not UTF-8 raise
  DataError `<path>: invalid UTF-8 at byte offset N (reason)[; hint]`."""
  path = os.fspath(path)
  with open(path, "rb") as f:
    raw = f.read()
  try:
    text = raw.decode("utf-8-sig" if bom else "utf-8")
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: invalid UTF-8 at byte offset {e.start} ({e.reason})"
                    + (f"; {hint}" if hint else "")) from None
  return text.replace("\r\n", "\n").replace("\r", "\n") if universal_newlines else text


def read_json(path: str, hint: str = "") -> Any:
  """The JSON value in `path`; bad UTF-8 or JSON raise DataError naming `path:line:column`."""
  text = read_text(path, hint)
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise DataError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})"
                    + (f"; {hint}" if hint else "")) from None


def json_lines(path: str, lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
  """(line number, parsed value) for every non-blank line of JSON Lines; bad JSON raises
  DataError `<path>:<line>: not valid JSON (<reason> at column N)`."""
  for lineno, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      value = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})"
                      ) from None
    yield lineno, value
