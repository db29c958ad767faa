"""Output file permissions: files written through a temporary file (`tempfile.mkstemp`, 0600)
or by a library that picks its own mode (safetensors, 0600) get the mode a plain `open` gives,
0o666 & ~umask, before they are renamed into place."""

from __future__ import annotations

import os


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
