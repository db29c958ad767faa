"""Reliability: corrupt and non-finite checkpoints, the workdir lock and run identity, and every
user mistake reported as one line by the real entry point (issue 13)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import checkpoint, errors

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
