"""The GLUE suite (`python -m bert_jax.glue`): aggregation, the GLUE average, --compare, bad
arguments, and end to end on tiny GLUE-format files: two tasks, a tiny random model, a kill -9
in the middle of a run and the same numbers after the rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bert_jax import glue
from bert_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_run(workdir, task, seed, results, wall=10.0):
  d = os.path.join(workdir, task, f"s{seed}")
  os.makedirs(d, exist_ok=True)
  with open(os.path.join(d, "eval_results.json"), "w") as f:
    json.dump({"step": 5, **results}, f)
  with open(os.path.join(d, glue.RUN_FILE), "w") as f:
    json.dump({"wall_s": wall, "steps": 5, "train_examples": 100}, f)


def test_collect_takes_median_min_max_and_the_leaderboard_average(tmp_path):
  w = str(tmp_path)
  for seed, (mcc, acc) in enumerate([(0.3, 0.6), (0.5, 0.7), (0.1, 0.8)]):
    _write_run(w, "cola", seed, {"matthews_corrcoef": mcc, "accuracy": acc, "loss": 1.0})
    _write_run(w, "mrpc", seed, {"f1": 0.8 + seed / 100, "accuracy": 0.7})
    _write_run(w, "wnli", seed, {"accuracy": 0.5})
  s = glue.collect(w, ["cola", "mrpc", "wnli"], 3, init_from="x", budget="short")
  assert s["tasks"]["cola"]["matthews_corrcoef"] == {
      "median": 0.3, "min": 0.1, "max": 0.5, "seeds": [0.3, 0.5, 0.1]}
  mrpc = (0.81 + 0.7) / 2  # a task's score is the mean of its official metrics
  assert s["average"] == pytest.approx((0.3 + mrpc + 0.5) / 3)
  assert s["average_without_wnli"] == pytest.approx((0.3 + mrpc) / 2)
  assert s["runs"]["cola"] == {"train_examples": 100, "steps": 5, "wall_s": [10.0] * 3}
  assert s["max_steps"] == glue.SHORT_STEPS
  lines = glue.table_lines(s)
  assert any(line.startswith("| CoLA | MCC | 30.0 (10.0-50.0) | 3 |") for line in lines)
  assert any("GLUE average without WNLI" in line and "**" in line for line in lines)


def test_compare_prints_suites_side_by_side(tmp_path, capsys):
  dirs = []
  for name, acc in (("a", 0.6), ("b", 0.7)):
    w = str(tmp_path / name)
    _write_run(w, "rte", 0, {"accuracy": acc})
    summary = glue.collect(w, ["rte"], 1, init_from=f"random:{name}", budget="full")
    with open(os.path.join(w, glue.RESULTS_FILE), "w") as f:
      json.dump(summary, f)
    dirs.append(w)
  lines = glue.compare_lines(dirs)
  assert "random:a" in lines[0] and "random:b" in lines[0]
  assert "| RTE | acc | 60.0 | 70.0 |" in lines
  cli = subprocess.run([sys.executable, "-m", "bert_jax.glue", "--compare", *dirs], cwd=ROOT,
                       env=_env(), capture_output=True, text=True, timeout=300)
  assert cli.returncode == 0 and "| RTE | acc | 60.0 | 70.0 |" in cli.stdout, cli.stderr
  with pytest.raises(ConfigError, match="no glue_results.json"):
    glue.compare_lines([str(tmp_path / "missing")])


def test_bad_arguments_are_one_line_errors(tmp_path):
  with pytest.raises(ConfigError, match="does not exist"):
    glue.resolve_init(str(tmp_path / "nope"))
  with pytest.raises(ConfigError, match="no experiment config experiments/nope.py"):
    glue.resolve_init("random:nope")
  with pytest.raises(ConfigError, match="unknown GLUE task 'mnlii'"):
    glue.run_suite(init_from="random:pretrain_tiny", workdir=str(tmp_path), tasks=["mnlii"],
                   seeds=1, budget="short", glue_dir="")


def test_random_init_takes_the_named_experiments_model_and_vocabulary():
  from experiments import pretrain_tiny
  init, model, vocab = glue.resolve_init("random:pretrain_tiny")
  assert init == "" and vocab == pretrain_tiny.VOCAB_FILE
  assert model["hidden_size"] == 128 and model["num_hidden_layers"] == 2
  c = glue.run_config("stsb", 1, init_from="random:pretrain_tiny", glue_dir="/g")
  assert (c.seed, c.init_from, c.model.hidden_size, c.data.vocab_file) == (
      1, "", 128, pretrain_tiny.VOCAB_FILE)
  assert (c.problem_type, c.data.name, c.data.glue_task) == ("regression", "glue_tsv", "stsb")
  c = glue.run_config("mrpc", 0, init_from="random:pretrain_tiny", glue_dir="")
  assert (c.data.name, c.data.text_key, c.data.text_pair_key) == (
      "glue/mrpc", "sentence1", "sentence2")


def test_a_suite_workdir_refuses_other_settings(tmp_path):
  settings = {"init_from": "random:pretrain_tiny", "budget": "short", "glue_dir": "/g",
              "learning_rate": None, "max_steps": None}
  glue.check_suite(str(tmp_path), settings)
  glue.check_suite(str(tmp_path), settings)  # the same command resumes
  with pytest.raises(ConfigError, match="budget='short', not 'full'"):
    glue.check_suite(str(tmp_path), {**settings, "budget": "full"})


# ---------------------------------------------------------------------------- end to end

RTE_ROWS = [("A man is playing a guitar.", "A man plays music.", "entailment"),
            ("The cat sleeps on the mat.", "The dog is barking loudly.", "not_entailment"),
            ("She bought three apples.", "She bought fruit.", "entailment"),
            ("The train left early.", "The train was cancelled forever.", "not_entailment")]
STSB_ROWS = [("A plane is taking off.", "An air plane is taking off.", "5.000"),
             ("A man is playing a flute.", "A man is playing a large flute.", "3.800"),
             ("A woman is slicing onions.", "A boy is riding a bike.", "0.250"),
             ("Two dogs run in a field.", "Dogs are running outside.", "3.200")]


def write_glue_fixture(root) -> str:
  """Tiny RTE and STS-B folders in the official TSV layouts (48 train rows, 8 dev rows)."""
  for folder, header, rows, make in (
      ("RTE", "index\tsentence1\tsentence2\tlabel", RTE_ROWS,
       lambda i, a, b, y: f"{i}\t{a}\t{b}\t{y}"),
      ("STS-B", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\t"
       "sentence2\tscore", STSB_ROWS,
       lambda i, a, b, y: f"{i}\tmain-captions\tMSRvid\t2012test\t{i:04d}\tnone\tnone\t{a}\t"
                          f"{b}\t{y}")):
    os.makedirs(os.path.join(root, folder))
    for split, n in (("train", 48), ("dev", 8)):
      lines = [header] + [make(i, *rows[i % len(rows)]) for i in range(n)]
      with open(os.path.join(root, folder, f"{split}.tsv"), "w") as f:
        f.write("\n".join(lines) + "\n")
  return str(root)


def _suite_command(glue_dir, workdir, data_dir):
  return [sys.executable, "-m", "bert_jax.glue", "--init_from=random:pretrain_tiny",
          f"--workdir={workdir}", f"--glue_dir={glue_dir}", f"--data_dir={data_dir}",
          "--tasks=rte,stsb", "--seeds=1", "--max_steps=8"]


def _env():
  return {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}


def _official(workdir):
  with open(os.path.join(workdir, glue.RESULTS_FILE)) as f:
    s = json.load(f)
  return {t: {m: s["tasks"][t][m]["seeds"] for m in glue.OFFICIAL[t]} for t in s["tasks"]}


@pytest.mark.slow
def test_the_suite_resumes_after_kill_9_with_the_same_numbers(tmp_path):
  glue_dir = write_glue_fixture(tmp_path / "glue")
  data_dir = str(tmp_path / "tfds")
  whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
  done = subprocess.run(_suite_command(glue_dir, whole, data_dir), cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "| RTE | acc |" in done.stdout and "| STS-B | Pearson |" in done.stdout
  for task in ("rte", "stsb"):
    assert os.path.exists(os.path.join(whole, task, "s0", "report.md"))
  with open(os.path.join(whole, glue.RESULTS_FILE)) as f:
    summary = json.load(f)
  assert set(summary["tasks"]["stsb"]) >= {"pearson", "spearman", "mse"}
  # 5 epochs of 48 pairs in packed rows of ~32 examples a step: fewer than the cap of 8.
  assert 1 <= summary["runs"]["rte"]["steps"] <= 8
  assert summary["runs"]["rte"]["train_examples"] == 48
  assert os.path.exists(os.path.join(whole, glue.REPORT_FILE))

  # Kill -9 once STS-B (the second run) has written a checkpoint, then rerun the command.
  proc = subprocess.Popen(_suite_command(glue_dir, killed, data_dir), cwd=ROOT, env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  checkpoints = os.path.join(killed, "stsb", "s0", "checkpoints")
  while proc.poll() is None and not (os.path.isdir(checkpoints) and any(
      name.isdigit() for name in os.listdir(checkpoints))):
    time.sleep(0.05)
  assert proc.poll() is None, "the suite ended before it could be killed"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not os.path.exists(os.path.join(killed, glue.RESULTS_FILE))
  again = subprocess.run(_suite_command(glue_dir, killed, data_dir), cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=900)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "(finished earlier)" in again.stderr  # RTE is not trained again
  assert _official(killed) == _official(whole)
