"""Attention cost on CPU: XLA's attention against `ops.blocked_attention`, alone and in MiniLM.

    .venv/bin/python benchmarks/attention.py [--parts attention model train]
        [--lengths 32 64 128 256 384 512] [--batch 32] [--train_batch 8] [--rounds 3]
        [--real 0.75] [--threads N] [--malloc default|retain] [--no_torch] [--json PATH]
        [--tiny]

One process; every contestant of a part is compiled (and run once) first, then each timed round
runs them all, in alternating order (forward, then reversed); medians over rounds. Ratios are
the other contestant's time over the named one's (> 1: the named one is faster). The load
average (`os.getloadavg()`) is printed with every row: on a shared machine it says how much of
the CPU the process had.

  attention  one layer's attention core, MiniLM-shaped: q, k, v [batch, length, 12, 32]
             float32, the first `--real` of each row's keys real (the rest padding, which
             the blocked kernel skips block by block). `ops.xla_attention` (the [batch, 12, L, L]
             scores in full) vs `ops.blocked_attention` stepping as the "cpu" kernel set does
             (`ops.KERNEL_SETS["cpu"].blocking`: 64-key blocks, two batch rows a step),
             forward and forward + backward, at `--batch` and at batch 1 (the crossover);
             torch's `scaled_dot_product_attention` (forward, same threads) for reference.
  model      the forward of a MiniLM-shaped BertModel (6 layers, hidden 384, 12 heads, FFN
             1536, random weights, kernels "cpu") with attention_impl "xla" vs "blocked", and
             transformers' BertModel of the same shape (sdpa attention) for reference.
  train      the gradient of the same encoder (sum of squares of the last hidden state, no
             dropout: the blocked kernel computes no attention dropout) at `--train_batch`:
             tokens/s per length, and time per token at each length over that at the shortest
             against the model-FLOP ratio (`step_flops` per token: matmuls + 12·L·S·h
             attention).

Figures: benchmarks/RESULTS.md, "CPU: blocked attention".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import mlm_step  # a sibling script (benchmarks/ is sys.path[0]): threads, malloc, step_flops

MINILM = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
              intermediate_size=1536, vocab_size=30522, max_position_embeddings=512)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            vocab_size=1000, max_position_embeddings=512)


def load() -> str:
  return "/".join(f"{x:.1f}" for x in os.getloadavg())


def timed_rounds(fns: dict, rounds: int) -> dict[str, float]:
  """Median seconds of each zero-argument function, run in alternating order per round."""
  for f in fns.values():
    f()  # compile and warm up
  times = {name: [] for name in fns}
  names = list(fns)
  for r in range(rounds):
    for name in names if r % 2 == 0 else names[::-1]:
      start = time.perf_counter()
      fns[name]()
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def attention_part(lengths, batch, rounds, use_torch, real, heads=12,
                   head_dim=32) -> list[dict]:
  import jax
  import numpy as np

  from bert_jax import ops
  blocking = ops.KERNEL_SETS["cpu"].blocking
  rows = []
  for b in sorted({batch, 1}, reverse=True):
    for length in lengths:
      keys = jax.random.split(jax.random.key(length), 4)
      q, k, v, g = (jax.random.normal(key, (b, length, heads, head_dim)) for key in keys)
      mask = jax.numpy.asarray(np.arange(length)[None].repeat(b, 0) < round(real * length))
      kernels = {"xla": ops.xla_attention,
                 "blocked": lambda *a: ops.blocked_attention(*a, blocking.block, blocking.rows)}
      fns = {}
      for name, f in kernels.items():
        fwd = jax.jit(lambda q, k, v, f=f: f(q, k, v, mask))
        grad = jax.jit(lambda q, k, v, f=f: jax.vjp(lambda *a: f(*a, mask), q, k, v)[1](g))
        fns[name] = lambda fwd=fwd: jax.block_until_ready(fwd(q, k, v))
        fns[name + " fwd+bwd"] = lambda grad=grad: jax.block_until_ready(grad(q, k, v))
      if use_torch:
        import torch
        tq, tk, tv = (torch.from_numpy(np.asarray(t).transpose(0, 2, 1, 3).copy())
                      for t in (q, k, v))
        tmask = torch.from_numpy(np.array(mask))[:, None, None, :]

        def sdpa():
          with torch.inference_mode():
            torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=tmask)
        fns["torch sdpa"] = sdpa
      t = timed_rounds(fns, rounds)
      row = dict(part="attention", batch=b, length=length, load=load(),
                 ms={name: round(1000 * s, 2) for name, s in t.items()},
                 blocked_speedup=round(t["xla"] / t["blocked"], 2),
                 blocked_speedup_fwd_bwd=round(t["xla fwd+bwd"] / t["blocked fwd+bwd"], 2))
      if use_torch:
        row["blocked_vs_torch"] = round(t["torch sdpa"] / t["blocked"], 2)
      print(f"attention b={b:<3} L={length:<4} " + "  ".join(
          f"{name} {ms:.1f} ms" for name, ms in row["ms"].items())
          + f" | xla/blocked fwd {row['blocked_speedup']:.2f}x, fwd+bwd "
          f"{row['blocked_speedup_fwd_bwd']:.2f}x"
          + (f", torch/blocked {row['blocked_vs_torch']:.2f}x" if use_torch else "")
          + f" | load {row['load']}", flush=True)
      rows.append(row)
  return rows


def _encoder(shape: dict, impl: str):
  import flax.linen as nn
  import jax
  import numpy as np

  from bert_jax import BertConfig, BertModel
  config = BertConfig(**shape, kernels="cpu", attention_impl=impl, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0)
  model = BertModel(config, add_pooling_layer=False)
  ids = np.zeros((1, 8), np.int32)
  rng = np.random.RandomState(0)
  params = jax.tree_util.tree_map_with_path(  # LayerNorm scales around 1, the rest around 0
      lambda path, p: (("['scale']" in jax.tree_util.keystr(path))
                       + 0.02 * rng.standard_normal(p.shape)).astype(np.float32),
      nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), ids)))
  return model, jax.device_put(params)


def _inputs(batch: int, length: int, vocab: int, real: float):
  import numpy as np
  rng = np.random.RandomState(length)
  ids = rng.randint(5, vocab, size=(batch, length)).astype(np.int32)
  mask = (np.arange(length)[None].repeat(batch, 0) < round(real * length)).astype(np.int32)
  return ids, mask


def model_part(shape, lengths, batch, rounds, use_torch, real) -> list[dict]:
  import jax
  import numpy as np
  models = {impl: _encoder(shape, impl) for impl in ("xla", "blocked")}
  hf_model = None
  if use_torch:
    import torch
    import transformers
    hf_config = transformers.BertConfig(**shape, hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0,
                                        attn_implementation="sdpa")
    hf_model = transformers.BertModel(hf_config, add_pooling_layer=False).eval()
  rows = []
  for length in lengths:
    ids, mask = _inputs(batch, length, shape["vocab_size"], real)
    fns = {}
    for impl, (model, params) in models.items():
      forward = jax.jit(lambda p, i, m, model=model: model.apply(p, i, m).last_hidden_state)
      fns[impl] = lambda forward=forward, params=params: np.asarray(forward(params, ids, mask))
    if hf_model is not None:
      tids, tmask = torch.from_numpy(ids).long(), torch.from_numpy(mask).long()

      def hf_forward():
        with torch.inference_mode():
          hf_model(input_ids=tids, attention_mask=tmask).last_hidden_state.numpy()
      fns["transformers"] = hf_forward
    t = timed_rounds(fns, rounds)
    row = dict(part="model", batch=batch, length=length, load=load(),
               ms={name: round(1000 * s, 1) for name, s in t.items()},
               blocked_speedup=round(t["xla"] / t["blocked"], 2))
    if hf_model is not None:
      row["blocked_vs_transformers"] = round(t["transformers"] / t["blocked"], 2)
      row["xla_vs_transformers"] = round(t["transformers"] / t["xla"], 2)
    print(f"model b={batch} L={length:<4} " + "  ".join(
        f"{name} {ms:.0f} ms" for name, ms in row["ms"].items())
        + f" | xla/blocked {row['blocked_speedup']:.2f}x"
        + (f", transformers/blocked {row['blocked_vs_transformers']:.2f}x, transformers/xla "
           f"{row['xla_vs_transformers']:.2f}x" if hf_model is not None else "")
        + f" | load {row['load']}", flush=True)
    rows.append(row)
  return rows


def train_part(shape, lengths, batch, rounds, real) -> list[dict]:
  import jax
  import jax.numpy as jnp
  models = {impl: _encoder(shape, impl) for impl in ("xla", "blocked")}
  h, layers, ffn = shape["hidden_size"], shape["num_hidden_layers"], shape["intermediate_size"]
  rows = []
  for length in lengths:
    ids, mask = _inputs(batch, length, shape["vocab_size"], real)
    fns = {}
    for impl, (model, params) in models.items():
      def loss(p, model=model):
        return jnp.mean(model.apply(p, ids, mask).last_hidden_state ** 2)
      grad = jax.jit(jax.grad(loss))
      fns[impl] = lambda grad=grad, params=params: jax.block_until_ready(grad(params))
    t = timed_rounds(fns, rounds)
    flops = mlm_step.step_flops(h, layers, ffn, batch=batch, seq=length, predictions=0)
    rows.append(dict(part="train", batch=batch, length=length, load=load(),
                     ms={name: round(1000 * s, 1) for name, s in t.items()},
                     tokens_per_s={name: round(batch * length / s) for name, s in t.items()},
                     flops_per_token=flops / (batch * length),
                     blocked_speedup=round(t["xla"] / t["blocked"], 2)))
  first = rows[0]
  for row in rows:
    flop_ratio = row["flops_per_token"] / first["flops_per_token"]
    row["flop_ratio_vs_shortest"] = round(flop_ratio, 3)
    row["time_per_token_ratio_vs_shortest"] = {
        name: round(first["tokens_per_s"][name] / tps, 3)
        for name, tps in row["tokens_per_s"].items()}
    print(f"train b={batch} L={row['length']:<4} " + "  ".join(
        f"{name} {row['ms'][name]:.0f} ms ({tps} tok/s)"
        for name, tps in row["tokens_per_s"].items())
        + f" | xla/blocked {row['blocked_speedup']:.2f}x | per token vs L={first['length']}: "
        + ", ".join(f"{name} {r:.2f}x" for name, r in
                    row["time_per_token_ratio_vs_shortest"].items())
        + f" (FLOP ratio {flop_ratio:.2f}x) | load {row['load']}", flush=True)
  return rows


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--parts", nargs="+", choices=("attention", "model", "train"),
                      default=["attention", "model", "train"])
  parser.add_argument("--lengths", nargs="+", type=int, default=[32, 64, 128, 256, 384, 512])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--train_batch", type=int, default=8)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--real", type=float, default=0.75,
                      help="the share of each row's tokens that are real (the rest padding)")
  parser.add_argument("--threads", type=int, default=0,
                      help="pin to this many cores first (0: every core the process may use)")
  parser.add_argument("--malloc", choices=("default", "retain"), default="default")
  parser.add_argument("--no_torch", action="store_true",
                      help="leave out torch / transformers (the reference rows)")
  parser.add_argument("--json", default=None)
  parser.add_argument("--tiny", action="store_true",
                      help="a 2-layer hidden-64 encoder, lengths 16 and 160, batch 2, 1 round")
  args = parser.parse_args(argv)
  mlm_step.pin_threads_and_malloc(args.threads, args.malloc)  # before jax starts
  shape = MINILM
  if args.tiny:
    shape, args.lengths, args.batch, args.train_batch, args.rounds = TINY, [16, 160], 2, 2, 1
  import jax
  threads = mlm_step.num_threads()
  if not args.no_torch:
    import torch
    torch.set_num_threads(threads)
  import flax
  versions = dict(python=platform.python_version(), jax=jax.__version__, flax=flax.__version__)
  if not args.no_torch:
    import transformers
    versions.update(torch=torch.__version__, transformers=transformers.__version__)
  print(f"{platform.processor() or platform.machine()}, {threads} threads, "
        + ", ".join(f"{k} {v}" for k, v in versions.items()) + f", load {load()}", flush=True)
  out = dict(threads=threads, versions=versions, real=args.real, rows=[])
  if "attention" in args.parts:
    out["rows"] += attention_part(args.lengths, args.batch, args.rounds, not args.no_torch,
                                  args.real, heads=shape["num_attention_heads"],
                                  head_dim=shape["hidden_size"] // shape["num_attention_heads"])
  if "model" in args.parts:
    out["rows"] += model_part(shape, args.lengths, args.batch, args.rounds, not args.no_torch,
                              args.real)
  if "train" in args.parts:
    lengths = [n for n in args.lengths if n >= 128] or args.lengths
    out["rows"] += train_part(shape, lengths, args.train_batch, args.rounds, args.real)
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(out, f, indent=1)
  return out


if __name__ == "__main__":
  main()
