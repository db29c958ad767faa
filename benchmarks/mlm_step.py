"""MLM train step on CPU: bert_jax vs transformers' PyTorch BertForMaskedLM vs gathered PyTorch.

    .venv/bin/python benchmarks/mlm_step.py --config tiny|small [--steps 5] [--repeats 5]
        [--threads N] [--malloc default|retain] [--prng threefry|rbg|unsafe_rbg] [--json PATH]
        [--family bert|modernbert]

One process, one config, one batch ([32, 128], every position attended), 20 masked
predictions per row, dropout 0.1 (hidden and attention) everywhere, AdamW with clipping at 1.0:

  bert_jax        `steps.train_step` (pretraining task) under `jax.jit`, masking in-graph,
                  state donated.
  transformers    `BertForMaskedLM(..., labels=...)` as its users run it: logits at every
                  position, labels -100 except at the masked positions; torch.optim.AdamW.
  torch_gathered  the best PyTorch peer we know: `model.bert`, gather the hidden states at the
                  masked positions, then `model.cls` on [batch, 20, hidden] only.

The PyTorch contestants get the corruption `mask_tokens` makes with a fixed key (same
positions, same count); bert_jax masks inside its step, so its positions change per step but
their count (20 per row) does not. The contestants alternate (`--repeats` rounds of `--steps`
steps each, round 0 discarded as warm-up); tokens/s are medians over rounds and the ratios are
medians of per-round ratios. torch runs on as many threads as XLA's CPU client: every core the
process may use (`--threads N` pins it to N cores first, which both libraries then see).

Under load from other processes, multi-threaded torch (OpenMP barriers) suffers far more than
XLA; `--threads 1` is the contention-robust comparison, and there tokens per CPU-second (also
printed) equal tokens per second of an unloaded core. `--malloc retain` keeps freed memory in
glibc's heap for all three (see `bert_jax/malloc.py`).

`--family modernbert`: the same sizes ModernBERT-shaped on both sides (pre-norm, GeGLU with
`intermediate_size` per half, rotary, no biases, a final norm, layer i global when i % 3 == 0
and a 64-key window otherwise, dropout 0.1 on embeddings, attention and MLP): bert_jax's
family="modernbert" config against transformers' ModernBertForMaskedLM (its default
attention, sdpa), full logits for "transformers" and its own `sparse_prediction=True` (logits
at the labelled positions only) for "torch_gathered". No token types on the torch side. The
FLOP count takes the gated feed-forward's third matrix and, as for BERT, full attention (both
sides compute the windowed layers as masked full attention).

Also reported: model GFLOP/s (`step_flops`) against a float32 `jnp.dot` peak measured in the
same run, minor page faults per step, the first step's compile time, XLA's memory analysis of
the compiled step and the process's peak RSS. Figures: benchmarks/RESULTS.md.

The other benchmarks import their shared parts from here (`import mlm_step`: a script's own
folder is sys.path[0]): `make_batch`, `step_flops`, `best_dot_flops`, `num_threads`,
`pin_threads_and_malloc` and the token ids. Importing it needs numpy only.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import time

import numpy as np

CONFIGS = {
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=512),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                  intermediate_size=1024),
}
VOCAB, BATCH, SEQ, PREDICTIONS = 30522, 32, 128, 20
CLS_ID, SEP_ID, MASK_ID = 101, 102, 103
# 126 eligible tokens per row (all but [CLS] and [SEP]): round(126 * 0.16) = 20 predictions.
MASK_PROB = 0.16
DROPOUT = 0.1
LEARNING_RATE, WEIGHT_DECAY, EPS, CLIP = 1e-4, 0.01, 1e-6, 1.0
CONTESTANTS = ("bert_jax", "transformers", "torch_gathered")
# --family modernbert: ModernBERT's attention pattern at this benchmark's length (both sides).
MODERNBERT = dict(local_attention=64, global_attn_every_n_layers=3)


def num_threads() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def pin_threads_and_malloc(threads: int, malloc: str):
  """Before jax starts: pin the process to its first `threads` cores (0: all it may use; XLA
  sizes its CPU thread pool from the affinity mask); `malloc == "retain"` keeps freed memory
  in glibc's heap (bert_jax/malloc.py), before XLA's threads allocate."""
  if threads:
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
  if malloc == "retain":
    from bert_jax import malloc as glibc
    if not glibc.retain_freed_memory():
      raise RuntimeError("--malloc retain needs glibc")


def make_batch(batch: int = BATCH, seq: int = SEQ, vocab: int = VOCAB, seed: int = 0,
               padded: bool = False) -> dict[str, np.ndarray]:
  """Synthetic rows [CLS] ids [SEP] of random word-piece ids: full length, or right-padded to
  lengths in [seq/2, seq]. The defaults: this benchmark's batch, no padding."""
  rs = np.random.RandomState(seed)
  ids = rs.randint(1000, vocab, size=(batch, seq)).astype(np.int32)
  lengths = rs.randint(seq // 2, seq + 1, size=batch) if padded else np.full(batch, seq)
  mask = (np.arange(seq)[None] < lengths[:, None]).astype(np.int32)
  ids[:, 0], ids[np.arange(batch), lengths - 1] = CLS_ID, SEP_ID
  ids *= mask
  special = ((ids == CLS_ID) | (ids == SEP_ID) | (mask == 0)).astype(np.int32)
  return dict(input_ids=ids, attention_mask=mask, token_type_ids=np.zeros_like(ids),
              special_tokens_mask=special)


def step_flops(h: int, layers: int, ffn: int, vocab: int = VOCAB, batch: int = BATCH,
               seq: int = SEQ, predictions: float = BATCH * PREDICTIONS) -> float:
  """Model FLOPs of one train step (forward + backward = 3 x forward, 2 FLOPs per MAC).

  6 x matmul parameters per token (4h^2 + 2h*ffn per layer; embedding lookups are no matmuls)
  + attention 12 * layers * seq * h per token (QK^T and PV, forward and backward)
  + the MLM head at the masked positions only: 6 x (h^2 + h * vocab) per prediction
  (`predictions` in the whole batch). The defaults: this benchmark's batch.
  """
  per_token = 6 * layers * (4 * h * h + 2 * h * ffn) + 12 * layers * seq * h
  return batch * seq * per_token + predictions * 6 * (h * h + h * vocab)


def best_dot_flops(n: int = 2048, dtype: str = "float32", reps: int = 5) -> float:
  """Best [n, n] @ [n, n] rate of jnp.dot (float32 accumulation) on the default device, FLOP/s."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  dot = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
  dot(a, a).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    start = time.perf_counter()
    dot(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * n**3 / best


# --- contestants: each `run(n)` does n train steps and waits for the last one ---------------


class JaxStep:
  """bert_jax's pretraining train_step, jitted with the state donated."""

  def __init__(self, size: dict, batch: dict, prng: str = "threefry", dropout: float = DROPOUT,
               family: str = "bert"):
    import flax.linen as nn
    import jax

    from bert_jax import BertConfig, BertForMaskedLM, ops, optim, steps
    from bert_jax.tasks import pretraining
    self.jax = jax
    fields = dict(vocab_size=VOCAB, hidden_dropout_prob=dropout,
                  attention_probs_dropout_prob=dropout, **size)
    if family == "modernbert":
      from bert_jax import modernbert_config
      fields = modernbert_config.options(**fields, **MODERNBERT)
    # Resolved once here ("cpu" kernels on CPU), as training does.
    self.config = ops.resolve(BertConfig(**fields))
    config = self.config
    model = BertForMaskedLM(config)
    self.batch = {k: jax.numpy.asarray(v) for k, v in batch.items()}
    params = jax.jit(model.init)(jax.random.key(0), self.batch["input_ids"],
                                 self.batch["attention_mask"], self.batch["token_type_ids"])
    params = nn.meta.unbox(params)["params"]
    tx, schedule = optim.make_optimizer(learning_rate=LEARNING_RATE, total_steps=1_000_000,
                                        weight_decay=WEIGHT_DECAY, eps=EPS, clip_norm=CLIP)
    self.masking = pretraining.MaskingConfig(vocab_size=VOCAB, mask_token_id=MASK_ID,
                                       mask_prob=MASK_PROB, max_predictions=PREDICTIONS)
    self.state = steps.create_train_state(params, tx)
    # Every key the step derives (masking, dropout) inherits this key's PRNG implementation.
    self.rng = jax.random.key(1, impl="threefry2x32" if prng == "threefry" else prng)
    step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx,
                                     task=pretraining.Pretraining(self.masking),
                                     schedule=schedule),
                   donate_argnums=0)
    start = time.perf_counter()
    self.compiled = step.lower(self.state, self.batch, self.rng).compile()
    self.compile_s = time.perf_counter() - start
    start = time.perf_counter()
    self.run(1)
    self.first_step_s = time.perf_counter() - start

  @property
  def loss(self) -> float:
    return float(self.metrics["mlm_loss_sum"] / self.metrics["mlm_count"])

  def run(self, n: int):
    for _ in range(n):
      self.state, self.metrics = self.compiled(self.state, self.batch, self.rng)
    self.jax.block_until_ready((self.state, self.metrics))

  def masked_batch(self):
    """The corruption mask_tokens makes with a fixed key, for the PyTorch contestants."""
    from bert_jax.tasks import pretraining
    m = pretraining.apply_masking(self.jax.random.key(2), self.batch, self.masking)
    return {k: np.asarray(getattr(m, k)) for k in ("input_ids", "masked_positions",
                                                   "masked_labels", "masked_weights")}

  def memory(self) -> dict:
    try:
      m = self.compiled.memory_analysis()
    except Exception:  # not every backend implements it
      return {}
    return {k: getattr(m, k + "_in_bytes") for k in ("argument_size", "output_size",
                                                     "alias_size", "temp_size")}

  def cost_flops(self) -> float | None:
    try:
      cost = self.compiled.cost_analysis()
      cost = cost[0] if isinstance(cost, (list, tuple)) else cost
      return float(cost["flops"])
    except Exception:
      return None


