"""Reliability: corrupt and non-finite checkpoints, the workdir lock and run identity, and every
user mistake reported as one line by the real entry point (issue 13)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import checkpoint, errors, workdir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- errors

def test_which_errors_are_the_users():
  from bert_jax import input_pipeline
  assert errors.is_user_error(errors.DataError("x")) and errors.is_user_error(
      errors.WorkdirBusyError("x"))
  assert issubclass(errors.ConfigError, ValueError)
  assert issubclass(errors.NonFiniteLossError, RuntimeError)
  assert issubclass(checkpoint.CheckpointMismatchError, errors.ConfigError)
  missing = FileNotFoundError(2, "No such file or directory", "/data/x.csv")
  assert errors.is_user_error(missing)
  assert errors.one_line(missing) == "/data/x.csv: No such file or directory"
  with pytest.raises(errors.ConfigError) as from_input_code:
    input_pipeline._check_batch_size(6, 4)
  assert errors.is_user_error(from_input_code.value)
  with pytest.raises(ValueError) as elsewhere:
    int("a bug, not a mistake")
  assert not errors.is_user_error(elsewhere.value)
  assert errors.one_line(ValueError("first\n  second\n")) == "first; second"


def _report(raise_it):
  """Runs `raise_it` as an absl main wrapped by `errors.report_user_errors`."""
  def main(argv):
    del argv
    raise_it()
  return errors.report_user_errors(main)([])


def test_only_user_errors_become_one_line_wherever_they_are_raised(tmp_path, capsys):
  """The type decides, not the file that raised it: a plain ValueError (a bug) keeps its
  traceback also when bert_jax's input code raised it; ConfigError / DataError from any
  module, this one included, are one `error:` line and exit code 1."""
  from bert_jax import fileio, hf, input_pipeline
  with pytest.raises(ValueError, match="stack_layers expects") as bug:
    _report(lambda: hf.stack_layers({}, 2))  # a plain ValueError in the old list's hf.py
  assert type(bug.value) is ValueError and not errors.is_user_error(bug.value)
  with pytest.raises(ValueError, match="invalid literal"):
    _report(lambda: int("x"))
  latin1 = tmp_path / "latin1.txt"
  latin1.write_bytes(b"caf\xe9\n")

  def here():
    raise errors.ConfigError("config.x=1 is wrong\n  (see the docs)")
  cases = [(lambda: input_pipeline._check_batch_size(6, 4), "global_batch_size 6 must be"),
           (lambda: fileio.read_text(str(latin1)), f"{latin1}: invalid UTF-8 at byte offset 3"),
           (here, "config.x=1 is wrong; (see the docs)"),
           (lambda: open(tmp_path / "missing.txt"), f"{tmp_path}/missing.txt: No such file")]
  for raise_it, message in cases:
    with pytest.raises(SystemExit) as done:
      _report(raise_it)
    assert done.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


# ----------------------------------------------------------------------------- checkpoints

def _state(value: float) -> dict:
  """A small train-state-like tree; `w` is random (incompressible: the largest file)."""
  w = np.random.RandomState(0).randn(256, 256).astype(np.float32) + value
  return {"step": jnp.int32(int(value)), "params": {"w": jnp.asarray(w), "b": jnp.zeros(64)},
          "mu": {"w": jnp.zeros((256, 256))}}


def _abstract(state) -> dict:
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), state)


def _save(ckpt, step: int, value: float | None = None):
  ckpt.save(step, _state(step if value is None else value), data_state={"next": step},
            meta={"task": "t"})
  ckpt.wait()


def _truncate_largest_file(directory: str):
  files = [os.path.join(root, f) for root, _, names in os.walk(directory) for f in names]
  largest = max(files, key=os.path.getsize)
  with open(largest, "r+b") as f:
    f.truncate(os.path.getsize(largest) // 2)


def test_corrupt_checkpoint_is_moved_aside_and_its_step_rewritten(tmp_path):
  directory = str(tmp_path / "checkpoints")
  ckpt = checkpoint.Checkpointer(directory, max_to_keep=5, async_save=False)
  for step in range(1, 6):
    _save(ckpt, step)
  ckpt.close()
  _truncate_largest_file(os.path.join(directory, "5", "state"))

  ckpt = checkpoint.Checkpointer(directory, max_to_keep=2, async_save=False)
  step, state, data_state, _ = ckpt.restore(_abstract(_state(0)))
  assert step == 4 and data_state == {"next": 4}
  np.testing.assert_array_equal(state["params"]["w"], _state(4)["params"]["w"])
  moved = os.listdir(tmp_path / "corrupt_checkpoints")
  assert len(moved) == 1 and moved[0].startswith("5-"), moved
  assert os.path.isdir(tmp_path / "corrupt_checkpoints" / moved[0] / "state")
  assert not os.path.exists(os.path.join(directory, "5"))
  assert ckpt.all_steps() == [1, 2, 3, 4]
  # The run rewrites step 5 (Orbax refused: StepAlreadyExistsError), and the good steps
  # rotate under max_to_keep=2 as if the corrupt one had never been there.
  _save(ckpt, 5, value=5.5)
  _save(ckpt, 6)
  assert ckpt.all_steps() == [5, 6]
  step, state, _, _ = ckpt.restore(_abstract(_state(0)))
  assert step == 6
  np.testing.assert_array_equal(state["params"]["w"], _state(6)["params"]["w"])
  ckpt.close()
  assert len(os.listdir(tmp_path / "corrupt_checkpoints")) == 1


def test_when_no_step_restores_nothing_is_moved(tmp_path):
  """Every step failing is more likely a wrong mesh or memory than corruption: keep them."""
  directory = str(tmp_path / "checkpoints")
  ckpt = checkpoint.Checkpointer(directory, async_save=False)
  for step in (1, 2):
    _save(ckpt, step)
    _truncate_largest_file(os.path.join(directory, str(step), "state"))
  with pytest.raises(checkpoint.CheckpointUnreadableError,
                     match=r"no readable checkpoint in .*checkpoints \(step 2: .*; step 1: .*\); "
                           r"nothing was moved or deleted"):
    ckpt.restore(_abstract(_state(0)))
  ckpt.close()
  assert sorted(os.listdir(directory)) == ["1", "2"]
  assert not os.path.exists(tmp_path / "corrupt_checkpoints")


def test_nonfinite_leaves_names_nan_inf_and_overflowing_arrays():
  state = _state(1.0)
  assert checkpoint.nonfinite_leaves(state) == []
  state["params"]["b"] = state["params"]["b"].at[3].set(jnp.inf)
  state["mu"]["w"] = state["mu"]["w"].at[0, 0].set(jnp.nan)
  state["params"]["w"] = state["params"]["w"] * 5e29  # finite, but diverged: squares overflow
  state["rng"] = jax.random.key(0)  # not a float: ignored
  assert sorted(checkpoint.nonfinite_leaves(state)) == [
      "['mu']['w']", "['params']['b']", "['params']['w']"]
  host = jax.tree_util.tree_map(np.asarray, {"a": _state(2.0)["params"]})
  assert checkpoint.nonfinite_leaves(host) == []


def test_save_refuses_a_non_finite_state(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), async_save=False)
  bad = _state(1.0)
  bad["mu"]["w"] = bad["mu"]["w"].at[1, 2].set(jnp.nan)
  with pytest.raises(checkpoint.NonFiniteStateError,
                     match=r"at step 1: .*\['mu'\]\['w'\].*no checkpoint was written yet"):
    ckpt.save(1, bad, data_state=None, meta={})
  _save(ckpt, 2)
  with pytest.raises(errors.NonFiniteLossError,
                     match=r"at step 3: .*the last good checkpoint is step 2 in .*checkpoints"
                     ) as e:
    ckpt.save(3, bad, data_state=None, meta={})
  assert (e.value.step, e.value.leaves, e.value.last_good) == (3, ["['mu']['w']"], 2)
  ckpt.wait()
  assert ckpt.all_steps() == [2]
  ckpt.close()


# ----------------------------------------------------------------------------- workdir

HOLD_LOCK = """
import sys, time
from bert_jax import workdir
held = workdir.lock(sys.argv[1])
print("locked", flush=True)
time.sleep(3600)
"""


def _hold_lock(path: str) -> subprocess.Popen:
  """A process that holds the workdir lock until it is killed."""
  proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, path], cwd=ROOT,
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "locked"
  return proc


def test_workdir_lock_is_exclusive_and_dies_with_its_process(tmp_path):
  path = str(tmp_path / "run")
  holder = _hold_lock(path)
  try:
    with pytest.raises(errors.WorkdirBusyError,
                       match=rf"^workdir {re.escape(path)} is in use by another run \(pid "
                             rf"{holder.pid}\); wait for it or use another --workdir$"):
      workdir.lock(path)
    assert not workdir.lock(path, is_lead=False).held  # other hosts of a multi-host run
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  # kill -9 left the .lock file but no lock: the OS dropped it with the process.
  with workdir.lock(path) as held:
    assert held.held and open(os.path.join(path, ".lock")).read().strip() == str(os.getpid())
    with pytest.raises(errors.WorkdirBusyError, match=rf"\(pid {os.getpid()}\)"):
      workdir.lock(path)  # a second lock, even from the same process
  assert not held.held
  workdir.lock(path).release()


def test_workdir_that_cannot_be_written_is_a_config_error(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(errors.ConfigError, match=r"workdir .*a_file/run is not writable"):
    workdir.lock(str(blocker / "run"))


def test_run_identity_comes_from_checkpoints_not_from_a_failed_run(tmp_path):
  path = str(tmp_path)
  identity = {"task": "pretraining", "max_seq_length": 128,
              "model": {"hidden_size": 32, "num_hidden_layers": 1}}
  stale = {**identity, "max_seq_length": 256, "model": {**identity["model"], "hidden_size": 64}}
  workdir.record_run(path, {"seed": 0}, stale)  # a run that failed before any checkpoint
  assert not workdir.has_checkpoint(path)
  workdir.check_run(path, identity, has_checkpoint=False)  # never blocks the corrected run
  os.makedirs(os.path.join(path, "checkpoints", "4"))
  assert workdir.has_checkpoint(path)
  with pytest.raises(errors.ConfigError,
                     match=r"holds checkpoints of another run \(was -> now: max_seq_length: "
                           r"256 -> 128; model.hidden_size: 64 -> 32\); use another --workdir"):
    workdir.check_run(path, identity, has_checkpoint=True)
  with pytest.raises(errors.ConfigError, match=r"another model config \(was -> now: "
                                               r"model.hidden_size: 64 -> 32\)"):
    workdir.check_run(path, {**identity, "max_seq_length": 256}, has_checkpoint=True)
  written = workdir.record_run(path, {"seed": 0}, identity)
  assert json.load(open(written)) == {"seed": 0, "_run": identity}
  assert sorted(os.listdir(path)) == ["checkpoints", "config.json"]  # no temporary file left
  workdir.check_run(path, identity, has_checkpoint=True)
  # The task's settings are part of it: a classifier resumed with another sentence vector.
  head = {**identity, "task_info": {"label_names": ["neg", "pos"], "pooling": "cls_pooler"}}
  workdir.record_run(path, {"seed": 0}, head)
  with pytest.raises(errors.ConfigError, match=r"another run \(was -> now: task_info.pooling: "
                                               r"'cls_pooler' -> 'mean'\)"):
    workdir.check_run(path, {**head, "task_info": {**head["task_info"], "pooling": "mean"}},
                      has_checkpoint=True)
  workdir.record_run(path, {"seed": 0}, identity)  # a workdir written before task_info existed
  workdir.check_run(path, head, has_checkpoint=True)  # resumes


# ------------------------------------------------- one line per user mistake (real entry point)
#
# Decision: logs stay on stderr in absl's format (`I1130 12:00:00.000000 123 file.py:45] ...`);
# every other non-empty stderr line must be the one `error: ...` line: no traceback, no
# progress bar, no second message. Exit code 1, and no file of the workdir changes (its
# `.lock`, the lock's own file, aside).

ABSL_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ \S+:\d+\] ")
PRETRAIN = "experiments/pretrain_tiny.py"
FINETUNE = "experiments/finetune_csv.py:scratch"
TINY = {"model.hidden_size": 32, "model.num_hidden_layers": 1, "model.num_attention_heads": 2,
        "model.intermediate_size": 64, "model.max_position_embeddings": 64,
        "data.max_seq_length": 64, "batch_size": 2, "eval_batch_size": 2, "num_train_steps": 2,
        "log_every_steps": 1, "eval_every_steps": 2, "checkpoint_every_steps": 2,
        "num_eval_batches": 1, "optimizer.warmup_steps": 0}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> str:
  d = tmp_path_factory.mktemp("inputs")
  (d / "empty.txt").write_bytes(b"")
  (d / "latin1.txt").write_bytes("Un café crème.\nLa forêt était là.\n\nÀ bientôt.\n"
                                 .encode("latin-1"))
  (d / "binary.txt").write_bytes(bytes(np.random.RandomState(0).randint(0, 256, 20_000,
                                                                        dtype=np.uint8)))
  (d / "nolabel.csv").write_text("text,sentiment\ngood film,pos\nbad film,neg\n")
  (d / "empty.csv").write_bytes(b"")
  (d / "train.csv").write_text("text,label\ngood film,pos\nbad film,neg\ngreat,pos\nawful,neg\n")
  (d / "eval.csv").write_text("text,label\nfine,pos\nmeh,neutral\n")
  (d / "broken.jsonl").write_text('{"text": "good", "label": "pos"}\n'
                                  '{"text": "bad", "label": "neg"}\n{"text": broken\n')
  return str(d)


def run_main(config: str, workdir_path: str, overrides: dict, *, env: dict | None = None,
             flags: tuple[str, ...] = (), timeout: int = 600) -> subprocess.CompletedProcess:
  """`python -m bert_jax.main` on one CPU device; overrides in flag form after TINY."""
  args = [sys.executable, "-m", "bert_jax.main", f"--config={config}",
          f"--workdir={workdir_path}", *flags]
  args += [f"--config.{k}={v}" for k, v in {**TINY, **overrides}.items()]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", **(env or {})}
  return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout)


def error_lines(stderr: str) -> list[str]:
  """The non-empty stderr lines that are not absl log records."""
  return [line for line in stderr.splitlines() if line.strip() and not ABSL_LOG_LINE.match(line)]


def snapshot(path: str) -> dict[str, tuple[int, int]]:
  """relative path -> (size, mtime_ns) of everything under `path` except the lock file."""
  out = {}
  for root, dirs, files in os.walk(path):
    for name in dirs + files:
      full = os.path.join(root, name)
      if name != workdir.LOCK_FILE:
        st = os.stat(full)
        out[os.path.relpath(full, path)] = (st.st_size if name in files else 0, st.st_mtime_ns)
  return out


def assert_one_line_error(proc: subprocess.CompletedProcess, pattern: str):
  lines = error_lines(proc.stderr)
  assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
  assert re.search(pattern, lines[0]), (pattern, lines[0])
  assert "Traceback" not in proc.stderr


# (case, config, overrides ({in}: the inputs folder), the error line must match)
USER_MISTAKES = [
    ("empty_text_file", PRETRAIN, {"data.name": "local_text", "data.text_files": "{in}/empty.txt"},
     r"^error: \S+/empty.txt: empty file; no documents to prepare$"),
    ("latin1_text_file", PRETRAIN,
     {"data.name": "local_text", "data.text_files": "{in}/latin1.txt"},
     r"^error: \S+/latin1.txt: not UTF-8 text \(invalid UTF-8 at byte offset 6: invalid "
     r"continuation byte; 3 of 3 lines\); convert it"),
    ("binary_text_file", PRETRAIN,
     {"data.name": "local_text", "data.text_files": "{in}/binary.txt"},
     r"^error: \S+/binary.txt: binary data, not text \(a NUL byte at offset \d+\)"),
    ("csv_without_label_column", FINETUNE, {"data.train_file": "{in}/nolabel.csv"},
     r"^error: \S+/nolabel.csv: missing column 'label' \(header has \['text', 'sentiment'\]\); "
     r"set data.label_key"),
    ("empty_csv", FINETUNE, {"data.train_file": "{in}/empty.csv"},
     r"^error: \S+/empty.csv: empty file"),
    ("eval_label_not_in_train", FINETUNE,
     {"data.train_file": "{in}/train.csv", "data.eval_file": "{in}/eval.csv"},
     r"^error: \S+/eval.csv:3: label 'neutral' is not one of the labels of \S+/train.csv "
     r"\['neg', 'pos'\]"),
    ("broken_json_line", FINETUNE, {"data.train_file": "{in}/broken.jsonl"},
     r"^error: \S+/broken.jsonl:3: not valid JSON \(Expecting value at column 10\)$"),
    ("hidden_size_not_divisible_by_heads", PRETRAIN,
     {"model.hidden_size": 130, "model.num_attention_heads": 4, "data.max_documents": 20},
     r"^error: .*hidden_size=130 is not divisible by num_attention_heads=4"),
    ("no_room_in_packed_rows", FINETUNE,
     {"data.packing": True, "data.max_examples_per_row": 0},
     r"^error: config.data.max_examples_per_row must be >= 1 with data.packing, got 0$"),
    ("typo_in_config_key", PRETRAIN, {"num_train_step": 2},
     r"^error: config has no key 'num_train_step'; did you mean 'num_train_steps'\?$"),
    ("typo_in_nested_config_key", PRETRAIN, {"model.hidden_sise": 64},
     r"^error: config has no key 'model.hidden_sise'; did you mean 'model.hidden_size'\?$"),
    ("value_of_the_wrong_type", PRETRAIN, {"num_train_steps": "abc"},
     r"^error: flag --config.num_train_steps=abc: invalid literal for int\(\)"),
    ("missing_config_file", "experiments/no_such_experiment.py", {},
     r"^error: cannot load --config=experiments/no_such_experiment.py: \[Errno 2\] No such "
     r"file or directory"),
]


@pytest.mark.parametrize("case, config, overrides, pattern", USER_MISTAKES,
                         ids=[c[0] for c in USER_MISTAKES])
def test_user_mistake_is_one_line(case, config, overrides, pattern, inputs, data_dir, tmp_path):
  path = tmp_path / "workdir"
  path.mkdir()
  (path / "notes.txt").write_text("the user's own file\n")
  before = snapshot(str(path))
  overrides = {k: str(v).replace("{in}", inputs) for k, v in overrides.items()}
  proc = run_main(config, str(path), {**overrides, "data.data_dir": data_dir})
  assert_one_line_error(proc, pattern)
  assert snapshot(str(path)) == before


def test_verbose_shows_the_traceback(inputs, data_dir, tmp_path):
  proc = run_main(FINETUNE, str(tmp_path / "w"), {"data.train_file": f"{inputs}/empty.csv",
                                                 "data.data_dir": data_dir}, flags=("--verbose",))
  assert proc.returncode == 1 and "Traceback" in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith("bert_jax.errors.DataError: ")


@pytest.mark.slow
def test_corrupt_latest_checkpoint_is_moved_aside_and_the_run_finishes(tmp_path, data_dir):
  """Issue 13 bug 2: after truncating the largest file of the last step, every rerun fell
  back, retrained that step, then died with Orbax's StepAlreadyExistsError."""
  path = str(tmp_path / "w")
  run = {"num_train_steps": 5, "checkpoint_every_steps": 1, "eval_every_steps": 100,
         "data.max_documents": 20, "data.data_dir": data_dir}
  assert run_main(PRETRAIN, path, run).returncode == 0
  _truncate_largest_file(os.path.join(path, "checkpoints", "5", "state"))
  proc = run_main(PRETRAIN, path, run)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # (Orbax may log the read error of the truncated file with its own traceback; what must not
  # happen is the StepAlreadyExistsError of rewriting step 5.)
  assert "StepAlreadyExists" not in proc.stderr
  moved = os.listdir(os.path.join(path, "corrupt_checkpoints"))
  assert len(moved) == 1 and moved[0].startswith("5-")
  assert _steps(path) == [3, 4, 5]  # step 5 written again; keep_checkpoints=3 good ones
  assert checkpoint.nonfinite_leaves(_restore_state(path, 5)) == []
  assert run_main(PRETRAIN, path, run).returncode == 0  # and again: nothing left to trip on


