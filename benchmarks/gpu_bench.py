"""GPU benchmark: BERT-base MLM pretraining step in bf16 (float32 parameters), cuDNN vs XLA attention.

    bash benchmarks/gpu.sh                                   # GPU: results in $OUT
    .venv/bin/python benchmarks/gpu_bench.py --tiny --out /tmp/gpu_out   # CPU smoke test

Stages, each written to `<out>/gpu_bench.json` as soon as it finishes (a run cut short
keeps what it measured), all inside `--budget_s` (later stages are skipped, not started):

  peak        the card's measured bf16 matmul rate: best of 8192^3 `jnp.dot`s (f32 accumulate).
  variants    `steps.pretrain_step` (masking in-graph, AdamW, state donated) on synthetic full-
              length batches: seq 128 x batch 256 with cuDNN attention, the same with XLA
              attention, seq 512 x batch 64 with cuDNN. Prints tokens/s, model TFLOP/s, MFU,
              compile time, XLA's memory analysis and the device's peak bytes in use.
  max_batch   the largest seq-128 batch that compiles within the device memory and runs one
              step: doubling from 512, bounded by `--search_s` (scan_layers=True there, so each
              try compiles one layer; remat off as in the variants).
  checks      cuDNN vs XLA attention give the same encoder outputs within bf16 tolerance; a few
              train steps from the same initialization give the same MLM losses in bf16 and f32.

Dropout: hidden 0.1 as BERT, attention-probability dropout 0.0. bert_jax computes attention
with the explicit einsum softmax whenever attention dropout is active in training (the only
path with dropout), and cuDNN's fused attention in jax.nn.dot_product_attention needs bf16/fp16;
so the benchmark turns attention dropout off to measure the fused path. Note that
`attention_impl="auto"` passes implementation=None, which jax (0.10, 0.11) maps to XLA, so the
cuDNN rows name attention_impl="cudnn" explicitly.

Model FLOPs per step (forward + backward = 3 x forward, 2 FLOPs per multiply-add):
    tokens x [6 * L * (4 H^2 + 2 H F)  +  12 * L * S * H]  +  predictions x 6 * (H^2 + H V)
    = 6 x encoder matmul parameters per token + attention (QK^T, PV) + the MLM head (dense
    transform and tied vocabulary projection) at the masked positions only. Embedding lookups,
    LayerNorm, softmax, GELU and the optimizer are not counted.
MFU = model FLOP/s / the bf16 matmul peak measured here (the spec sheet's dense bf16 figure,
989 TFLOP/s for H100/H200 SXM, is printed alongside).

Imports only jax, flax, optax, chex, numpy and bert_jax's core (the GPU image has no torch,
tensorflow-datasets, grain or ml-collections).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bert_jax import BertConfig, BertForMaskedLM, BertModel, optim, steps  # noqa: E402

CLS_ID, SEP_ID, MASK_ID = 101, 102, 103
SPEC_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}  # dense, SXM

# name -> (seq, batch, attention_impl); --tiny shrinks everything.
VARIANTS = {
    "seq128_cudnn": (128, 256, "cudnn"),
    "seq128_xla": (128, 256, "xla"),
    "seq512_cudnn": (512, 64, "cudnn"),
}
TINY_VARIANTS = {
    "seq128_cudnn": (128, 8, "cudnn"),
    "seq128_xla": (128, 8, "xla"),
    "seq256_cudnn": (256, 4, "cudnn"),
}


class Log:
  """Prints and appends to <out>/gpu_bench.log; keeps the JSON results up to date."""

  def __init__(self, out: str):
    os.makedirs(out, exist_ok=True)
    self.log_path = os.path.join(out, "gpu_bench.log")
    self.json_path = os.path.join(out, "gpu_bench.json")
    self.results: dict = {}
    open(self.log_path, "w", encoding="utf-8").close()

  def __call__(self, msg: str):
    print(msg, flush=True)
    with open(self.log_path, "a", encoding="utf-8") as f:
      f.write(msg + "\n")

  def save(self, key: str, value):
    self.results[key] = value
    with open(self.json_path, "w", encoding="utf-8") as f:
      json.dump(self.results, f, indent=2, default=str)


def base_config(tiny: bool, **overrides) -> BertConfig:
  size = (dict(vocab_size=2048, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=128) if tiny else {})  # BERT-base defaults otherwise
  kw = dict(dtype="bfloat16", param_dtype="float32", hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.0, **size)
  kw.update(overrides)
  return BertConfig(**kw)


def max_predictions(seq: int) -> int:
  return 20 if seq <= 128 else 80  # google-research/bert: 20 at 128, 80 at 512


def step_flops(c: BertConfig, batch: int, seq: int, predictions: float) -> float:
  """Model FLOPs of one train step; see the module docstring."""
  h, f, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
  per_token = 6 * layers * (4 * h * h + 2 * h * f) + 12 * layers * seq * h
  return batch * seq * per_token + predictions * 6 * (h * h + h * c.vocab_size)


def make_batch(batch: int, seq: int, vocab: int, seed: int = 0) -> dict:
  """Synthetic full-length rows: [CLS] ids [SEP], nothing padded."""
  rs = np.random.RandomState(seed)
  ids = rs.randint(1000, vocab, size=(batch, seq)).astype(np.int32)
  ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
  special = np.zeros_like(ids)
  special[:, 0] = special[:, -1] = 1
  b = dict(input_ids=ids, attention_mask=np.ones_like(ids), token_type_ids=np.zeros_like(ids),
           special_tokens_mask=special)
  return {k: jnp.asarray(v) for k, v in b.items()}


def measure_peak(tiny: bool, log: Log) -> float:
  """Best bf16 [n, n] @ [n, n] rate (TFLOP/s) with float32 accumulation."""
  n, reps = (1024, 3) if tiny else (8192, 20)
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
  dot = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
  dot(a, a).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    start = time.perf_counter()
    dot(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  tflops = 2 * n**3 / best / 1e12
  log(f"peak: bf16 {n}^3 jnp.dot best of {reps}: {tflops:.4g} TFLOP/s")
  return tflops


def device_peak_bytes() -> int | None:
  stats = jax.devices()[0].memory_stats()
  return stats.get("peak_bytes_in_use") if stats else None


def device_bytes_limit() -> int | None:
  stats = jax.devices()[0].memory_stats()
  return stats.get("bytes_limit") if stats else None


def memory_analysis(compiled) -> dict:
  try:
    m = compiled.memory_analysis()
    return {k: int(getattr(m, k + "_in_bytes")) for k in ("argument_size", "output_size",
                                                          "alias_size", "temp_size")}
  except Exception:  # not every backend implements it
    return {}


class Trainer:
  """A jitted pretrain_step for one config and shape, with a fresh state on request."""

  def __init__(self, config: BertConfig, seq: int):
    self.config, self.seq = config, seq
    self.model = BertForMaskedLM(config)
    self.tx, schedule = optim.make_optimizer(learning_rate=1e-4, total_steps=10_000,
                                             warmup_steps=100)
    self.masking = steps.MaskingConfig(vocab_size=config.vocab_size, mask_token_id=MASK_ID,
                                       max_predictions=max_predictions(seq))
    self.step = jax.jit(functools.partial(steps.pretrain_step, model=self.model, tx=self.tx,
                                          masking=self.masking, schedule=schedule),
                        donate_argnums=0)

    def init(rng):
      ids = jnp.zeros((1, seq), jnp.int32)
      params = nn.meta.unbox(self.model.init(rng, ids))["params"]
      return steps.create_train_state(params, self.tx)
    self.init = jax.jit(init)
    self.rng = jax.random.key(1)

  def compile(self, state, batch):
    start = time.perf_counter()
    compiled = self.step.lower(state, batch, self.rng).compile()
    return compiled, time.perf_counter() - start


def uses_cudnn_attention(compiled) -> bool:
  text = compiled.as_text()
  return "cudnn$fmha" in text or "__cudnn$fmha" in text


def run_variant(name: str, seq: int, batch: int, impl: str, args, peak: float, log: Log) -> dict:
  platform = jax.devices()[0].platform
  if impl == "cudnn" and platform != "gpu":
    impl = "xla"  # CPU smoke test: cuDNN does not exist here
  config = base_config(args.tiny, attention_impl=impl, remat_policy=args.remat,
                       scan_layers=args.scan)
  trainer = Trainer(config, seq)
  state = trainer.init(jax.random.key(0))
  data = make_batch(batch, seq, config.vocab_size)
  compiled, compile_s = trainer.compile(state, data)
  cudnn = uses_cudnn_attention(compiled)
  for _ in range(args.warmup):
    state, metrics = compiled(state, data, trainer.rng)
  jax.block_until_ready(state)
  start = time.perf_counter()
  for _ in range(args.steps):
    state, metrics = compiled(state, data, trainer.rng)
  jax.block_until_ready((state, metrics))
  seconds = (time.perf_counter() - start) / args.steps
  predictions = float(metrics["mlm_count"])
  flops = step_flops(config, batch, seq, predictions)
  tokens_per_s = batch * seq / seconds
  tflops = flops / seconds / 1e12
  row = dict(seq=seq, batch=batch, attention_impl=impl, cudnn_fmha_in_hlo=cudnn,
             remat_policy=args.remat, scan_layers=args.scan, compile_s=compile_s,
             step_s=seconds, tokens_per_s=tokens_per_s, model_tflops_per_step=flops / 1e12,
             model_tflops_per_s=tflops, mfu_vs_measured_peak=tflops / peak,
             predictions_per_step=predictions,
             mlm_loss=float(metrics["mlm_loss"] / metrics["mlm_count"]),
             memory_analysis=memory_analysis(compiled), device_peak_bytes=device_peak_bytes())
  log(f"{name}: seq {seq} batch {batch} attention {impl} (cuDNN fmha in HLO: {cudnn}); "
      f"compile {compile_s:.1f}s; {1000 * seconds:.1f} ms/step, {tokens_per_s:,.0f} tokens/s, "
      f"{tflops:.4g} model TFLOP/s = {100 * tflops / peak:.1f}% MFU of measured peak; "
      f"memory {row['memory_analysis']}, device peak {row['device_peak_bytes']}")
  del state, compiled
  return row


def max_batch_search(args, deadline: float, log: Log) -> dict:
  """Doubles the seq-128 batch while it compiles within the device memory and runs a step."""
  seq = 128
  config = base_config(args.tiny, attention_impl="cudnn" if jax.devices()[0].platform == "gpu"
                       else "xla", remat_policy=args.remat, scan_layers=True)
  limit = device_bytes_limit() or int(args.cpu_memory_limit_gb * 2**30)
  trainer = Trainer(config, seq)
  batch = args.search_start
  tries, largest = [], None
  while time.perf_counter() < deadline:
    start = time.perf_counter()
    try:
      state = trainer.init(jax.random.key(0))
      data = make_batch(batch, seq, config.vocab_size)
      compiled, _ = trainer.compile(state, data)
      mem = memory_analysis(compiled)
      need = (mem.get("argument_size", 0) + mem.get("output_size", 0)
              - mem.get("alias_size", 0) + mem.get("temp_size", 0))
      if mem and need > limit:
        tries.append(dict(batch=batch, fits=False, bytes_needed=need, bytes_limit=limit))
        break
      state, metrics = compiled(state, data, trainer.rng)
      jax.block_until_ready(metrics)
      tries.append(dict(batch=batch, fits=True, bytes_needed=need, bytes_limit=limit,
                        seconds=time.perf_counter() - start))
      largest = batch
      batch *= 2
    except Exception as e:  # RESOURCE_EXHAUSTED at compile or run time
      tries.append(dict(batch=batch, fits=False, error=str(e).splitlines()[0][:300]))
      break
    finally:
      state = data = compiled = None
  stopped = "budget" if time.perf_counter() >= deadline and (not tries or tries[-1]["fits"]) \
      else "memory"
  log(f"max_batch (seq {seq}, scan_layers=True, remat {args.remat}): largest fitting batch "
      f"{largest} (stopped by {stopped}); tries {tries}")
  return dict(seq=seq, largest_batch=largest, stopped_by=stopped, tries=tries)


def check_attention(args, log: Log) -> dict:
  """cuDNN and XLA attention: same encoder outputs within bf16 tolerance."""
  if jax.devices()[0].platform != "gpu":
    log("check_attention: skipped (no cuDNN on this platform)")
    return {"skipped": "not a GPU"}
  batch, seq = 8, 128
  outs = {}
  for impl in ("cudnn", "xla"):
    config = base_config(args.tiny, attention_impl=impl, scan_layers=True)
    data = make_batch(batch, seq, config.vocab_size, seed=1)
    model = BertModel(config, add_pooling_layer=False)
    if impl == "cudnn":
      params = jax.jit(model.init)(jax.random.key(0), data["input_ids"])
    fwd = jax.jit(lambda p, d: model.apply(p, d["input_ids"], d["attention_mask"],
                                           d["token_type_ids"]).last_hidden_state)
    outs[impl] = np.asarray(fwd(params, data).astype(jnp.float32))
  diff = np.abs(outs["cudnn"] - outs["xla"])
  # Post-LN outputs are O(1); bf16 has 8 mantissa bits (relative step 2^-8 = 0.004).
  tol_mean, tol_max = 1e-2, 1.5e-1
  ok = bool(diff.mean() < tol_mean and diff.max() < tol_max)
  log(f"check_attention: cuDNN vs XLA, bf16 encoder outputs {list(diff.shape)}: mean |diff| "
      f"{diff.mean():.2e} (tol {tol_mean}), max {diff.max():.2e} (tol {tol_max}): "
      f"{'PASS' if ok else 'FAIL'}")
  return dict(mean_abs_diff=float(diff.mean()), max_abs_diff=float(diff.max()),
              tol_mean=tol_mean, tol_max=tol_max, passed=ok)


def check_bf16_losses(args, log: Log) -> dict:
  """A few train steps from the same initialization: bf16 vs f32 MLM losses."""
  batch, seq, n = (8, 64, 5) if args.tiny else (16, 128, 10)
  impl = "cudnn" if jax.devices()[0].platform == "gpu" else "xla"
  losses = {}
  for dtype in ("float32", "bfloat16"):
    # cuDNN fused attention needs bf16/fp16: the float32 run uses XLA attention.
    config = base_config(args.tiny, dtype=dtype, scan_layers=True,
                         attention_impl=impl if dtype == "bfloat16" else "xla")
    trainer = Trainer(config, seq)
    state = trainer.init(jax.random.key(0))
    data = make_batch(batch, seq, config.vocab_size, seed=2)
    history = []
    for _ in range(n):
      state, metrics = trainer.step(state, data, trainer.rng)
      history.append(float(metrics["mlm_loss"] / metrics["mlm_count"]))
    losses[dtype] = history
  diffs = [abs(a - b) for a, b in zip(losses["float32"], losses["bfloat16"])]
  tol = 5e-2  # 0.5% of the initial loss, ln(30522) = 10.3
  ok = max(diffs) < tol
  log(f"check_bf16_losses: {n} steps, batch {batch}x{seq}: f32 "
      f"{[round(x, 4) for x in losses['float32']]}, bf16 "
      f"{[round(x, 4) for x in losses['bfloat16']]}, max |diff| {max(diffs):.4f} (tol {tol}): "
      f"{'PASS' if ok else 'FAIL'}")
  return dict(losses=losses, max_abs_diff=max(diffs), tol=tol, passed=ok)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default=os.environ.get("OUT") or "gpu_out")
  parser.add_argument("--tiny", action="store_true", help="tiny model and batches (CPU test)")
  parser.add_argument("--prng", default="threefry2x32", choices=("threefry2x32", "rbg", "unsafe_rbg"),
                      help="jax_default_prng_impl (dropout and masking randomness)")
  parser.add_argument("--variants", nargs="*", default=None,
                      help="subset of the variants to time (default: all)")
  parser.add_argument("--steps", type=int, default=None, help="timed steps per variant")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--remat", default="none", choices=("none", "full", "dots",
                                                          "dots_no_batch"))
  parser.add_argument("--scan", action="store_true", help="scan_layers=True in the variants")
  parser.add_argument("--budget_s", type=float, default=None,
                      help="stop starting new stages after this (default 330 GPU, 120 tiny)")
  parser.add_argument("--search_s", type=float, default=None,
                      help="time for the max-batch search (default 80 GPU, 10 tiny)")
  parser.add_argument("--search_start", type=int, default=None)
  parser.add_argument("--cpu_memory_limit_gb", type=float, default=2.0,
                      help="memory limit for the search where the device reports none")
  parser.add_argument("--skip", nargs="*", default=(), choices=("max_batch", "checks"))
  args = parser.parse_args(argv)
  jax.config.update("jax_default_prng_impl", args.prng)
  args.steps = args.steps or (3 if args.tiny else 20)
  args.budget_s = args.budget_s or (120.0 if args.tiny else 330.0)
  args.search_s = args.search_s or (10.0 if args.tiny else 80.0)
  args.search_start = args.search_start or (16 if args.tiny else 512)
  started = time.perf_counter()
  deadline = started + args.budget_s

  log = Log(args.out)
  device = jax.devices()[0]
  env = dict(device=str(device), device_kind=device.device_kind, platform=device.platform,
             jax=jax.__version__, python=sys.version.split()[0], argv=sys.argv[1:],
             tiny=args.tiny, remat=args.remat, scan=args.scan)
  log(f"gpu_bench: {env}")
  log.save("env", env)
  peak = measure_peak(args.tiny, log)
  spec = next((v for k, v in SPEC_BF16_TFLOPS.items() if k in device.device_kind), None)
  log.save("peak", {"bf16_matmul_tflops_measured": peak, "bf16_tflops_spec": spec})

  table = TINY_VARIANTS if args.tiny else VARIANTS
  names = args.variants if args.variants is not None else list(table)
  rows = {}
  for name in names:
    if time.perf_counter() > deadline:
      log(f"{name}: skipped (budget of {args.budget_s:.0f}s spent)")
      rows[name] = {"skipped": "budget"}
      continue
    seq, batch, impl = table[name]
    try:
      rows[name] = run_variant(name, seq, batch, impl, args, peak, log)
    except Exception as e:
      log(f"{name}: FAILED {e!r}\n{traceback.format_exc()}")
      rows[name] = {"error": repr(e)[:500]}
    log.save("variants", rows)

  stages = [("max_batch", lambda: max_batch_search(
                args, min(deadline, time.perf_counter() + args.search_s), log)),
            ("check_attention", lambda: check_attention(args, log)),
            ("check_bf16_losses", lambda: check_bf16_losses(args, log))]
  for key, fn in stages:
    if key in args.skip or (key.startswith("check") and "checks" in args.skip):
      continue
    if time.perf_counter() > deadline:
      log(f"{key}: skipped (budget of {args.budget_s:.0f}s spent)")
      log.save(key, {"skipped": "budget"})
      continue
    try:
      log.save(key, fn())
    except Exception as e:
      log(f"{key}: FAILED {e!r}\n{traceback.format_exc()}")
      log.save(key, {"error": repr(e)[:500]})

  summary = {name: {k: row.get(k) for k in ("tokens_per_s", "model_tflops_per_s",
                                             "mfu_vs_measured_peak", "compile_s")}
             for name, row in rows.items()}
  log(f"summary (MFU against the measured bf16 peak {peak:.4g} TFLOP/s"
      + (f", spec {spec:.0f}" if spec else "") + f"): {json.dumps(summary)}")
  log(f"total {time.perf_counter() - started:.0f}s")
  log.save("total_s", time.perf_counter() - started)
  return log.results


if __name__ == "__main__":
  main()
