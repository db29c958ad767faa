"""Two processes that prepare the same TFDS dataset into one fresh data dir at the same moment
(two runs on different workdirs): both succeed and read the same data, prepared by one of them."""

import json
import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("tensorflow_datasets")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Imports everything first, says it is ready, waits for the go file, then prepares and reads.
CHILD = """
import hashlib, json, logging, os, sys, time, types
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
from bert_jax import datasets
from bert_jax.datasets import rotten_tomatoes  # noqa: F401
data_dir, ready, go = sys.argv[1:]
open(ready, "w").close()
while not os.path.exists(go):
  time.sleep(0.001)
builder = datasets.get_builder(types.SimpleNamespace(name="rotten_tomatoes"), data_dir)
out = {}
for split, info in sorted(builder.info.splits.items()):
  source = builder.as_data_source(split)
  digest = hashlib.sha1()
  for i in range(len(source)):
    digest.update(source[i]["text"] + bytes([source[i]["label"]]))
  out[split] = [info.num_examples, len(source), digest.hexdigest()]
print(json.dumps(out))
"""


def test_two_processes_prepare_one_data_dir_once(tmp_path):
  data_dir = str(tmp_path / "tfds")
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  go = str(tmp_path / "go")
  procs, ready = [], []
  for i in range(2):
    ready.append(str(tmp_path / f"ready{i}"))
    procs.append(subprocess.Popen([sys.executable, "-c", CHILD, data_dir, ready[i], go],
                                  cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  deadline = time.monotonic() + 120
  while not all(map(os.path.exists, ready)):
    assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
        [p.communicate() for p in procs if p.poll() is not None]
    time.sleep(0.01)
  open(go, "w").close()  # both start preparing now
  results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]

  for stdout, stderr, rc in results:
    assert rc == 0, stderr[-3000:]
  counts = [json.loads(stdout.splitlines()[-1]) for stdout, _, _ in results]
  assert counts[0] == counts[1]
  assert {split: c[:2] for split, c in counts[0].items()} == {"train": [7464, 7464],
                                                              "test": [1066, 1066]}
  generated = [stderr.count("Generating dataset rotten_tomatoes") for _, stderr, _ in results]
  assert sorted(generated) == [0, 1], generated  # prepared by exactly one of them
  left = [os.path.join(d, n) for d, dirs, files in os.walk(data_dir) for n in dirs + files
          if "incomplete" in n or ".tmp" in n or n.endswith(".lock")]
  assert not left  # no half-written data, and the lock file is gone