def _restore_state(workdir_path: str, step: int):
  """The saved train state of `step` (host arrays, saved tree layout)."""
  import orbax.checkpoint as ocp
  path = os.path.join(workdir_path, "checkpoints", str(step), "state")
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  with ocp.StandardCheckpointer() as ckptr:
    metadata = ckptr.metadata(path)
    tree = getattr(metadata, "item_metadata", metadata)
    tree = getattr(tree, "tree", tree)
    return ckptr.restore(path, jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree))


def _steps(workdir_path: str) -> list[int]:
  path = os.path.join(workdir_path, "checkpoints")
  return sorted(int(s) for s in os.listdir(path) if s.isdigit()) if os.path.isdir(path) else []


def _saved_step_dirs(workdir_path: str) -> list[str]:
  """Every checkpoint step folder a run left: checkpoints/<step> and best/<step>."""
  out = []
  for sub in ("checkpoints", "best"):
    root = os.path.join(workdir_path, sub)
    if os.path.isdir(root):
      out += [os.path.join(root, s) for s in sorted(os.listdir(root)) if s.isdigit()]
  return out


def _forward_is_finite(step_dir: str) -> bool:
  """The saved model's MLM logits and cross-entropy on a fixed batch are finite."""
  import optax

  from bert_jax import inference
  loaded = inference.load(step_dir)
  ids = np.random.RandomState(0).randint(5, loaded.config.vocab_size, (2, 16))
  out = loaded.model().apply({"params": loaded.params}, jnp.asarray(ids), deterministic=True)
  logits = out[0] if isinstance(out, tuple) else out
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(ids)).mean()
  return bool(jnp.all(jnp.isfinite(logits))) and bool(jnp.isfinite(loss))


