"""A save that runs out of disk space stops the run at once with one line naming the step and
the last complete checkpoint; that checkpoint stays intact and the same command resumes from it
once space is freed. The end-to-end test needs a small filesystem it can make (a tmpfs, as
root); the unit tests fake ENOSPC and run anywhere."""

import errno
import os
import subprocess

import jax
import numpy as np
import pytest
from test_train import run_main, tiny_overrides

from bert_jax import checkpoint as ckpt_lib

CONFIG = "experiments/pretrain_tiny.py"


def _state(value: float):
  return {"w": np.full((4,), value, np.float32), "step": np.int32(0)}


def test_failed_save_is_one_disk_full_error(tmp_path, monkeypatch):
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path / "ckpt"))
  checkpointer.save(2, _state(1.0), data_state={}, meta={})
  checkpointer.wait()

  def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(checkpointer.manager, "save", no_space)
  with pytest.raises(ckpt_lib.DiskFullError, match=r"^no space left on device while saving "
                     r"step 4; the last complete checkpoint is step 2 in "):
    checkpointer.save(4, _state(2.0), data_state={}, meta={})
  monkeypatch.undo()
  step, restored, _, _ = checkpointer.restore(jax.eval_shape(lambda: _state(0.0)))
  assert step == 2 and np.all(restored["w"] == 1.0)
  checkpointer.close()


def test_failed_async_save_is_reported_under_its_own_step(tmp_path, monkeypatch):
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path / "ckpt"))
  checkpointer.save(3, _state(1.0), data_state={}, meta={})
  checkpointer.wait()

  def failed_in_background():  # as TensorStore reports it, wrapped by Orbax
    try:
      raise ValueError("RESOURCE_EXHAUSTED: Failed to write: No space left on device")
    except ValueError as e:
      raise RuntimeError("Save Finalize thread failed") from e

  monkeypatch.setattr(checkpointer.manager, "check_for_errors", failed_in_background)
  with pytest.raises(ckpt_lib.DiskFullError, match="while saving step 3; no complete"):
    checkpointer.check()  # the step of the save in flight; 3 itself is not complete
  monkeypatch.setattr(checkpointer.manager, "check_for_errors", lambda: None)
  checkpointer.close()


def test_other_save_errors_keep_their_traceback(tmp_path, monkeypatch):
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path / "ckpt"))

  def broken(*args, **kwargs):
    raise OSError(errno.EIO, "Input/output error")

  monkeypatch.setattr(checkpointer.manager, "save", broken)
  with pytest.raises(OSError, match="Input/output error") as info:
    checkpointer.save(1, _state(1.0), data_state={}, meta={})
  assert not isinstance(info.value, ckpt_lib.DiskFullError)
  monkeypatch.undo()
  checkpointer.close()


@pytest.fixture
def small_fs(tmp_path):
  """A 64 MiB tmpfs (root only; skipped with the reason otherwise)."""
  if os.geteuid() != 0:
    pytest.skip("mounting a small tmpfs needs root")
  mount = tmp_path / "fs"
  mount.mkdir()
  made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
                        capture_output=True, text=True)
  if made.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
  yield mount
  subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(mount, leave_kib: int):
  """Fills the filesystem but for `leave_kib` KiB; returns the filler's path."""
  stat = os.statvfs(mount)
  free = stat.f_bavail * stat.f_frsize
  filler = mount / "filler"
  with open(filler, "wb") as f:
    os.posix_fallocate(f.fileno(), 0, free - leave_kib * 1024)
  return filler


def _run(workdir, data_dir, steps):
  o = tiny_overrides(data_dir, num_train_steps=steps, checkpoint_every_steps=2,
                     eval_every_steps=100)
  proc = run_main(CONFIG, workdir, o)
  out, _ = proc.communicate(timeout=900)
  return proc.returncode, out


@pytest.mark.slow
def test_full_disk_stops_the_run_with_one_line_and_resumes(small_fs, data_dir):
  workdir = str(small_fs / "w")
  rc, out = _run(workdir, data_dir, 4)
  assert rc == 0, out[-3000:]
  filler = _fill(small_fs, leave_kib=200)  # a checkpoint of this model is ~3 MB
  rc, out = _run(workdir, data_dir, 10)
  errors = [line for line in out.splitlines() if line.startswith("error:")]
  assert rc == 1 and errors == [
      f"error: no space left on device while saving step 6; the last complete checkpoint is "
      f"step 4 in {workdir}/checkpoints"], out[-3000:]
  assert "Traceback" not in out and "Event loop is closed" not in out, out[-3000:]
  assert len(out.splitlines()) < 20, out  # the step lines, and the one error
  assert "step 10/10" not in out  # stopped, not trained on
  complete = sorted(n for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit())
  assert complete == ["2", "4"]
  os.remove(filler)
  rc, out = _run(workdir, data_dir, 10)  # the same command, space freed
  assert rc == 0, out[-3000:]
  assert "resumed from" in out and "at step 4" in out
  assert "step 10/10" in out
