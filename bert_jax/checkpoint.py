"""Orbax checkpoints: train state, data-iterator position and run metadata, saved atomically.

A checkpoint step directory holds three named items:
  state  the TrainState (step, params, optimizer state), restored onto any mesh
  data   the input iterator's state (JSON), so a resumed run sees the same batches
  meta   model config, task and base rng (JSON), to refuse a checkpoint of another config
Orbax writes each step into a temporary directory and renames it when complete, so a run
killed mid-save leaves the previous checkpoint intact.

A step that fails to restore is reported and the one before it used; once an older step has
restored, the unreadable ones are moved (never deleted) to
`<checkpoints>/../corrupt_checkpoints/<step>-<UTC time>/`, so the run can write that step
again and `max_to_keep` counts only good checkpoints. When no step restores, nothing is moved:
a failure of every step is more likely a wrong mesh or too little memory than corruption.

`save` refuses a state with a non-finite parameter or optimizer moment (`nonfinite_leaves`),
so every checkpoint on disk resumes cleanly.
"""

from __future__ import annotations

import contextlib
import errno
import logging as py_logging
import os
import shutil
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from bert_jax import errors

ITEMS = ("state", "data", "meta")
CORRUPT_DIR = "corrupt_checkpoints"
# The `meta` item's layout: 2 = task modules (task name + task settings in "task_info").
FORMAT = 2


class CheckpointMismatchError(errors.ConfigError):
  """A checkpoint written for another model config or task."""


class CheckpointUnreadableError(errors.UserError, RuntimeError):
  """No step of a checkpoint directory restores."""


class DiskFullError(errors.UserError, OSError):
  """A save failed for lack of space; the run stops, the previous checkpoint intact."""


def _is_disk_full(e: BaseException) -> bool:
  """Whether `e` or an exception it was raised from is ENOSPC (Orbax and TensorStore wrap it)."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if getattr(e, "errno", None) == errno.ENOSPC or "No space left on device" in str(e):
      return True
    e = e.__cause__ or e.__context__
  return False


class NonFiniteStateError(errors.NonFiniteLossError):
  """`Checkpointer.save` was given a state with non-finite values; nothing was written.

  `step`: the step refused; `leaves`: the key paths of the bad arrays; `last_good`: the newest
  checkpoint already in the directory (None when none was written yet).
  """

  def __init__(self, message: str, step: int, leaves: list[str], last_good: int | None):
    super().__init__(message)
    self.step, self.leaves, self.last_good = step, leaves, last_good


@jax.jit
def _leaves_finite(leaves: list[jax.Array]) -> jax.Array:
  """[num leaves] bool: each leaf's float32 sum of squares is finite."""
  return jnp.stack([jnp.isfinite(jnp.sum(jnp.square(x.astype(jnp.float32)))) for x in leaves])