@pytest.mark.slow
@pytest.mark.parametrize("learning_rate", [1e15, 1e30])
def test_divergence_keeps_only_checkpoints_that_resume(tmp_path, data_dir, learning_rate):
  """Issue 13 bug 1 / issue 23 item 1: a huge first update (lr 1e15: finite parameters ~1e15
  whose next loss is NaN; lr 1e30: squares overflow) was saved and called the last good
  checkpoint. Now every checkpoint left in the workdir gives a finite loss, and the one line
  names the newest of them, or says that none was written and points at the learning rate."""
  path = str(tmp_path / "nan")
  proc = run_main(PRETRAIN, path, {
      "optimizer.learning_rate": learning_rate, "optimizer.warmup_steps": 0,
      "num_train_steps": 6, "checkpoint_every_steps": 1, "eval_every_steps": 1,
      "data.max_documents": 20, "data.data_dir": data_dir})
  assert_one_line_error(proc, r"(?i)(last good checkpoint|no checkpoint was "
                              r"written)")
  line = error_lines(proc.stderr)[0]
  named = re.search(r"last good checkpoint (?:is )?\(?step (\d+)", line)
  saved = _steps(path)
  if named is None:
    assert "no checkpoint was written yet" in line.lower() and not saved, (line, saved)
    assert "learning_rate" in line, line
  else:
    assert saved and int(named.group(1)) == saved[-1], (line, saved)
  for step_dir in _saved_step_dirs(path):  # every checkpoint resumes: a finite loss
    assert _forward_is_finite(step_dir), step_dir