class TorchStep:
  """transformers' BertForMaskedLM, full-vocabulary logits or gathered at masked positions."""

  def __init__(self, size: dict, batch: dict, masked: dict, gathered: bool,
               family: str = "bert"):
    import torch
    import transformers
    self.torch = torch
    torch.manual_seed(0)
    self.modern = family == "modernbert"
    tensor = lambda a: torch.tensor(np.asarray(a))  # a copy: jax arrays are read-only
    self.inputs = dict(input_ids=tensor(masked["input_ids"]).long(),
                       attention_mask=tensor(batch["attention_mask"]).long())
    if self.modern:  # gathered: ModernBERT's own sparse prediction
      config = transformers.ModernBertConfig(
          vocab_size=VOCAB, embedding_dropout=DROPOUT, attention_dropout=DROPOUT,
          mlp_dropout=DROPOUT, max_position_embeddings=512, pad_token_id=0,
          bos_token_id=CLS_ID, eos_token_id=SEP_ID, cls_token_id=CLS_ID, sep_token_id=SEP_ID,
          sparse_prediction=gathered, **size, **MODERNBERT)
      self.model = transformers.ModernBertForMaskedLM(config).train()
    else:
      config = transformers.BertConfig(
          vocab_size=VOCAB, hidden_dropout_prob=DROPOUT, attention_probs_dropout_prob=DROPOUT,
          max_position_embeddings=512, **size)
      self.model = transformers.BertForMaskedLM(config).train()
      self.inputs["token_type_ids"] = tensor(batch["token_type_ids"]).long()
    self.gathered = gathered
    positions = tensor(masked["masked_positions"]).long()  # [batch, P]
    labels = tensor(masked["masked_labels"]).long()
    weights = tensor(masked["masked_weights"]).bool()
    self.positions = positions
    self.gathered_labels = torch.where(weights, labels, -100)  # [batch, P]
    full = torch.full(self.inputs["input_ids"].shape, -100, dtype=torch.long)
    rows = torch.arange(full.shape[0])[:, None].expand_as(positions)
    full[rows[weights], positions[weights]] = labels[weights]
    self.full_labels = full  # [batch, seq]
    # As transformers' Trainer: no decay on biases and LayerNorm weights.
    decay, no_decay = [], []
    for name, p in self.model.named_parameters():
      norm = "LayerNorm" in name or (self.modern and "norm" in name)
      (no_decay if name.endswith("bias") or norm else decay).append(p)
    self.optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY},
         {"params": no_decay, "weight_decay": 0.0}], lr=LEARNING_RATE, eps=EPS)
    start = time.perf_counter()
    self.run(1)
    self.first_step_s = time.perf_counter() - start

  def loss_fn(self):
    torch = self.torch
    if not self.gathered or self.modern:  # ModernBERT gathers itself (sparse_prediction)
      return self.model(**self.inputs, labels=self.full_labels).loss
    x = self.model.bert(**self.inputs).last_hidden_state  # [batch, seq, hidden]
    index = self.positions[..., None].expand(-1, -1, x.shape[-1])
    x = torch.gather(x, 1, index)  # [batch, P, hidden]
    logits = self.model.cls(x)  # [batch, P, vocab]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             self.gathered_labels.reshape(-1))

  def run(self, n: int):
    for _ in range(n):
      self.optimizer.zero_grad(set_to_none=True)
      loss = self.loss_fn()
      loss.backward()
      self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
      self.optimizer.step()
    self.loss = loss.item()


