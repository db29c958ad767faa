"""One workdir, one run: an OS lock held while training, and the run identity it records.

Lock: `lock(workdir)` takes an exclusive, non-blocking `fcntl.flock` on `<workdir>/.lock` and
writes the holder's pid into it. A second process gets WorkdirBusyError at once. The kernel
drops the lock when the holder's file descriptor closes, so a run killed with SIGKILL leaves
no stale lock (the `.lock` file stays; it is reused, never deleted, which would race). On
multi-host runs only process 0 (`is_lead`) locks; the others train in step with it.

Identity: `record_run` writes `config.json` (the experiment config plus `_run`: task,
max_seq_length, model config) atomically. Whether the workdir holds another run is decided by
its checkpoints: `check_run` compares against `config.json` only when a checkpoint exists, so
the config.json of a run that failed before its first checkpoint never blocks a corrected
command. Call `check_run` after all other validation and `record_run` with the first
checkpoint save.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os

from bert_jax import fileio
from bert_jax.errors import ConfigError, WorkdirBusyError

LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"


class WorkdirLock:
  """An exclusive lock on a workdir, taken on construction; a context manager."""

  def __init__(self, workdir: str, *, is_lead: bool = True):
    self.workdir = os.path.abspath(workdir)
    self._fd: int | None = None
    if not is_lead:
      return
    path = os.path.join(self.workdir, LOCK_FILE)
    try:
      os.makedirs(self.workdir, exist_ok=True)
      fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
      raise ConfigError(f"workdir {self.workdir} is not writable ({e.strerror})") from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = _read_pid(fd)
      os.close(fd)
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise
      raise WorkdirBusyError(
          f"workdir {self.workdir} is in use by another run (pid {holder or 'unknown'}); "
          "wait for it or use another --workdir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    self._fd = fd

  def release(self) -> None:
    """Drops the lock (closing the descriptor is what releases it)."""
    if self._fd is not None:
      os.close(self._fd)
      self._fd = None

  @property
  def held(self) -> bool:
    return self._fd is not None

  def __enter__(self) -> WorkdirLock:
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def _read_pid(fd: int) -> str:
  try:
    return os.pread(fd, 32, 0).decode("ascii", "replace").strip()
  except OSError:
    return ""


def lock(workdir: str, *, is_lead: bool = True) -> WorkdirLock:
  """Locks `workdir` now (creating it); raises WorkdirBusyError if another live process holds
  it, ConfigError if it cannot be written. Use as `with workdir.lock(path, is_lead=...):`."""
  return WorkdirLock(workdir, is_lead=is_lead)


def has_checkpoint(workdir: str) -> bool:
  """Whether `<workdir>/checkpoints` holds a step directory."""
  path = os.path.join(workdir, "checkpoints")
  return os.path.isdir(path) and any(name.isdigit() for name in os.listdir(path))


def read_run(workdir: str) -> dict | None:
  """The `_run` identity recorded in `<workdir>/config.json`, or None."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f).get("_run")
  except (OSError, ValueError, AttributeError):
    return None  # unreadable or half-written by an old version: the checkpoint meta decides


def _differences(previous: dict, identity: dict) -> list[str]:
  """'key: was -> now' for each differing field (nested dicts compared field by field)."""
  out = []
  for key, now in identity.items():
    if key not in previous or previous[key] == now:
      continue
    was = previous[key]
    if isinstance(was, dict) and isinstance(now, dict):
      out += [f"{key}.{k}: {was.get(k)!r} -> {v!r}" for k, v in now.items() if was.get(k) != v]
    else:
      out.append(f"{key}: {was!r} -> {now!r}")
  return out


def check_run(workdir: str, identity: dict, has_checkpoint: bool) -> None:
  """Raises ConfigError when `workdir` holds checkpoints of a run whose identity differs.

  Without a checkpoint nothing is checked: a config.json left by a run that failed early is
  overwritten by `record_run`.
  """
  if not has_checkpoint:
    return
  previous = read_run(workdir)
  if previous is None:
    return
  diff = _differences(previous, identity)
  if diff:
    what = "model config" if all(d.startswith("model.") for d in diff) else "run"
    raise ConfigError(f"workdir {os.path.abspath(workdir)} holds checkpoints of another {what} "
                      f"(was -> now: {'; '.join(diff)}); use another --workdir")


def record_run(workdir: str, config_dict: dict, identity: dict) -> str:
  """Writes `<workdir>/config.json` = {**config_dict, "_run": identity} atomically (a temporary
  file renamed over it, `fileio.write_json_atomic`); returns its path."""
  path = os.path.join(workdir, CONFIG_FILE)
  fileio.write_json_atomic(path, {**config_dict, "_run": identity}, indent=2, default=str)
  return path
