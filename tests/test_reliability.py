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
                     match=r"at step 3: .*the last good checkpoint is step 2 in .*checkpoints") as e:
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
  written = workdir.record_run(path, {"seed": 0}, identity)
  assert json.load(open(written)) == {"seed": 0, "_run": identity}
  assert sorted(os.listdir(path)) == ["checkpoints", "config.json"]  # no temporary file left
  workdir.check_run(path, identity, has_checkpoint=True)
