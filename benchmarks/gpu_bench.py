"""GPU benchmark: BERT-base MLM pretraining step in bf16 (float32 parameters), cuDNN vs XLA
attention.

    bash benchmarks/gpu.sh                                   # GPU: results in $OUT
    .venv/bin/python benchmarks/gpu_bench.py --tiny --out /tmp/gpu_out   # CPU smoke test

Stages, each written to `<out>/gpu_bench.json` as soon as it finishes (a run cut short
keeps what it measured), all inside `--budget_s` (later stages are skipped, not started).
With `--fixed_work` (implied by `--tiny`) there is no wall-clock budget: every stage runs and
the max-batch search makes at most `--search_tries` tries, so what runs never depends on how
busy the machine is (the tests run on a shared CPU):

  peak        the card's measured bf16 matmul rate: best of 8192^3 `jnp.dot`s (f32 accumulate).
  embed_grad  the gradient of each embedding lookup on a [256, 128] batch, old and new ways
              (bfloat16 / float32 gathers, whose gradients are scatter-adds, and the one-hot
              contraction bert_jax now uses for segments): XLA:GPU turns a contended scatter-add
              into a compare-and-swap loop, the suspect for ~200 ms per step in the first run.
  variants    `steps.train_step` of the pretraining task (masking in-graph, AdamW, state
              donated) on synthetic full-length batches, BERT-base: seq 128 x batch 256 with
              cuDNN attention, the same with XLA attention, seq 512 x batch 64 with cuDNN, and
              both lengths at twice the batch (32k and 64k tokens per step). Prints tokens/s,
              model TFLOP/s, MFU, compile time, XLA's memory analysis, the device's peak bytes in
              use, and whether the compiled step holds a cuDNN fMHA call; then traces 3 steps
              of `--profile` (default seq128_cudnn) and prints the device time per model part
              and the 15 largest ops.
  checks      cuDNN attention's encoder outputs are as close to a float32 model's as XLA's bf16
              attention's are (rows padded to different lengths); a few train steps from the
              same initialization give the same MLM losses in bf16 and f32; the in-step
              masking corrupts a batch bit-identically on the GPU and on the host CPU.
  max_batch   the largest seq-128 batch that compiles within the device memory and runs one
              step: doubling from 512 while budget is left (scan_layers=True there, so each try
              compiles one layer; remat as in the variants). With all the above it usually has
              no budget left; run it alone with `--variants --skip checks` (~1 min).

cuDNN and the mask: bert_jax passes its right-padded key mask to cuDNN as
`key_value_seq_lengths` (no bias tensor, no bias gradient); a [batch, 1, 1, keys] mask as a
bias was rejected by jax 0.10.2 ("Bias must have same seq length as QKV, got 1 and 128").

Dropout: hidden 0.1 as BERT, attention-probability dropout 0.0. bert_jax computes attention
with the explicit einsum softmax whenever attention dropout is active in training (the only
path with dropout), and cuDNN's fused attention in jax.nn.dot_product_attention needs bf16/fp16;
so the benchmark turns attention dropout off to measure the fused path (what
`attention_impl="auto"` picks on a GPU with bf16 compute).

Model FLOPs per step (forward + backward = 3 x forward, 2 FLOPs per multiply-add):
    tokens x [6 * L * (4 H^2 + 2 H F)  +  12 * L * S * H]  +  predictions x 6 * (H^2 + H V)
    = 6 x encoder matmul parameters per token + attention (QK^T, PV) + the MLM head (dense
    transform and tied vocabulary projection) at the masked positions only. Embedding lookups,
    LayerNorm, softmax, GELU and the optimizer are not counted.
MFU = model FLOP/s / the bf16 matmul peak measured here (the spec sheet's dense bf16 figure,
989 TFLOP/s for H100/H200 SXM, is printed alongside).

Imports only jax, flax, optax, chex, numpy, bert_jax's core and the sibling
benchmarks/mlm_step.py (the synthetic batch, the FLOP count, the matmul peak; numpy only at
import): the GPU image has no torch, tensorflow-datasets, grain or ml-collections.
"""

from __future__ import annotations

import argparse
import collections
import functools
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time
import traceback

import flax.linen as nn
import jax
import jax.numpy as jnp
import mlm_step  # a sibling script (benchmarks/ is sys.path[0])
import numpy as np

