"""Orbax checkpoints: train state, data-iterator position and run metadata, saved atomically.

A checkpoint step directory holds three named items:
  state  the TrainState (step, params, optimizer state), restored onto any mesh
  data   the input iterator's state (JSON), so a resumed run sees the same batches
  meta   model config, task and base rng (JSON), to refuse a checkpoint of another config
Orbax writes each step into a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoint intact; a step that fails to restore is reported
and the one before it used.
"""

from __future__ import annotations

import os
from typing import Any

import jax
from absl import logging

import orbax.checkpoint as ocp

ITEMS = ("state", "data", "meta")


class CheckpointMismatchError(ValueError):
  """A checkpoint written for another model config or task."""


class Checkpointer:
  """Saves every N steps (asynchronously) and keeps the newest `max_to_keep`."""

  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True,
               best_metric: str | None = None):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True,
        cleanup_tmp_directories=True,
        best_fn=(lambda m: m[best_metric]) if best_metric else None, best_mode="max")
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, *, data_state: dict | None, meta: dict,
           metrics: dict | None = None, force: bool = False) -> bool:
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state or {}),
        meta=ocp.args.JsonSave(meta))
    return self.manager.save(step, args=args, metrics=metrics, force=force)

  def restore(self, abstract_state, *, step: int | None = None, expect_meta: dict | None = None,
              ) -> tuple[int, Any, dict, dict]:
    """Restores (step, state, data_state, meta) from `step` or the newest readable step.

    `abstract_state` (jax.ShapeDtypeStruct leaves with shardings) decides where each array
    lands, so a checkpoint saved on one mesh restores onto another.
    """
    steps = [step] if step is not None else sorted(self.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    errors = []
    for s in steps:
      try:
        meta = self._restore_item(s, "meta", ocp.args.JsonRestore())
      except Exception as e:  # noqa: BLE001 - a corrupt step: report it and try the previous one
        errors.append(f"step {s}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        logging.warning("Checkpoint step %d in %s is unreadable (%s); trying an older one.",
                        s, self.directory, errors[-1])
        continue
      if expect_meta is not None:
        check_meta(meta, expect_meta, f"{self.directory}/{s}")
      try:
        restored = self.manager.restore(s, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
      except Exception as e:  # noqa: BLE001
        errors.append(f"step {s}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        logging.warning("Checkpoint step %d in %s is unreadable (%s); trying an older one.",
                        s, self.directory, errors[-1])
        continue
      return s, restored.state, dict(restored.data or {}), dict(restored.meta)
    raise RuntimeError(f"no readable checkpoint in {self.directory}: " + "; ".join(errors))

  def _restore_item(self, step: int, item: str, arg):
    return self.manager.restore(step, args=ocp.args.Composite(**{item: arg}))[item]

  def read_meta(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    return dict(self._restore_item(step, "meta", ocp.args.JsonRestore()))

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()


def check_meta(found: dict, expected: dict, where: str):
  """Raises CheckpointMismatchError when the model config or task differ."""
  for key in ("task", "model"):
    if key in expected and key in found and found[key] != expected[key]:
      if isinstance(found[key], dict):
        diff = {k: (found[key].get(k), v) for k, v in expected[key].items()
                if found[key].get(k) != v}
        raise CheckpointMismatchError(
            f"checkpoint {where} was written for another {key} config; "
            f"(checkpoint, current) differ at {diff}")
      raise CheckpointMismatchError(
          f"checkpoint {where} has {key}={found[key]!r}, this run has {expected[key]!r}")


def restore_params(directory: str) -> tuple[Any, dict]:
  """Reads the parameters (and meta) of the newest checkpoint under `directory`.

  `directory` may be a workdir (with checkpoints/) or the checkpoints folder itself. Arrays
  come back on the first local device, in the saved tree layout, whatever mesh wrote them.
  """
  directory = os.path.abspath(directory)  # orbax needs absolute paths
  options = ocp.CheckpointManagerOptions(read_only=True)
  for candidate in (os.path.join(directory, "checkpoints"), directory):
    if os.path.isdir(candidate):
      manager = ocp.CheckpointManager(candidate, options=options, item_names=ITEMS)
      if manager.latest_step() is not None:
        break
  else:
    raise FileNotFoundError(f"no bert_jax checkpoint under {directory}")
  step = manager.latest_step()
  meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
  path = os.path.join(manager.directory, str(step), "state")
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  with ocp.StandardCheckpointer() as ckptr:
    metadata = ckptr.metadata(path)
    tree = getattr(metadata, "item_metadata", metadata)
    tree = getattr(tree, "tree", tree)
    abstract = jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    state = ckptr.restore(path, abstract)
  return state["params"], dict(meta)
