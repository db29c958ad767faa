"""Where bert_jax's CPU MLM step spends its time: XLA thunk times from a jax.profiler trace.

    .venv/bin/python benchmarks/mlm_profile.py --config tiny [--threads 1] [--malloc retain]
        [--steps 4] [--top 25]

Builds the step of benchmarks/mlm_step.py, traces `--steps` steps with
`jax.profiler.trace(create_perfetto_trace=True)` and adds up each compiled op's ("thunk's")
durations, grouped by the model part its HLO metadata names (MLM head, loss, encoder attention,
encoder rest, dropout RNG, embeddings, optimizer, masking), then lists the largest ops with
their shapes. With more than one thread, ops that XLA hands to its Eigen pool (plain `dot.N`)
are recorded at dispatch only and so under-counted: use `--threads 1` for a complete account.
Also prints minor page faults and system time per step (see bert_jax/malloc.py).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import resource
import tempfile
import time

import mlm_step  # a sibling script (benchmarks/ is sys.path[0])

# (label, test on the op_name metadata), first match wins.
CATEGORIES = (
    ("masking", lambda op: "jvp" not in op and "vmap(" in op),
    ("dropout RNG", lambda op: any(k in op for k in ("bernoulli", "random_bits", "threefry"))),
    ("MLM head (transform, vocab projection, bias)", lambda op: "mlm_head" in op),
    ("loss + accuracy (softmax CE, argmax)", lambda op: "jvp()" in op),
    ("embeddings (lookup, scatter-add gradient)", lambda op: "embeddings" in op),
    ("encoder attention", lambda op: "/attention/" in op),
    ("encoder rest (FFN, LayerNorm, dropout apply)", lambda op: "encoder" in op),
    ("optimizer, norms, other", lambda op: True),
)


def categorize(op_name: str) -> str:
  for label, test in CATEGORIES:
    if test(op_name):
      return label
  raise AssertionError


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", choices=tuple(mlm_step.CONFIGS), default="tiny")
  parser.add_argument("--threads", type=int, default=0)
  parser.add_argument("--malloc", choices=("default", "retain"), default="default")
  parser.add_argument("--steps", type=int, default=4)
  parser.add_argument("--top", type=int, default=25)
  args = parser.parse_args(argv)
  mlm_step.pin_threads_and_malloc(args.threads, args.malloc)
  import jax

  step = mlm_step.JaxStep(mlm_step.CONFIGS[args.config], mlm_step.make_batch())
  hlo = step.compiled.as_text()
  ops = {m.group(1): (m.group(2), m.group(3)) for m in re.finditer(
      r'^\s*(?:ROOT )?%([\w.\-]+) = (\S+) .*?op_name="([^"]*)"', hlo, re.M)}
  step.run(2)

  usage = resource.getrusage(resource.RUSAGE_SELF)
  start = time.perf_counter()
  step.run(args.steps)
  wall = (time.perf_counter() - start) / args.steps
  after = resource.getrusage(resource.RUSAGE_SELF)
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    step.run(args.steps)
    jax.profiler.stop_trace()
    path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))[-1]
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  per_op = collections.Counter()
  for e in events:
    # `call`/`while` thunks wrap others: counting both would count their bodies twice.
    if e.get("ph") == "X" and e["name"] in ops and not e["name"].startswith(("call", "while")):
      per_op[e["name"]] += e["dur"] / 1e3 / args.steps  # ms per step
  per_category = collections.Counter()
  for name, ms in per_op.items():
    per_category[categorize(ops[name][1])] += ms

  print(f"config {args.config}, threads {mlm_step.num_threads()}, malloc {args.malloc}, load "
        f"{os.getloadavg()[0]:.1f}: {1000 * wall:.0f} ms/step untraced; traced thunks "
        f"{sum(per_op.values()):.0f} ms/step; minor page faults/step "
        f"{(after.ru_minflt - usage.ru_minflt) / args.steps:,.0f}, system time/step "
        f"{(after.ru_stime - usage.ru_stime) / args.steps * 1000:.0f} ms")
  for label, ms in per_category.most_common():
    print(f"  {ms:8.1f} ms  {label}")
  print(f"largest {args.top} ops (ms/step, output shape, op_name):")
  for name, ms in per_op.most_common(args.top):
    shape, op = ops[name]
    op = op.replace("jit(train_step)/", "").replace("BertForMaskedLM", "M")
    print(f"  {ms:8.1f}  {name:30s} {shape[:28]:28s} {op[:90]}")


if __name__ == "__main__":
  main()
