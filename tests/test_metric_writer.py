"""metrics.jsonl after a resume: one row per (step, split), none left from the killed attempt
(issue 23 item 8)."""

from __future__ import annotations

import json
import os

from bert_jax.metric_writer import MetricWriter, drop_rows_after


def _rows(workdir) -> list[tuple[int, str]]:
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [(r["step"], r["split"]) for r in map(json.loads, f)]


def _write(workdir, steps, *, resume_step=0, final_step=None, eval_at=()):
  writer = MetricWriter(str(workdir), resume_step=resume_step, final_step=final_step)
  for step in steps:
    writer.write(step, {"loss": 1.0 / step})
    if step in eval_at:
      writer.write(step, {"loss": 0.5}, split="eval")
  writer.close()


def test_resume_drops_the_rows_the_killed_attempt_wrote_past_the_checkpoint(tmp_path):
  _write(tmp_path, range(1, 27), eval_at=(10, 20))  # killed after step 26
  _write(tmp_path, range(11, 31), resume_step=10, final_step=30, eval_at=(20, 30))
  rows = _rows(tmp_path)
  assert len(rows) == len(set(rows)), sorted(r for r in rows if rows.count(r) > 1)
  assert [s for s, split in rows if split == "train"] == list(range(1, 31))
  assert [s for s, split in rows if split == "eval"] == [10, 20, 30]


def test_rerunning_a_finished_run_keeps_one_final_evaluation(tmp_path):
  _write(tmp_path, range(1, 5), final_step=4, eval_at=(4,))
  _write(tmp_path, [], resume_step=4, final_step=4)  # restored at the end: evaluates again
  writer = MetricWriter(str(tmp_path), resume_step=4, final_step=4)
  writer.write(4, {"loss": 0.5}, split="eval")
  writer.close()
  assert _rows(tmp_path) == [(1, "train"), (2, "train"), (3, "train"), (4, "train"),
                             (4, "eval")]


def test_a_row_cut_by_a_kill_is_dropped_and_nothing_else_is_touched(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "split": "train"}\n{"step": 2, "spl')
  assert drop_rows_after(str(path), 5) == 1
  assert path.read_text() == '{"step": 1, "split": "train"}\n'
  assert drop_rows_after(str(path), 5) == 0
  assert drop_rows_after(str(tmp_path / "absent.jsonl"), 0) == 0