def test_max_seq_length_beyond_positions_is_refused_before_data_prep(tmp_path):
  fresh_data = str(tmp_path / "data")
  path = tmp_path / "workdir"
  path.mkdir()
  proc = run_main(PRETRAIN, str(path), {"data.max_seq_length": 128,
                                        "model.max_position_embeddings": 64,
                                        "data.max_documents": 20, "data.data_dir": fresh_data})
  assert_one_line_error(proc, r"max_seq_length=128.*max_position_embeddings=64")
  assert not [f for _, _, names in os.walk(fresh_data) for f in names]  # nothing prepared
  assert snapshot(str(path)) == {}


@pytest.mark.parametrize("parallelism", ["jit", "pmap"])
def test_batch_not_divisible_by_devices_names_batch_size_and_mesh(parallelism, tmp_path,
                                                                  data_dir):
  proc = run_main(PRETRAIN, str(tmp_path / "w"), {
      "batch_size": 6, "parallelism": parallelism, "data.max_documents": 20,
      "data.data_dir": data_dir}, env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  assert_one_line_error(proc, r"config.batch_size=6.*4")


def test_workdir_that_cannot_be_written_is_one_line(tmp_path, data_dir):
  if os.geteuid() == 0:  # root writes anywhere: a path under a regular file cannot be created
    (tmp_path / "a_file").write_text("")
    path = str(tmp_path / "a_file" / "run")
  else:
    path = str(tmp_path / "readonly")
    os.mkdir(path, 0o500)
  proc = run_main(PRETRAIN, path, {"data.max_documents": 20, "data.data_dir": data_dir})
  assert_one_line_error(proc, r"workdir \S+ is not writable")


@pytest.mark.slow
def test_second_run_on_a_busy_workdir_exits_at_once(tmp_path, data_dir):
  """Issue 13 bug 4: the same command twice trained twice into one workdir."""
  import time
  path = str(tmp_path / "busy")
  args = [sys.executable, "-m", "bert_jax.main", f"--config={PRETRAIN}", f"--workdir={path}"]
  long_run = {**TINY, "num_train_steps": 100_000, "checkpoint_every_steps": 1,
              "eval_every_steps": 100_000, "data.max_documents": 20, "data.data_dir": data_dir}
  holder = subprocess.Popen(args + [f"--config.{k}={v}" for k, v in long_run.items()], cwd=ROOT,
                            env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 600  # a safety net only: the test waits for a checkpoint
    while not _steps(path) and holder.poll() is None and time.time() < deadline:
      time.sleep(0.2)
    assert _steps(path), "the first run wrote no checkpoint"
    rows = open(os.path.join(path, "metrics.jsonl")).read().count("\n")
    proc = run_main(PRETRAIN, path, {"data.max_documents": 20, "data.data_dir": data_dir})
    assert_one_line_error(proc, rf"workdir \S+ is in use by another run \(pid {holder.pid}\)")
    assert open(os.path.join(path, "metrics.jsonl")).read().count("\n") >= rows
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  # kill -9 leaves no stale lock: the next run resumes (and finishes: 1 step asked).
  proc = run_main(PRETRAIN, path, {"num_train_steps": 1, "data.max_documents": 20,
                                   "data.data_dir": data_dir})
  assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_a_failed_run_does_not_claim_its_workdir(tmp_path, data_dir):
  """Issue 13 bug 3: config.json was written before validation, so the corrected command was
  refused ("holds a run with max_seq_length=256") though no checkpoint existed."""
  path = str(tmp_path / "w")
  common = {"data.max_documents": 20, "data.data_dir": data_dir}
  bad = run_main(PRETRAIN, path, {**common, "data.max_seq_length": 128})  # 64 positions
  assert_one_line_error(bad, r"max_seq_length=128.*max_position_embeddings=64")
  good = run_main(PRETRAIN, path, common)
  assert good.returncode == 0, good.stderr[-3000:]
  # With checkpoints but no config.json: a wrong model is refused without rewriting it.
  os.remove(os.path.join(path, "config.json"))
  wrong = run_main(PRETRAIN, path, {**common, "model.hidden_size": 64})
  assert_one_line_error(wrong, r"hidden_size")
  again = run_main(PRETRAIN, path, common)
  assert again.returncode == 0, again.stderr[-3000:]


@pytest.mark.slow
def test_one_document_corpus_is_decided_before_training(tmp_path, data_dir):
  """Issue 13 bug 5: one document has no held-out split; the run trained fully, then died at
  the final evaluation. Either it evaluates (on a slice made another way, or skips evaluation
  with a warning) and exits 0, or it refuses in one line before any step."""
  corpus = tmp_path / "one.txt"
  corpus.write_text("".join(f"Sentence number {i} of the only document here.\n"
                            for i in range(200)))
  path = str(tmp_path / "w")
  proc = run_main(PRETRAIN, path, {"data.name": "local_text", "data.text_files": str(corpus),
                                   "data.data_dir": str(tmp_path / "data")})
  if proc.returncode == 0:
    assert os.path.exists(os.path.join(path, "eval_results.json")) or "evaluat" in proc.stderr
  else:
    assert_one_line_error(proc, r"one.txt|document")
    assert not os.path.exists(os.path.join(path, "metrics.jsonl"))