# --- main -----------------------------------------------------------------------------------


def maxrss_mib() -> float:
  kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
  return kib / 1024


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", choices=tuple(CONFIGS), default="tiny")
  parser.add_argument("--steps", type=int, default=5, help="steps per contestant per round")
  parser.add_argument("--repeats", type=int, default=5, help="timed rounds (after 1 warm-up)")
  parser.add_argument("--prng", choices=("threefry", "rbg", "unsafe_rbg"), default="threefry",
                      help="PRNG implementation of bert_jax's step key (dropout, masking)")
  parser.add_argument("--threads", type=int, default=0,
                      help="pin the process to this many cores (0: all it may use)")
  parser.add_argument("--malloc", choices=("default", "retain"), default="default",
                      help="retain: keep freed memory in glibc's heap (bert_jax/malloc.py)")
  parser.add_argument("--only", nargs="+", choices=CONTESTANTS, default=list(CONTESTANTS))
  parser.add_argument("--json", default=None, help="also write the results here")
  parser.add_argument("--family", choices=("bert", "modernbert"), default="bert",
                      help="modernbert: both sides ModernBERT-shaped (see the docstring)")
  args = parser.parse_args(argv)

  pin_threads_and_malloc(args.threads, args.malloc)
  import jax
  import torch
  threads = num_threads()
  torch.set_num_threads(threads)
  size = CONFIGS[args.config]
  h, layers, ffn = size["hidden_size"], size["num_hidden_layers"], size["intermediate_size"]
  # A gated feed-forward has three [h, ffn] matrices where BERT's has two.
  flops = step_flops(h, layers, ffn * 3 // 2 if args.family == "modernbert" else ffn)
  tokens_per_step = BATCH * SEQ
  print(f"config {args.config} ({args.family}): {size}, vocab {VOCAB}, batch {BATCH}x{SEQ}, "
        f"{PREDICTIONS} predictions/row, dropout {DROPOUT}; {threads} threads "
        f"(malloc {args.malloc}) "
        f"(XLA CPU client and torch.set_num_threads); load average {os.getloadavg()}")
  print(f"jax {jax.__version__} ({jax.devices()[0].platform}, prng {args.prng}), "
        f"torch {torch.__version__}, model FLOPs/step {flops / 1e9:.2f} G")

  peak = best_dot_flops() / 1e9  # GFLOP/s
  print(f"float32 jnp.dot 2048^3 peak: {peak:.1f} GFLOP/s")

  batch = make_batch()
  contestants = {}
  jax_step = JaxStep(size, batch, prng=args.prng, family=args.family)
  rss_after_jax = maxrss_mib()
  print(f"bert_jax: kernels {jax_step.config.kernels!r}, attention "
        f"{jax_step.config.attention_impl!r}, compile {jax_step.compile_s:.1f}s, "
        f"first step {jax_step.first_step_s:.2f}s, loss {jax_step.loss:.3f}, "
        f"memory_analysis {jax_step.memory()}, XLA cost_analysis flops {jax_step.cost_flops()}")
  masked = jax_step.masked_batch()
  if "bert_jax" in args.only:
    contestants["bert_jax"] = jax_step
  if "transformers" in args.only:
    contestants["transformers"] = TorchStep(size, batch, masked, gathered=False,
                                            family=args.family)
  if "torch_gathered" in args.only:
    contestants["torch_gathered"] = TorchStep(size, batch, masked, gathered=True,
                                              family=args.family)

  rounds: list[dict[str, float]] = []
  cpu_rounds: list[dict[str, float]] = []  # tokens per CPU-second of this process
  faults = {k: 0 for k in contestants}
  for r in range(args.repeats + 1):
    times, cpu = {}, {}
    order = list(contestants) if r % 2 == 0 else list(reversed(contestants))
    for name in order:
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      start, cpu_start = time.perf_counter(), time.process_time()
      contestants[name].run(args.steps)
      times[name] = tokens_per_step * args.steps / (time.perf_counter() - start)
      cpu[name] = tokens_per_step * args.steps / (time.process_time() - cpu_start)
      if r:
        faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    if r == 0:
      continue  # warm-up round
    rounds.append(times)
    cpu_rounds.append(cpu)
    print(f"round {r}: " + ", ".join(f"{k} {v:,.0f}" for k, v in times.items()) + " tok/s")

  tps = {k: statistics.median(t[k] for t in rounds) for k in contestants}
  cpu_tps = {k: statistics.median(t[k] for t in cpu_rounds) for k in contestants}
  ratios, cpu_ratios = {}, {}
  if "bert_jax" in contestants:
    for other in contestants:
      if other != "bert_jax":
        key = f"bert_jax/{other}"
        ratios[key] = statistics.median(t["bert_jax"] / t[other] for t in rounds)
        cpu_ratios[key] = statistics.median(t["bert_jax"] / t[other] for t in cpu_rounds)
  gflops = {k: v / tokens_per_step * flops / 1e9 for k, v in tps.items()}
  print("\nmedian tokens/s: " + ", ".join(f"{k} {v:,.0f}" for k, v in tps.items()))
  print("median per-round ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
  print("per CPU-second (robust to time-slicing with --threads 1; counts spin-waits otherwise): "
        + ", ".join(f"{k} {v:,.0f}" for k, v in cpu_tps.items()) + "; ratios "
        + ", ".join(f"{k} {v:.2f}x" for k, v in cpu_ratios.items()))
  print("model GFLOP/s (same useful FLOPs for all): " + ", ".join(
      f"{k} {v:.1f} ({100 * v / peak:.0f}% of peak)" for k, v in gflops.items()))
  faults = {k: v / (args.repeats * args.steps) for k, v in faults.items()}
  print("minor page faults per step: " + ", ".join(f"{k} {v:,.0f}" for k, v in faults.items()))
  print("final losses: " + ", ".join(f"{k} {c.loss:.3f}" for k, c in contestants.items()))
  print(f"peak RSS: {rss_after_jax:.0f} MiB after bert_jax compile + first step, "
        f"{maxrss_mib():.0f} MiB at the end (all three)")

  result = {
      "config": {"name": args.config, "family": args.family, **size, "vocab_size": VOCAB,
                 "batch": BATCH, "seq": SEQ,
                 "predictions_per_row": PREDICTIONS, "dropout": DROPOUT, "prng": args.prng,
                 "kernels": jax_step.config.kernels},
      "tokens_per_sec": tps,
      "ratios": ratios,
      "tokens_per_cpu_sec": cpu_tps,
      "cpu_ratios": cpu_ratios,
      "rounds": rounds,
      "cpu_rounds": cpu_rounds,
      "steps_per_round": args.steps,
      "model_flops_per_step": flops,
      "model_gflops_per_sec": gflops,
      "matmul_peak_gflops": peak,
      "compile_s": jax_step.compile_s,
      "first_step_s": {k: c.first_step_s for k, c in contestants.items()},
      "xla_memory_analysis": jax_step.memory(),
      "xla_cost_analysis_flops": jax_step.cost_flops(),
      "maxrss_mib": {"after_bert_jax": rss_after_jax, "end": maxrss_mib()},
      "minor_page_faults_per_step": faults,
      "malloc": args.malloc,
      "threads": threads,
      "torch_threads": torch.get_num_threads(),
      "load_average": os.getloadavg(),
      "versions": {"python": platform.python_version(), "jax": jax.__version__,
                   "torch": torch.__version__,
                   "transformers": __import__("transformers").__version__},
  }
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=2)
  return result


if __name__ == "__main__":
  main()
