"""Host file output: atomic writes (`write_json_atomic`: a temporary file beside the target,
fsync, rename) and their permissions: files written through a temporary file
(`tempfile.mkstemp`, 0600) or by a library that picks its own mode (safetensors, 0600) get the
mode a plain `open` gives, 0o666 & ~umask, before they are renamed into place."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any


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


def write_json_atomic(path: str, value: Any) -> None:
  """Writes JSON to a temporary file beside `path`, then renames it over `path`; the file gets
  the umask's mode (`output_mode`)."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(value, f, ensure_ascii=False)
      f.flush()
      os.fsync(f.fileno())
    chmod_for_umask(tmp)  # mkstemp creates 0600
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
