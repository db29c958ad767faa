"""Recipe options (issue 21 part 2): learning-rate schedules (linear, one_cycle, wsd) and the
wall-time budget (`budget_minutes`), tested with a fake clock (nothing depends on speed)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bert_jax import checkpoint, optim, train
from bert_jax.errors import ConfigError
from experiments import base

LR = 1e-3


def test_linear_default_is_todays_schedule_bit_for_bit():
  tx, schedule = optim.make_optimizer(learning_rate=LR, total_steps=100, warmup_steps=10)
  today = optim.linear_schedule(LR, 10, 100)
  for step in (0, 1, 5, 10, 11, 50, 99, 100, 120):
    assert np.asarray(schedule(step)) == np.asarray(today(step)), step
  same = optim.make_schedule("linear", LR, 10, 100)
  assert all(np.asarray(same(s)) == np.asarray(today(s)) for s in (0, 7, 10, 63, 100))


def test_one_cycle_is_cramming_budget_triangle2():
  # min(0.25 + p, 4 (1 - p)): 0.25 of the peak at the start, the peak at 3/4, 0 at the end.
  schedule = optim.make_schedule("one_cycle", LR, 0, 100)
  for step, factor in ((0, 0.25), (25, 0.5), (50, 0.75), (75, 1.0), (90, 0.4), (100, 0.0),
                       (130, 0.0)):
    np.testing.assert_allclose(float(schedule(step)), LR * factor, rtol=1e-5, atol=1e-12)
  schedule = optim.make_schedule("one_cycle", LR, 0, 100, cycle_start=0.0, cycle_peak=0.5)
  np.testing.assert_allclose([float(schedule(s)) for s in (0, 25, 50, 75)],
                             [0.0, LR / 2, LR, LR / 2], rtol=1e-5)


def test_wsd_warms_up_holds_then_decays_as_one_minus_sqrt():
  schedule = optim.make_schedule("wsd", LR, 10, 100, decay_ratio=0.2)
  expected = {0: 0.0, 5: 0.5, 10: 1.0, 50: 1.0, 80: 1.0, 85: 1 - np.sqrt(0.25),
              90: 1 - np.sqrt(0.5), 95: 1 - np.sqrt(0.75), 100: 0.0}
  for step, factor in expected.items():
    np.testing.assert_allclose(float(schedule(step)), LR * factor, rtol=1e-5, atol=1e-12)
  # The host's version (budget_minutes) is the same curve over the fraction of the budget.
  host = optim.budget_schedule("wsd", LR, warmup_ratio=0.1, decay_ratio=0.2)
  for step, factor in expected.items():
    np.testing.assert_allclose(host(step / 100), LR * factor, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("key, value, message", [
    ("schedule", "cosine", "schedule='cosine'"),
    ("decay_ratio", 0.0, "decay_ratio"),
    ("cycle_peak", 1.0, "cycle_peak"),
])
def test_bad_schedule_is_a_config_error_naming_it(key, value, message):
  c = base.get_config()
  c.optimizer.schedule = "wsd" if key == "decay_ratio" else "one_cycle"
  c.optimizer[key] = value
  with pytest.raises(ConfigError, match=message):
    train._schedule_shape(c)


def test_budget_config_errors():
  c = base.get_config()
  c.budget_minutes = -1.0
  with pytest.raises(ConfigError, match="budget_minutes"):
    train._budget_seconds(c)
  c.budget_minutes, c.optimizer.warmup_steps = 1.0, 5
  with pytest.raises(ConfigError, match="warmup_steps=5"):
    train._optimizer_args(c)


def test_external_learning_rate_scales_the_same_updates():
  """budget_minutes: the optimizer runs at learning rate 1 (same state structure) and the
  step multiplies by the host's rate: the same update as the scheduled optimizer's."""
  params = {"w": {"kernel": jnp.arange(6.0).reshape(2, 3)}, "b": {"bias": jnp.ones(3)}}
  grads = jax.tree.map(lambda x: 0.1 * x + 0.05, params)
  tx, schedule = optim.make_optimizer(learning_rate=LR, total_steps=10, warmup_steps=0)
  ext, host = optim.make_optimizer(learning_rate=LR, total_steps=10,
                                   external_learning_rate=True)
  s, e = tx.init(params), ext.init(params)
  assert jax.tree.structure(s) == jax.tree.structure(e)
  u, _ = tx.update(grads, s, params)
  v, _ = ext.update(grads, e, params)
  lr = jnp.float32(host(0.0))
  assert lr == schedule(0)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b * lr), u, v)
  assert isinstance(optax.global_norm(v), jax.Array)


class FakeClock:
  """Seconds that advance by `tick` at every reading (the loop reads it once a step)."""

  def __init__(self, tick: float):
    self.tick, self.t = tick, -tick

  def __call__(self) -> float:
    self.t += self.tick
    return self.t


def test_budget_follows_the_schedule_over_fake_time():
  host = optim.budget_schedule("one_cycle", LR)
  budget = train._Budget(60.0, host, elapsed_before=0.0, clock=FakeClock(6.0))
  rates = []
  while budget.measure() < budget.seconds:
    rates.append(budget.learning_rate())
  assert len(rates) == 9  # at 6, 12, ..., 54 s; the reading at 60 s stops
  expected = [LR * min(0.25 + p, 4 * (1 - p)) for p in np.arange(1, 10) / 10]
  np.testing.assert_allclose(rates, expected, rtol=1e-5)
  resumed = train._Budget(60.0, host, elapsed_before=30.0, clock=FakeClock(6.0))
  assert resumed.measure() == 36.0 and resumed.meta() == {"budget_elapsed_s": 36.0}


# --- end to end: the real loop with a fake clock ------------------------------------------


def budget_run(workdir, data_dir, clock, **extra):
  """pretrain_tiny shrunk to seconds (test_train's overrides), one_cycle over a 1-minute
  budget, at most `num_train_steps` (12) steps; returns the final metrics."""
  from test_train import config_with, tiny_overrides
  overrides = tiny_overrides(data_dir, **{"optimizer.warmup_steps": -1,
                                          "optimizer.schedule": "one_cycle",
                                          "budget_minutes": 1.0, **extra})
  return train.train_and_evaluate(config_with("pretrain_tiny", overrides), str(workdir),
                                  clock=clock)


def train_rows(workdir) -> dict[int, dict]:
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return {r["step"]: r for r in rows if r["split"] == "train"}


def saved_steps(workdir) -> list[int]:
  return sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())


def elapsed_of(workdir, step: int) -> float:
  meta = checkpoint.read_newest_meta(os.path.join(str(workdir), "checkpoints", str(step)))
  return meta["budget_elapsed_s"]


@pytest.fixture(scope="module")
def budget_workdir(tmp_path_factory, data_dir):
  workdir = tmp_path_factory.mktemp("budget")
  result = budget_run(workdir, data_dir, FakeClock(6.0))  # step s starts at 6 s s
  return workdir, result


def test_budget_stops_on_time_with_a_checkpoint_and_evaluates(budget_workdir):
  workdir, result = budget_workdir
  assert "preempted_at_step" not in result and "mlm_loss" in result
  assert saved_steps(workdir) == [4, 8, 9]  # every 4 steps, and the last step at the budget
  assert elapsed_of(workdir, 9) == 60.0 and elapsed_of(workdir, 8) == 48.0
  assert json.load(open(os.path.join(workdir, "eval_results.json")))["step"] == 9
  rows = train_rows(workdir)
  assert sorted(rows) == list(range(1, 10))
  expected = [5e-3 * min(0.25 + p, 4 * (1 - p)) for p in np.arange(1, 10) / 10]
  np.testing.assert_allclose([rows[s]["learning_rate"] for s in range(1, 10)], expected,
                             rtol=1e-5)


def test_a_resumed_run_continues_the_elapsed_time(budget_workdir, tmp_path, data_dir):
  full, _ = budget_workdir
  # Stops at the step bound (5 steps, 30 s spent), then resumes with a fresh clock.
  budget_run(tmp_path, data_dir, FakeClock(6.0), num_train_steps=5)
  assert saved_steps(tmp_path) == [4, 5] and elapsed_of(tmp_path, 5) == 30.0
  budget_run(tmp_path, data_dir, FakeClock(6.0))
  assert saved_steps(tmp_path)[-1] == 9 and elapsed_of(tmp_path, 9) == 60.0
  a, b = train_rows(full), train_rows(tmp_path)
  assert sorted(b) == list(range(1, 10))
  assert [b[s]["learning_rate"] for s in b] == [a[s]["learning_rate"] for s in a]
  assert [b[s]["loss"] for s in b] == [a[s]["loss"] for s in a]


def test_progress_eta_is_at_most_the_budget_left():
  from bert_jax.metric_writer import Progress
  progress = Progress(1000, 0)
  progress.t0, progress.t0_step = 0.0, 1  # a step took ages: the step ETA is huge
  assert progress.eta_seconds(2) > 1e6
  progress.budget_left = lambda: 5.0
  assert progress.eta_seconds(2) == 5.0
