"""Run outputs a person can read and plot: console progress, metrics.jsonl, TensorBoard events."""

from __future__ import annotations

import json
import math
import os
import time

from absl import logging


class MetricWriter:
  """Writes one JSON object per logged step and TensorBoard scalars (process 0 only)."""

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
    try:  # TensorBoard event files without TensorFlow.
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
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
    self.steps_timed = 0

  def start_timing(self, step: int):
    self.t0, self.t0_step = time.time(), step

  def eta_seconds(self, step: int) -> float:
    if self.t0 is None or step <= self.t0_step:
      return float("nan")
    per_step = (time.time() - self.t0) / (step - self.t0_step)
    return per_step * (self.total - step)

  def line(self, step: int, metrics: dict[str, float]) -> str:
    eta = self.eta_seconds(step)
    eta_s = "?" if math.isnan(eta) else time.strftime("%H:%M:%S", time.gmtime(eta))
    parts = [f"step {step}/{self.total}", f"loss {metrics.get('loss', float('nan')):.4f}"]
    for key in ("mlm_accuracy", "accuracy"):
      if key in metrics:
        parts.append(f"{key} {metrics[key]:.4f}")
    parts += [f"{metrics.get('tokens_per_sec', 0):,.0f} tok/s", f"ETA {eta_s}"]
    return " | ".join(parts)
