"""The benchmark scripts: their FLOP formulas against the real parameter tree, and end-to-end
runs of benchmarks/gpu_bench.py --tiny and benchmarks/mlm_step.py on CPU in a subprocess."""

import importlib.util
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import BertConfig, BertForMaskedLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks",
                                                                   name + ".py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _matmul_weights(config: BertConfig) -> tuple[int, int]:
  """(encoder kernel entries, MLM-head matmul entries) counted on BertForMaskedLM's params."""
  ids = jnp.zeros((1, 8), jnp.int32)
  params = nn.meta.unbox(jax.eval_shape(BertForMaskedLM(config).init, jax.random.key(0),
                                        ids))["params"]
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  encoder = sum(x.size for path, x in flat
                if "encoder" in jax.tree_util.keystr(path) and path[-1].key == "kernel")
  head = params["mlm_head"]["transform"]["kernel"].size
  head += params["bert"]["embeddings"]["word_embeddings"]["embedding"].size  # tied decoder
  return encoder, head


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_mlm_step_flops_match_the_parameter_tree(size):
  mlm_step = _load("mlm_step")
  c = mlm_step.CONFIGS[size]
  encoder, head = _matmul_weights(BertConfig(vocab_size=mlm_step.VOCAB, **c))
  tokens = mlm_step.BATCH * mlm_step.SEQ
  attention = 12 * c["num_hidden_layers"] * mlm_step.SEQ * c["hidden_size"]
  expected = tokens * (6 * encoder + attention) + mlm_step.BATCH * mlm_step.PREDICTIONS * 6 * head
  got = mlm_step.step_flops(c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"])
  assert got == expected


def test_gpu_bench_flops_match_the_parameter_tree():
  gpu_bench = _load("gpu_bench")
  config = gpu_bench.base_config(tiny=False)  # BERT-base
  encoder, head = _matmul_weights(config)
  assert encoder == 84_934_656  # 12 x (4 x 768^2 + 2 x 768 x 3072)
  batch, seq, predictions = 256, 128, 256 * 19.0
  expected = (batch * seq * (6 * encoder + 12 * 12 * seq * 768) + predictions * 6 * head)
  assert gpu_bench.step_flops(config, batch, seq, predictions) == pytest.approx(expected)


def _run(args, timeout):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc.stdout


def test_gpu_bench_tiny_one_variant(tmp_path):
  _run(["benchmarks/gpu_bench.py", "--tiny", "--out", str(tmp_path), "--variants",
        "seq128_xla", "--steps", "2", "--warmup", "1", "--skip", "max_batch", "checks"],
       timeout=300)
  results = json.loads((tmp_path / "gpu_bench.json").read_text())
  row = results["variants"]["seq128_xla"]
  assert row["tokens_per_s"] > 0 and 0 < row["mfu_vs_measured_peak"], row
  assert row["memory_analysis"]["temp_size"] > 0
  assert results["peak"]["bf16_matmul_tflops_measured"] > 0


def test_gpu_bench_tiny_does_fixed_work_whatever_the_clock(tmp_path):
  """--tiny runs every stage with fixed work: a wall-clock budget already spent skips nothing
  (issue 13: the max-batch stage was skipped on a busy machine, KeyError 'largest_batch')."""
  _run(["benchmarks/gpu_bench.py", "--tiny", "--out", str(tmp_path), "--variants",
        "--skip", "embed_grad", "checks", "--budget_s", "0.001", "--search_s", "0.001",
        "--search_tries", "1"], timeout=300)
  results = json.loads((tmp_path / "gpu_bench.json").read_text())
  search = results["max_batch"]
  assert [t["batch"] for t in search["tries"]] == [16], search
  assert search["largest_batch"] == 16 and search["stopped_by"] == "tries"
  assert results["env"]["fixed_work"] is True


@pytest.mark.slow
def test_gpu_bench_tiny_all_stages(tmp_path):
  out = _run(["benchmarks/gpu_bench.py", "--tiny", "--out", str(tmp_path), "--steps", "2",
              "--warmup", "1"], timeout=600)
  results = json.loads((tmp_path / "gpu_bench.json").read_text())
  assert (tmp_path / "gpu_bench.log").read_text().strip().splitlines()[-1].startswith("total")
  for name, row in results["variants"].items():
    assert row["tokens_per_s"] > 0 and row["mfu_vs_measured_peak"] > 0, (name, row)
    assert not row["cudnn_fmha_in_hlo"]  # CPU: the cuDNN rows fall back to XLA
  assert results["max_batch"]["largest_batch"] >= 16
  assert results["max_batch"]["stopped_by"] in ("tries", "memory")
  assert results["check_attention"] == {"skipped": "not a GPU"}
  assert results["check_bf16_losses"]["passed"], results["check_bf16_losses"]
  assert results["check_masking"]["passed"], results["check_masking"]
  assert len(results["embed_grad"]["ms"]) == 5
  assert all(ms > 0 for ms in results["embed_grad"]["ms"].values())
  assert "summary" in out


@pytest.mark.slow
def test_mlm_step_runs_all_three(tmp_path):
  path = tmp_path / "mlm.json"
  out = _run(["benchmarks/mlm_step.py", "--config", "tiny", "--steps", "1", "--repeats", "1",
              "--json", str(path)], timeout=600)
  results = json.loads(path.read_text())
  assert set(results["tokens_per_sec"]) == {"bert_jax", "transformers", "torch_gathered"}
  assert all(v > 0 for v in results["tokens_per_sec"].values())
  assert set(results["ratios"]) == {"bert_jax/transformers", "bert_jax/torch_gathered"}
  assert results["config"]["hidden_size"] == 128 and results["compile_s"] > 0
  assert "median per-round ratios" in out


def test_mlm_profile_accounts_for_the_step():
  out = _run(["benchmarks/mlm_profile.py", "--config", "tiny", "--steps", "1", "--top", "3",
              "--threads", "1"], timeout=300)
  lines = out.splitlines()
  assert any("MLM head" in line for line in lines), out
  assert any(line.startswith("largest 3 ops") for line in lines), out
  parts = [float(line.split()[0]) for line in lines if line.startswith("  ") and " ms  " in line]
  assert len(parts) >= 6 and sum(parts) > 0, out


def test_mask_as_key_lengths_is_the_same_attention():
  """gpu_bench's cuDNN fix: a right-padded key mask == key_value_seq_lengths (XLA path here)."""
  rs = np.random.RandomState(0)
  q, k, v = (jnp.asarray(rs.randn(3, 16, 2, 8), jnp.float32) for _ in range(3))
  lengths = np.array([16, 9, 4], np.int32)
  mask = jnp.asarray(np.arange(16)[None] < lengths[:, None])  # [batch, keys]
  by_mask = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :],
                                         implementation="xla")
  by_lengths = jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=jnp.asarray(lengths),
                                            implementation="xla")
  np.testing.assert_allclose(by_mask, by_lengths, rtol=1e-6, atol=1e-6)
