"""Mistakes a user can fix, and how every entry point reports them: one line, exit code 1.

  UserError            a mistake in the command, config, data or workdir; its message is the
                       whole report (it names the offending value, and file:line where it applies)
    ConfigError        the experiment config or the workdir (also a ValueError)
    DataError          the input files (also a ValueError)
    NonFiniteLossError training diverged (also a RuntimeError)
    WorkdirBusyError   another run holds the workdir

`run_cli(main)` is `absl.app.run(main)` for bert_jax's CLIs: a UserError or a FileNotFoundError
(`is_user_error`) prints `error: <message>` as one stderr line and exits with 1; `--verbose`
shows the traceback instead. Anything else, a plain ValueError included, is a bug and keeps its
traceback: code that detects the user's mistake raises ConfigError or DataError, and a library's
error about a user's value is re-raised as one of them where bert_jax knows which value it was.
`quiet_libraries()` drops the INFO chatter of Orbax, TFDS, grain and jax's backend probe from
the console.

Imports nothing heavy (no jax): the data builders and the entry point both use it.
"""

from __future__ import annotations

import os
import sys
from typing import Callable


class UserError(Exception):
  """A mistake the user can fix; reported as `error: <message>` on one line."""


class ConfigError(UserError, ValueError):
  """A mistake in the experiment config or the workdir."""


class DataError(UserError, ValueError):
  """Input data that cannot be used (names the file, and the line where it applies)."""


class NonFiniteLossError(UserError, RuntimeError):
  """The loss or the state became NaN or infinite; no checkpoint is written from it."""


class WorkdirBusyError(UserError):
  """Another live process holds the workdir's lock."""


def is_user_error(e: BaseException) -> bool:
  """A UserError or a FileNotFoundError: the user's mistake, reported as one line."""
  return isinstance(e, (UserError, FileNotFoundError))


def one_line(e: BaseException) -> str:
  """The message of `e` on one line (continuation lines joined with '; ')."""
  if isinstance(e, FileNotFoundError) and e.filename and e.strerror:
    return f"{e.filename}: {e.strerror}"
  lines = [line.strip() for line in str(e).splitlines() if line.strip()]
  return "; ".join(lines) or type(e).__name__


def define_verbose_flag() -> None:
  """Defines absl's `--verbose` (full tracebacks) once; later calls do nothing."""
  from absl import flags
  if "verbose" not in flags.FLAGS:
    flags.DEFINE_bool("verbose", False, "Show the full traceback of an error (a mistake in the "
                      "command, config or data is otherwise reported as one line).")


def verbose() -> bool:
  from absl import flags
  return "verbose" in flags.FLAGS and flags.FLAGS.is_parsed() and bool(flags.FLAGS.verbose)


def exit_with(e: BaseException) -> None:
  """Prints `error: <message>` as one stderr line and exits with status 1."""
  print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
  sys.exit(1)


def report_user_errors(main: Callable) -> Callable:
  """Wraps an absl `main(argv)`: user errors become one line and exit code 1 (see module)."""
  def wrapped(argv):
    try:
      return main(argv)
    except Exception as e:  # re-raised unless it is the user's mistake
      if verbose() or not is_user_error(e):
        raise
      exit_with(e)
  return wrapped


def run_cli(main: Callable, **app_run_kwargs) -> None:
  """`absl.app.run(main)` with `--verbose`, quiet libraries and one-line user errors."""
  from absl import app
  define_verbose_flag()

  def quiet_main(argv):
    quiet_libraries()
    return main(argv)
  app.run(report_user_errors(quiet_main), **app_run_kwargs)


class _QuietLibraries:
  """Drops INFO chatter of orbax, tfds, grain and jax's backend probe; warnings still show.
  Orbax's (and its asyncio tasks') reports of a save that ran out of disk space go too: the
  run stops with one line that says so (`checkpoint.DiskFullError`)."""

  NOISY = ("/orbax/", "/tensorflow_datasets/", "/grain/", "/etils/", "/jax/_src/xla_bridge.py")

  def filter(self, record) -> bool:
    where = record.pathname.replace(os.sep, "/")
    if ("/orbax/" in where or record.name == "asyncio") and _mentions_disk_full(record):
      return False
    return record.levelno >= 30 or not any(n in where for n in self.NOISY)


def _mentions_disk_full(record) -> bool:
  exc = record.exc_info[1] if record.exc_info else None
  return any("No space left on device" in text for text in (record.getMessage(), str(exc)))


def _drop_closed_loop_callbacks(previous: Callable) -> Callable:
  """An unraisable hook that drops asyncio's 'Event loop is closed' from TensorStore callbacks
  that complete after a failed save gave up its loop; anything else goes to `previous`."""
  def hook(unraisable):
    tb, last = unraisable.exc_traceback, None
    while tb is not None:
      last, tb = tb, tb.tb_next
    if (isinstance(unraisable.exc_value, RuntimeError) and last is not None
        and str(unraisable.exc_value) == "Event loop is closed"
        and last.tb_frame.f_code.co_filename.replace(os.sep, "/").endswith(
            "asyncio/base_events.py")):
      return
    previous(unraisable)
  hook.bert_jax_quiet = True
  return hook


def quiet_libraries() -> None:
  """Adds the filter to absl's log handler once (the console of every bert_jax CLI), and the
  closed-loop filter to `sys.unraisablehook`."""
  from absl import logging
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
    handler.addFilter(_QuietLibraries())
  if not getattr(sys.unraisablehook, "bert_jax_quiet", False):
    sys.unraisablehook = _drop_closed_loop_callbacks(sys.unraisablehook)