def nonfinite_leaves(tree) -> list[str]:
  """Key paths (`jax.tree_util.keystr`) of the floating-point leaves of `tree` that hold a NaN
  or an infinity, or values so large that their squares overflow float32 (|x| >~ 1.8e19).

  The second kind is a diverged state too: its matmuls overflow at the next step (a learning
  rate of 1e30 leaves finite parameters near 1e29 whose next loss is NaN). One jitted
  reduction over the whole tree and one small transfer; works on sharded jax arrays and on
  host arrays.
  """
  floats = [(path, x) for path, x in jax.tree_util.tree_leaves_with_path(tree)
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)]
  if not floats:
    return []
  finite = np.asarray(_leaves_finite([x for _, x in floats]))
  return [jax.tree_util.keystr(path) for (path, _), ok in zip(floats, finite) if not ok]


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
    self._saving: int | None = None  # the step of the newest save started

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, *, data_state: dict | None, meta: dict,
           metrics: dict | None = None, force: bool = False) -> bool:
    """Saves `step` (asynchronously); raises NonFiniteStateError, writing nothing, when the
    state holds a non-finite value (see `nonfinite_leaves`)."""
    bad = nonfinite_leaves(state)
    if bad:
      last = self.latest_step()
      where = (f"the last good checkpoint is step {last} in {self.directory}" if last is not None
               else "no checkpoint was written yet")
      raise NonFiniteStateError(
          f"training diverged at step {step}: the state holds non-finite values in {len(bad)} "
          f"arrays (e.g. {', '.join(bad[:3])}); not saving it; {where}", step, bad, last)
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state or {}),
        meta=ocp.args.JsonSave(meta))
    self.wait()  # the previous asynchronous save first (Orbax waits anyway): a failed one
    #              stops the run here, reported under its own step
    with self._disk_full_is_one_line(step):
      saved = self.manager.save(step, args=args, metrics=metrics, force=force)
    if saved:
      self._saving = step
    return saved

  def check(self):
    """Raises DiskFullError (or the error itself) if the last asynchronous save failed."""
    with self._disk_full_is_one_line(self._saving):
      self.manager.check_for_errors()

  @contextlib.contextmanager
  def _disk_full_is_one_line(self, step: int | None):
    try:
      yield
    except Exception as e:  # re-raised unless it is ENOSPC
      if not _is_disk_full(e):
        raise
      complete = [s for s in self._complete_steps() if s != step]
      last = (f"the last complete checkpoint is step {complete[-1]} in {self.directory}"
              if complete else "no complete checkpoint was written")
      raise DiskFullError(f"no space left on device while saving step {step}; {last}") from None

  def _complete_steps(self) -> list[int]:
    """Step folders Orbax finalized (renamed from their temporary names)."""
    if not os.path.isdir(self.directory):
      return []
    return sorted(int(n) for n in os.listdir(self.directory)
                  if n.isdigit() and os.path.isdir(os.path.join(self.directory, n)))

  def restore(self, abstract_state, *, step: int | None = None, expect_meta: dict | None = None,
              ) -> tuple[int, Any, dict, dict]:
    """Restores (step, state, data_state, meta) from `step` or the newest readable step.

    `abstract_state` (jax.ShapeDtypeStruct leaves with shardings) decides where each array
    lands, so a checkpoint saved on one mesh restores onto another. Newer steps that fail to
    restore are moved aside once an older one has restored (see the module docstring).
    """
    steps = [step] if step is not None else sorted(self.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    unreadable: list[tuple[int, str]] = []
    for s in steps:
      try:
        meta = self._restore_item(s, "meta", ocp.args.JsonRestore())
        if expect_meta is not None:
          check_meta(meta, expect_meta, f"{self.directory}/{s}")
        restored = self.manager.restore(s, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
      except CheckpointMismatchError:
        raise
      except Exception as e:  # a corrupt step: report it and try the previous one
        reason = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
        unreadable.append((s, reason))
        logging.warning("Checkpoint step %d in %s is unreadable (%s); trying an older one.",
                        s, self.directory, reason)
        continue
      if unreadable:
        self._move_aside([u for u, _ in unreadable])
      return s, restored.state, dict(restored.data or {}), dict(restored.meta)
    raise CheckpointUnreadableError(
        f"no readable checkpoint in {self.directory} (" +
        "; ".join(f"step {u}: {r}" for u, r in unreadable) + "); nothing was moved or deleted")

  def _move_aside(self, steps: list[int]):
    """Moves unreadable step directories to ../corrupt_checkpoints/ (process 0 moves; every
    process then re-reads the step list)."""
    target_root = os.path.join(os.path.dirname(self.directory), CORRUPT_DIR)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    if jax.process_index() == 0:
      for step in steps:
        source = os.path.join(self.directory, str(step))
        if not os.path.isdir(source):
          continue
        target, n = os.path.join(target_root, f"{step}-{stamp}"), 1
        while os.path.exists(target):
          target, n = os.path.join(target_root, f"{step}-{stamp}-{n}"), n + 1
        os.makedirs(target_root, exist_ok=True)
        shutil.move(source, target)
        logging.warning("Moved unreadable checkpoint step %d to %s (kept for inspection; "
                        "this run writes step %d again).", step, target, step)
    if jax.process_count() > 1:
      ocp.multihost.sync_global_processes("bert_jax_corrupt_checkpoints_moved")
    self.manager.reload()

  def _restore_item(self, step: int, item: str, arg):
    return self.manager.restore(step, args=ocp.args.Composite(**{item: arg}))[item]

  def wait(self):
    with self._disk_full_is_one_line(self._saving):
      self.manager.wait_until_finished()
      self.manager.check_for_errors()

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


def _newest(directory: str) -> tuple[ocp.CheckpointManager, int]:
  """A read-only manager of the checkpoints under `directory` and its newest step; a step
  folder (`<workdir>/checkpoints/<step>`) names that step."""
  directory = os.path.abspath(directory)  # orbax needs absolute paths
  options = ocp.CheckpointManagerOptions(read_only=True)
  step = os.path.basename(directory)
  if step.isdigit() and os.path.isdir(os.path.join(directory, "state")):
    return ocp.CheckpointManager(os.path.dirname(directory), options=options,
                                 item_names=ITEMS), int(step)
  for candidate in (os.path.join(directory, "checkpoints"), directory):
    if os.path.isdir(candidate):
      manager = ocp.CheckpointManager(candidate, options=options, item_names=ITEMS)
      if manager.latest_step() is not None:
        return manager, manager.latest_step()
  raise FileNotFoundError(f"no bert_jax checkpoint under {directory}")


def read_newest_meta(directory: str) -> dict:
  """The run metadata (model config, task, vocab_file, ...) of the newest checkpoint (or of
  the step folder `directory` names)."""
  manager, step = _newest(directory)
  return dict(manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)


def restore_params(directory: str) -> tuple[Any, dict]:
  """Reads the parameters (and meta) of the newest checkpoint under `directory`.

  `directory` may be a workdir (with checkpoints/), the checkpoints folder itself or one step
  folder of it (`<workdir>/checkpoints/<step>`: that step). Arrays
  come back on the first local device, in the saved tree layout, whatever mesh wrote them.
  """
  manager, step = _newest(directory)
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


def restore_run(directory: str) -> tuple[Any, dict]:
  """`restore_params` of a checkpoint this bert_jax can read (meta `format` == FORMAT), without
  Orbax's notes on a read-only restore."""
  with _quiet_read_only_restore():
    params, meta = restore_params(directory)
  if meta.get("format") != FORMAT:
    raise errors.ConfigError(
        f"{directory}: checkpoint written by a bert_jax before task modules (no format "
        f"{FORMAT} metadata); retrain it, or export it with that older version")
  return params, meta


class _ReadOnlyRestoreNotes:
  """Drops Orbax's warnings that merely describe a read-only restore (`read_only=True,
  setting ...`, `Given directory is read only`, `Metadata file does not exist`)."""

  NOTES = ("read_only=True", "directory is read only", "Metadata file does not exist")

  def filter(self, record) -> bool:
    return not ("/orbax/" in record.pathname.replace(os.sep, "/")
                and any(n in record.getMessage() for n in self.NOTES))


@contextlib.contextmanager
def _quiet_read_only_restore():
  """Without `_ReadOnlyRestoreNotes` on absl's logger: 4 such lines before every output."""
  logger, note_filter = py_logging.getLogger("absl"), _ReadOnlyRestoreNotes()
  logger.addFilter(note_filter)
  try:
    yield
  finally:
    logger.removeFilter(note_filter)
