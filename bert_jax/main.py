"""Entry point: `python -m bert_jax.main --config=experiments/NAME.py --workdir=DIR`.

Overrides: `--config.num_train_steps=100`, `--config.data.text_files='docs/*.txt'`, ...
Several hosts: pass --coordinator_address, --num_processes and --process_id (or rely on the
cluster environment that jax.distributed.initialize detects, with --distributed).

A mistake in the command, config, data or workdir ends the run with one stderr line,
`error: <what and where>`, and exit code 1 (bert_jax/errors.py); `--verbose` shows the
traceback. Logs go to stderr as absl formats them (`I1130 12:00:00.000 ... file.py:12] ...`).
"""

from __future__ import annotations

import difflib

from absl import app, flags, logging
from ml_collections import config_flags

from bert_jax import errors

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (cluster env).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")
flags.DEFINE_bool("retain_freed_memory", True, "On CPU, tell glibc malloc to keep freed "
                  "buffers for reuse (bert_jax/malloc.py; ~1.4x faster steps).")
flags.mark_flags_as_required(["config", "workdir"])
errors.define_verbose_flag()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from bert_jax import xla_flags
  xla_flags.use_native_gpu_atomics()  # before jax starts a backend
  import jax
  if FLAGS.coordinator_address or FLAGS.distributed:
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  from bert_jax import train
  # Once the backend is known to be the CPU; the no-mmap and no-trim settings govern every
  # later allocation, XLA's per-step buffers included.
  if FLAGS.retain_freed_memory and jax.default_backend() == "cpu":
    from bert_jax import malloc
    malloc.retain_freed_memory()
  logging.info("JAX %s: process %d/%d, %d devices (%s)", jax.__version__, jax.process_index(),
               jax.process_count(), jax.device_count(), jax.devices()[0].platform)
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def _config_path(argv) -> str:
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return ""


def config_keys(config, prefix: str = "") -> list[str]:
  """Every dotted key of a ConfigDict, nested nodes included ('model', 'model.hidden_size')."""
  keys = []
  for key, value in config.items():
    keys.append(prefix + key)
    if hasattr(value, "items") and hasattr(value, "to_dict"):
      keys += config_keys(value, f"{prefix}{key}.")
  return keys


def unknown_override(argv, config) -> str | None:
  """`config has no key 'K'; did you mean 'L'?` for the first --config.K that is no key."""
  keys = config_keys(config)
  for arg in argv[1:]:
    if not arg.startswith("--config."):
      continue
    key = arg[len("--config."):].split("=", 1)[0]
    if key not in keys:
      close = difflib.get_close_matches(key, keys, n=1)
      return f"config has no key {key!r}" + (f"; did you mean {close[0]!r}?" if close else "")
  return None


def _override_error(argv, e: Exception) -> str:
  """One line for a failed --config override or config file."""
  path = _config_path(argv)
  detail = str(e)
  if "Error whilst parsing config file" in detail:  # get_config raised; show its last line
    return f"--config={path}: " + detail.strip().splitlines()[-1]
  try:
    config = config_flags.config_flags.ConfigFileFlagParser(name="config").parse(path)
    message = unknown_override(argv, config)
  except Exception:  # the config itself fails: report the original error
    message = None
  if message:
    return message
  bad = [a for a in argv[1:] if a.startswith("--config.")]
  return f"bad config override ({' '.join(bad)}): {type(e).__name__}: {errors.one_line(e)}"


def parse_flags(argv):
  """absl flag parsing with every command-line mistake (unknown key, wrong type, missing or
  unloadable config file) as one line."""
  try:
    parsed = FLAGS(argv)
  except flags.Error as e:  # unknown flag, a value of the wrong type, a missing value
    errors.exit_with(errors.ConfigError(str(e)))
  except ImportError as e:  # the config file imports `experiments`: cwd must be the repo root
    errors.exit_with(errors.ConfigError(
        f"--config={_config_path(argv)}: {e}; run from the repository root (or put it on "
        "PYTHONPATH)"))
  except OSError as e:  # the config file did not load (an override touched it)
    errors.exit_with(_load_error(argv, e))
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    errors.exit_with(errors.ConfigError(_override_error(argv, e)))
  try:
    FLAGS.config.get("task")  # a config file that failed to load raises here
  except OSError as e:
    errors.exit_with(_load_error(argv, e))
  return parsed


def _load_error(argv, e: OSError) -> errors.ConfigError:
  reason = [line.strip() for line in str(e).splitlines() if line.strip()][-1]
  return errors.ConfigError(f"cannot load --config={_config_path(argv)}: {reason}")


if __name__ == "__main__":
  errors.run_cli(main, flags_parser=parse_flags)
