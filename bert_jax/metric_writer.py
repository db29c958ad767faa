"""Run outputs a person can read and plot: console progress, metrics.jsonl, TensorBoard events."""

from __future__ import annotations

import json
import math
import os
import time

from absl import logging

from bert_jax import fileio


def drop_rows_after(path: str, step: int, *, final_step: int | None = None) -> int:
  """Rewrites `path` (metrics.jsonl) atomically without the rows a resume from `step` writes
  again: rows past `step`, and the final evaluation's rows when `step` is `final_step` (a
  finished run run again evaluates again). Returns the number of rows dropped."""
  if not os.path.exists(path):
    return 0
  with open(path, encoding="utf-8") as f:
    lines = [line for line in f if line.strip()]
  kept = []
  for line in lines:
    try:
      row = json.loads(line)
      row_step, split = int(row["step"]), row.get("split", "train")
    except (ValueError, KeyError, TypeError):  # a row cut by a kill mid-write
      continue
    if row_step > step or (row_step == step == final_step and split != "train"):
      continue
    kept.append(line if line.endswith("\n") else line + "\n")
  if len(kept) == len(lines):
    return 0
  fileio.write_text_atomic(path, "".join(kept))
  return len(lines) - len(kept)


class MetricWriter:
  """Writes one JSON object per logged step and TensorBoard scalars (process 0 only).

  `resume_step`: the step the run starts from; rows a previous attempt wrote past it are
  dropped first (`drop_rows_after`) and TensorBoard purges its events past it, so a resumed
  run leaves one row and one curve point per step.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int = 0,
               final_step: int | None = None):
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    dropped = drop_rows_after(path, resume_step, final_step=final_step)
    if dropped:
      logging.info("metrics.jsonl: dropped %d rows past step %d (written again by this run)",
                   dropped, resume_step)
    self._jsonl = open(path, "a", encoding="utf-8")
    try:  # TensorBoard event files without TensorFlow.
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=resume_step + 1)
    except ImportError:
      logging.warning("tensorboardX is not installed: no TensorBoard events, metrics.jsonl only")

  def write(self, step: int, metrics: dict[str, float], *, split: str = "train"):
    if not self.enabled:
      return
    row = {"step": int(step), "split": split, "time": time.time()}
    row.update({k: (float(v) if math.isfinite(float(v)) else str(float(v)))
                for k, v in metrics.items()})
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in metrics.items():
        if math.isfinite(float(v)):
          self._tb.add_scalar(f"{split}/{k}", float(v), int(step))
      self._tb.flush()

  def close(self):
    if self.enabled:
      self._jsonl.close()
      if self._tb is not None:
        self._tb.close()


class Progress:
  """Console line per log: step/total, loss, tokens/s, ETA."""

  def __init__(self, total_steps: int, start_step: int):
    self.total, self.start = total_steps, start_step
    self.t0 = None  # set after the first (compiling) step
    self.budget_left = None  # budget_minutes: () -> seconds left; the ETA is then at most that

  def start_timing(self, step: int):
    self.t0, self.t0_step = time.time(), step

  def eta_seconds(self, step: int) -> float:
    if self.t0 is None or step <= self.t0_step:
      return float("nan")
    per_step = (time.time() - self.t0) / (step - self.t0_step)
    eta = per_step * (self.total - step)
    return eta if self.budget_left is None else max(0.0, min(eta, self.budget_left()))

  def line(self, step: int, metrics: dict[str, float]) -> str:
    eta = self.eta_seconds(step)
    eta_s = "?" if math.isnan(eta) else time.strftime("%H:%M:%S", time.gmtime(eta))
    parts = [f"step {step}/{self.total}", f"loss {metrics.get('loss', float('nan')):.4f}"]
    for key in ("mlm_accuracy", "accuracy"):
      if key in metrics:
        parts.append(f"{key} {metrics[key]:.4f}")
    parts += [f"{metrics.get('tokens_per_sec', 0):,.0f} tok/s", f"ETA {eta_s}"]
    return " | ".join(parts)