from bert_jax import BertConfig, BertForMaskedLM, BertModel, ops, optim, steps
from bert_jax.tasks import pretraining

SPEC_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}  # dense, SXM

# name -> (seq, batch, attention_impl[, PRNG impl of the step key]); --tiny shrinks them.
VARIANTS = {
    "seq128_cudnn": (128, 256, "cudnn"),
    "seq128_xla": (128, 256, "xla"),
    "seq512_cudnn": (512, 64, "cudnn"),
    "seq128_cudnn_b512": (128, 512, "cudnn"),
    "seq512_cudnn_b128": (512, 128, "cudnn"),
    "seq128_cudnn_rbg": (128, 256, "cudnn", "rbg"),  # dropout bits from Philox, not threefry
}
TINY_VARIANTS = {
    "seq128_cudnn": (128, 8, "cudnn"),
    "seq128_xla": (128, 8, "xla"),
    "seq256_cudnn": (256, 4, "cudnn"),
    "seq128_cudnn_rbg": (128, 8, "cudnn", "rbg"),
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
  return ops.resolve(BertConfig(**kw))  # kernels for this backend, chosen once


def max_predictions(seq: int) -> int:
  return 20 if seq <= 128 else 80  # google-research/bert: 20 at 128, 80 at 512


def device_batch(batch: int, seq: int, vocab: int, seed: int = 0, padded: bool = False) -> dict:
  """mlm_step.make_batch's synthetic rows (full length, or right-padded), on the device."""
  rows = mlm_step.make_batch(batch, seq, vocab, seed=seed, padded=padded)
  return {k: jnp.asarray(v) for k, v in rows.items()}


def measure_peak(tiny: bool, log: Log) -> float:
  """Best bf16 [n, n] @ [n, n] rate (TFLOP/s) with float32 accumulation."""
  n, reps = (1024, 3) if tiny else (8192, 20)
  tflops = mlm_step.best_dot_flops(n, "bfloat16", reps) / 1e12
  log(f"peak: bf16 {n}^3 jnp.dot best of {reps}: {tflops:.4g} TFLOP/s")
  return tflops


def time_ms(fn, *args, reps: int = 10) -> float:
  """Median wall time of a jitted call, after one warm-up call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1000 * float(np.median(times))


def embed_grad_bench(args, log: Log) -> dict:
  """ms for the table gradient of each way to look up embeddings, BERT-like ids.

  Words: Zipf-distributed ids plus [CLS]/[SEP] in every row (hot rows, as real text has);
  segments: all 0 (single-segment batches), so every token adds into the same row.
  """
  batch, seq, hidden, vocab = (8, 128, 64, 2048) if args.tiny else (256, 128, 768, 30522)
  rs = np.random.RandomState(0)
  ids = (rs.zipf(1.3, size=(batch, seq)) % vocab).astype(np.int32)
  ids[:, 0], ids[:, -1] = mlm_step.CLS_ID % vocab, mlm_step.SEP_ID % vocab
  ids, segments = jnp.asarray(ids), jnp.zeros((batch, seq), jnp.int32)
  key_w, key_s, key_g = jax.random.split(jax.random.key(0), 3)
  words = jax.random.normal(key_w, (vocab, hidden), jnp.float32)
  segment_table = jax.random.normal(key_s, (2, hidden), jnp.float32)
  cot = jax.random.normal(key_g, (batch, seq, hidden), jnp.bfloat16)
  bf16 = jnp.bfloat16
  cases = {  # name -> (table, lookup); "before" is bert_jax until 2026-11-26, "now" after
      "segments: bf16 take (before)": (segment_table,
                                       lambda t: jnp.take(t.astype(bf16), segments, axis=0)),
      "segments: f32 take": (segment_table, lambda t: jnp.take(t, segments, axis=0).astype(bf16)),
      "segments: one-hot (now)": (segment_table,
                                  lambda t: ops.one_hot_lookup(t, segments).astype(bf16)),
      "words: bf16 take (before)": (words, lambda t: jnp.take(t.astype(bf16), ids, axis=0)),
      "words: f32 take (now)": (words, lambda t: jnp.take(t, ids, axis=0).astype(bf16)),
  }
  out = {}
  for name, (table, lookup) in cases.items():
    grad = jax.jit(lambda t, g, f=lookup: jax.vjp(f, t)[1](g)[0])
    out[name] = time_ms(grad, table, cot)
  log(f"embed_grad ({batch}x{seq} tokens, hidden {hidden}, ms for the table gradient): "
      + ", ".join(f"{k} {v:.3f}" for k, v in out.items()))
  return dict(batch=batch, seq=seq, hidden=hidden, ms=out)


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
  """A jitted pretraining train_step for one config and shape, with a fresh state on request."""

  def __init__(self, config: BertConfig, seq: int, prng: str | None = None):
    self.config, self.seq = config, seq
    self.model = BertForMaskedLM(config)
    self.tx, schedule = optim.make_optimizer(learning_rate=1e-4, total_steps=10_000,
                                             warmup_steps=100)
    self.masking = pretraining.MaskingConfig(vocab_size=config.vocab_size,
                                             mask_token_id=mlm_step.MASK_ID,
                                             max_predictions=max_predictions(seq))
    self.step = jax.jit(functools.partial(steps.train_step, model=self.model, tx=self.tx,
                                          task=pretraining.Pretraining(self.masking),
                                          schedule=schedule),
                        donate_argnums=0)

    def init(rng):
      ids = jnp.zeros((1, seq), jnp.int32)
      params = nn.meta.unbox(self.model.init(rng, ids))["params"]
      return steps.create_train_state(params, self.tx)
    self.init = jax.jit(init)
    self.rng = jax.random.key(1, impl=prng)  # every key the step derives inherits the impl

  def compile(self, state, batch):
    start = time.perf_counter()
    compiled = self.step.lower(state, batch, self.rng).compile()
    return compiled, time.perf_counter() - start


def uses_cudnn_attention(compiled) -> bool:
  text = compiled.as_text()
  return "cudnn$fmha" in text or "__cudnn$fmha" in text


def gpu_or_xla(impl: str) -> str:
  return impl if jax.devices()[0].platform == "gpu" else "xla"  # CPU smoke test: no cuDNN


# (label, test on an op's op_name metadata), first match wins.
_CATEGORIES = (
    ("masking", lambda op: "jvp" not in op and "vmap(" in op),
    ("dropout RNG", lambda op: any(k in op for k in ("bernoulli", "random_bits", "threefry",
                                                     "rng_bit_generator"))),
    ("MLM head", lambda op: "mlm_head" in op or "tied_decoder" in op),
    ("loss + accuracy", lambda op: "jvp()" in op),
    ("embeddings", lambda op: "embeddings" in op),
    ("encoder attention", lambda op: "/attention/" in op),
    ("encoder rest", lambda op: "encoder" in op),
    ("optimizer, norms, other", lambda op: True),
)


def profile_steps(compiled, state, data, rng, steps: int = 3):
  """Traces `steps` steps; device (else host) op time per step, by model part and by op."""
  ops = {m.group(1): m.group(2) for m in re.finditer(
      r'^\s*(?:ROOT )?%([\w.\-]+) = .*?op_name="([^"]*)"', compiled.as_text(), re.M)}
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    for _ in range(steps):
      state, metrics = compiled(state, data, rng)
    jax.block_until_ready((state, metrics))
    jax.profiler.stop_trace()
    path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))[-1]
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  processes = {e["pid"]: e.get("args", {}).get("name", "") for e in events
               if e.get("ph") == "M" and e.get("name") == "process_name"}
  devices = {pid for pid, n in processes.items() if "GPU" in n or "gpu" in n}
  per_op: collections.Counter = collections.Counter()
  for e in events:
    if e.get("ph") != "X":
      continue
    if devices:  # kernels on the GPU's streams, keyed by the HLO op that launched them
      if e.get("pid") not in devices:
        continue
      key = (e.get("args") or {}).get("hlo_op") or e["name"]
    else:  # CPU: thunk events (call/while thunks wrap others)
      key = e["name"]
      if key not in ops or key.startswith(("call", "while")):
        continue
    per_op[key] += e["dur"] / 1e3 / steps
  per_part: collections.Counter = collections.Counter()
  for key, ms in per_op.items():
    op = ops.get(key)
    per_part[next(label for label, test in _CATEGORIES if test(op)) if op else "unmapped"] += ms
  top = [(key, round(ms, 3), (ops.get(key) or "")[-120:]) for key, ms in per_op.most_common(25)]
  return state, dict(ms_per_step=round(sum(per_op.values()), 3), source="device" if devices
                     else "host thunks", processes=sorted(set(processes.values()))[:20],
                     by_part={k: round(v, 3) for k, v in per_part.most_common()}, top_ops=top)


def run_variant(name: str, seq: int, batch: int, impl: str, prng: str | None, args, peak: float,
                log: Log) -> dict:
  impl = gpu_or_xla(impl)
  config = base_config(args.tiny, attention_impl=impl, remat_policy=args.remat,
                       scan_layers=args.scan)
  trainer = Trainer(config, seq, prng)
  data = device_batch(batch, seq, config.vocab_size)
  state = trainer.init(jax.random.key(0))
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
  flops = mlm_step.step_flops(config.hidden_size, config.num_hidden_layers,
                              config.intermediate_size, config.vocab_size, batch, seq,
                              predictions)  # see the module docstring
  tokens_per_s = batch * seq / seconds
  tflops = flops / seconds / 1e12
  row = dict(seq=seq, batch=batch, attention_impl=impl, prng=prng or args.prng,
             cudnn_fmha_in_hlo=cudnn, remat_policy=args.remat, scan_layers=args.scan,
             compile_s=compile_s,
             step_s=seconds, tokens_per_s=tokens_per_s, model_tflops_per_step=flops / 1e12,
             model_tflops_per_s=tflops, mfu_vs_measured_peak=tflops / peak,
             predictions_per_step=predictions,
             mlm_loss=float(metrics["mlm_loss_sum"] / metrics["mlm_count"]),
             memory_analysis=memory_analysis(compiled), device_peak_bytes=device_peak_bytes())
  log(f"{name}: seq {seq} batch {batch} attention {impl} (cuDNN fMHA in HLO: {cudnn}); "
      f"compile {compile_s:.1f}s; {1000 * seconds:.1f} ms/step, {tokens_per_s:,.0f} tokens/s, "
      f"{tflops:.4g} model TFLOP/s = {100 * tflops / peak:.1f}% MFU of measured peak; "
      f"memory {row['memory_analysis']}, device peak {row['device_peak_bytes']}")
  if name == args.profile:
    try:
      state, row["profile"] = profile_steps(compiled, state, data, trainer.rng)
      prof = row["profile"]
      log(f"{name} profile ({prof['source']}, {prof['ms_per_step']:.1f} ms/step of "
          f"{1000 * seconds:.1f}): {prof['by_part']}")
      for key, ms, op in prof["top_ops"][:15]:
        log(f"    {ms:8.2f} ms  {key[:40]:40s} {op[-90:]}")
    except Exception as e:  # profiling is a diagnostic: never lose the timings to it
      row["profile"] = {"error": repr(e)[:300]}
      log(f"{name} profile: FAILED {e!r}")
  del state, compiled
  return row


def max_batch_search(args, deadline: float, log: Log, max_tries: int | None = None) -> dict:
  """Doubles the seq-128 batch while it compiles within the device memory and runs a step:
  until `deadline`, or for at most `max_tries` tries when that is given (no deadline)."""
  seq = 128
  config = base_config(args.tiny, attention_impl=gpu_or_xla("cudnn"), remat_policy=args.remat,
                       scan_layers=True)
  limit = device_bytes_limit() or int(args.cpu_memory_limit_gb * 2**30)
  trainer = Trainer(config, seq)
  batch = args.search_start
  tries, largest = [], None
  def more():
    if max_tries is not None:
      return len(tries) < max_tries
    return time.perf_counter() < deadline
  while more():
    start = time.perf_counter()
    try:
      data = device_batch(batch, seq, config.vocab_size)
      state = trainer.init(jax.random.key(0))
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
  if tries and not tries[-1]["fits"]:
    stopped = "memory"
  else:
    stopped = "tries" if max_tries is not None else "budget"
  log(f"max_batch (seq {seq}, scan_layers=True, remat {args.remat}): largest fitting batch "
      f"{largest} (stopped by {stopped}); tries {tries}")
  return dict(seq=seq, largest_batch=largest, stopped_by=stopped, tries=tries)


def check_attention(args, log: Log) -> dict:
  """cuDNN attention (mask as key lengths) is as close to a float32 model as XLA's bf16 is.

  Same parameters, rows right-padded to different lengths; the reference is the float32-
  compute model with XLA attention. PASS: cuDNN's mean |error| is at most 1.5x XLA-bf16's + 1e-3
  (both are bf16 rounding; a wrong mask or layout would be orders of magnitude larger).
  """
  if jax.devices()[0].platform != "gpu":
    log("check_attention: skipped (no cuDNN on this platform)")
    return {"skipped": "not a GPU"}
  batch, seq = 8, 128
  outs, params = {}, None
  for name, impl, dtype in (("xla_f32", "xla", "float32"), ("xla_bf16", "xla", "bfloat16"),
                            ("cudnn_bf16", "cudnn", "bfloat16")):
    config = base_config(args.tiny, attention_impl=impl, dtype=dtype, scan_layers=True)
    data = device_batch(batch, seq, config.vocab_size, seed=1, padded=True)
    model = BertModel(config, add_pooling_layer=False)
    if params is None:  # float32 parameters, shared by all three
      params = jax.jit(model.init)(jax.random.key(0), data["input_ids"])
    fwd = jax.jit(functools.partial(
        lambda m, p, d: m.apply(p, d["input_ids"], d["attention_mask"],
                                d["token_type_ids"]).last_hidden_state, model))
    outs[name] = np.asarray(fwd(params, data).astype(jnp.float32))
  ref = outs["xla_f32"]
  err = {k: float(np.abs(outs[k] - ref).mean()) for k in ("xla_bf16", "cudnn_bf16")}
  direct = np.abs(outs["cudnn_bf16"] - outs["xla_bf16"])
  ok = err["cudnn_bf16"] <= 1.5 * err["xla_bf16"] + 1e-3
  log(f"check_attention: encoder outputs {list(direct.shape)}, rows padded to {seq // 2}-{seq}; "
      f"mean |error| vs float32: XLA bf16 {err['xla_bf16']:.2e}, cuDNN bf16 "
      f"{err['cudnn_bf16']:.2e} (pass if <= 1.5x + 1e-3); cuDNN vs XLA bf16 directly: mean "
      f"{direct.mean():.2e}, max {direct.max():.2e}: {'PASS' if ok else 'FAIL'}")
  return dict(mean_abs_error_vs_f32=err, direct_mean_abs_diff=float(direct.mean()),
              direct_max_abs_diff=float(direct.max()), passed=bool(ok))


def check_masking(args, log: Log) -> dict:
  """The in-step masking gives bit-identical corruption on the accelerator and on the CPU."""
  vocab = base_config(args.tiny).vocab_size
  data = device_batch(16 if args.tiny else 256, 128, vocab, seed=3, padded=True)
  masking = pretraining.MaskingConfig(vocab_size=vocab, mask_token_id=mlm_step.MASK_ID,
                                      max_predictions=20)
  fields = ("input_ids", "masked_positions", "masked_labels", "masked_weights")
  outs = {}
  for name, device in (("accelerator", jax.devices()[0]), ("cpu", jax.devices("cpu")[0])):
    batch = jax.device_put(data, device)
    key = jax.device_put(jax.random.key(7), device)
    masked = jax.jit(functools.partial(pretraining.apply_masking, masking=masking))(key, batch)
    outs[name] = {k: np.asarray(getattr(masked, k)) for k in fields}
  equal = {k: bool(np.array_equal(outs["accelerator"][k], outs["cpu"][k])) for k in fields}
  ok = all(equal.values())
  log(f"check_masking: {jax.devices()[0].platform} vs cpu, {len(data['input_ids'])} padded rows, "
      f"{int(outs['cpu']['masked_weights'].sum())} predictions; identical {equal}: "
      f"{'PASS' if ok else 'FAIL'}")
  return dict(identical=equal, passed=ok)


def check_bf16_losses(args, log: Log) -> dict:
  """A few train steps from the same initialization: bf16 vs f32 MLM losses."""
  batch, seq, n = (8, 64, 5) if args.tiny else (16, 128, 10)
  impl = gpu_or_xla("cudnn")
  losses = {}
  for dtype in ("float32", "bfloat16"):
    # cuDNN fused attention needs bf16/fp16: the float32 run uses XLA attention.
    config = base_config(args.tiny, dtype=dtype, scan_layers=True,
                         attention_impl=impl if dtype == "bfloat16" else "xla")
    trainer = Trainer(config, seq)
    state = trainer.init(jax.random.key(0))
    data = device_batch(batch, seq, config.vocab_size, seed=2)
    history = []
    for _ in range(n):
      state, metrics = trainer.step(state, data, trainer.rng)
      history.append(float(metrics["mlm_loss_sum"] / metrics["mlm_count"]))
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
  parser.add_argument("--prng", default="threefry2x32",
                      choices=("threefry2x32", "rbg", "unsafe_rbg"),
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
  parser.add_argument("--fixed_work", action="store_true",
                      help="no wall-clock budget: run every stage, search --search_tries "
                           "batches (implied by --tiny)")
  parser.add_argument("--search_tries", type=int, default=2,
                      help="max-batch tries with --fixed_work")
  parser.add_argument("--cpu_memory_limit_gb", type=float, default=2.0,
                      help="memory limit for the search where the device reports none")
  parser.add_argument("--skip", nargs="*", default=(),
                      choices=("embed_grad", "max_batch", "checks"))
  parser.add_argument("--profile", default="seq128_cudnn",
                      help="trace 3 steps of this variant after timing it ('' for none)")
  args = parser.parse_args(argv)
  from bert_jax import xla_flags  # before the first backend use, as bert_jax.main does
  native_atomics = xla_flags.use_native_gpu_atomics()
  jax.config.update("jax_default_prng_impl", args.prng)
  args.steps = args.steps or (3 if args.tiny else 20)
  args.budget_s = args.budget_s or (120.0 if args.tiny else 330.0)
  args.search_s = args.search_s or (10.0 if args.tiny else 80.0)
  args.search_start = args.search_start or (16 if args.tiny else 512)
  args.fixed_work = args.fixed_work or args.tiny
  started = time.perf_counter()
  deadline = float("inf") if args.fixed_work else started + args.budget_s

  log = Log(args.out)
  device = jax.devices()[0]
  env = dict(device=str(device), device_kind=device.device_kind, platform=device.platform,
             jax=jax.__version__, python=sys.version.split()[0], argv=sys.argv[1:],
             tiny=args.tiny, fixed_work=args.fixed_work, remat=args.remat, scan=args.scan,
             xla_flags=os.environ.get("XLA_FLAGS", ""), ftz_atomics_added=native_atomics)
  log(f"gpu_bench: {env}")
  log.save("env", env)
  peak = measure_peak(args.tiny, log)
  spec = next((v for k, v in SPEC_BF16_TFLOPS.items() if k in device.device_kind), None)
  log.save("peak", {"bf16_matmul_tflops_measured": peak, "bf16_tflops_spec": spec})

  if "embed_grad" not in args.skip:
    try:
      log.save("embed_grad", embed_grad_bench(args, log))
    except Exception as e:
      log(f"embed_grad: FAILED {e!r}")
      log.save("embed_grad", {"error": repr(e)[:500]})

  table = TINY_VARIANTS if args.tiny else VARIANTS
  names = args.variants if args.variants is not None else list(table)
  rows = {}
  for name in names:
    if time.perf_counter() > deadline:
      log(f"{name}: skipped (budget of {args.budget_s:.0f}s spent)")
      rows[name] = {"skipped": "budget"}
      continue
    seq, batch, impl, *prng = table[name]
    try:
      rows[name] = run_variant(name, seq, batch, impl, prng[0] if prng else None, args, peak, log)
    except Exception as e:
      log(f"{name}: FAILED {e!r}\n{traceback.format_exc()}")
      rows[name] = {"error": repr(e)[:500]}
    log.save("variants", rows)

  # Checks before the search: the search then takes whatever budget is left (<= --search_s).
  stages = [("check_attention", lambda: check_attention(args, log)),
            ("check_bf16_losses", lambda: check_bf16_losses(args, log)),
            ("check_masking", lambda: check_masking(args, log)),
            ("max_batch", lambda: max_batch_search(  # no try started in the last 30 s
                args, min(deadline - 30, time.perf_counter() + args.search_s), log,
                max_tries=args.search_tries if args.fixed_work else None))]
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
