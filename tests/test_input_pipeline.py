"""Grain loaders: batch contents, deterministic order, resume, process shards, eval padding."""

import csv
import hashlib
import json
import types

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")
pytest.importorskip("grain")

from bert_jax.tasks import classification, pretraining

PRETRAIN = types.SimpleNamespace(name="movie_reviews_text", vocab_file="", max_seq_length=128,
                                 nsp=True, short_seq_prob=0.1, max_documents=120)
FULL = types.SimpleNamespace(**{**vars(PRETRAIN), "nsp": False, "max_seq_length": 64})
CLASSIFY = types.SimpleNamespace(name="rotten_tomatoes", vocab_file="", max_seq_length=64)


def pretrain(data_dir, config=PRETRAIN, **kw):
  args = dict(split="train", global_batch_size=8, seed=0, shuffle=True, num_epochs=None,
              data_dir=data_dir)
  return pretraining.make_iterator(config, **{**args, **kw})


def classify(data_dir, config=CLASSIFY, **kw):
  args = dict(split="test", global_batch_size=100, seed=0, shuffle=False, num_epochs=1,
              data_dir=data_dir)
  return classification.make_iterator(config, **{**args, **kw})


def row_keys(batch):
  """One hash per real row, to compare which examples a batch holds."""
  rows = np.flatnonzero(batch["example_mask"])
  return [hashlib.sha1(batch["input_ids"][r].tobytes()).hexdigest() for r in rows]


def same(a, b):
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_pretraining_batch(data_dir, tok):
  batch = next(pretrain(data_dir))
  assert {k: (v.shape, v.dtype.name) for k, v in batch.items()} == {
      **{k: ((8, 128), "int32") for k in pretraining.FIELDS},
      "next_sentence_label": ((8,), "int32"), "example_mask": ((8,), "int32")}
  ids, att = batch["input_ids"], batch["attention_mask"]
  np.testing.assert_array_equal(att, ids != tok.pad_id)
  assert (ids[:, 0] == tok.cls_id).all() and batch["example_mask"].all()
  np.testing.assert_array_equal(batch["special_tokens_mask"],
                                np.isin(ids, [tok.cls_id, tok.sep_id, tok.pad_id, tok.mask_id]))
  for row in range(8):
    n = att[row].sum()
    seps = np.flatnonzero(ids[row] == tok.sep_id)
    assert len(seps) == 2 and seps[1] == n - 1
    np.testing.assert_array_equal(batch["token_type_ids"][row][:n], np.arange(n) > seps[0])
    assert not batch["token_type_ids"][row][n:].any()
    tokens = tok.convert_ids_to_tokens(ids[row][:n])
    special = batch["special_tokens_mask"][row]
    for j, t in enumerate(tokens):
      starts = not special[j] and (not t.startswith("##") or special[j - 1])
      assert batch["word_starts"][row][j] == starts, (j, t)
  assert not (batch["word_starts"] & batch["special_tokens_mask"]).any()


def test_full_sentence_batch(data_dir):
  batch = next(pretrain(data_dir, FULL))
  assert "next_sentence_label" not in batch and batch["input_ids"].shape == (8, 64)
  assert not batch["token_type_ids"].any()


def test_deterministic_order_and_seed(data_dir):
  a = [next(it) for it in [pretrain(data_dir)] for _ in range(3)]
  b = [next(it) for it in [pretrain(data_dir)] for _ in range(3)]
  c = [next(it) for it in [pretrain(data_dir, seed=1)] for _ in range(3)]
  assert all(same(x, y) for x, y in zip(a, b))
  assert not all(same(x, y) for x, y in zip(a, c))
  ordered = next(pretrain(data_dir, shuffle=False))
  assert not same(a[0], ordered)


def test_resume_exactly(data_dir):
  it = pretrain(data_dir)
  for _ in range(5):
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # what the checkpoint stores
  assert state["grain"] == {"next_index": 5}
  expected = [next(it) for _ in range(3)]
  fresh = pretrain(data_dir)
  fresh.set_state(state)
  assert all(same(x, y) for x, y in zip(expected, [next(fresh) for _ in range(3)]))
  other = pretrain(data_dir, seed=1)
  with pytest.raises(ValueError, match="different input pipeline"):
    other.set_state(state)


def test_epochs_cover_every_example_once(data_dir):
  info = pretraining.data_info(PRETRAIN, data_dir)
  n = info["split_sizes"]["validation"]
  it = pretrain(data_dir, split="validation", global_batch_size=4, num_epochs=2)
  assert it.num_batches == -(-2 * n // 4)
  batches = list(it)
  assert len(batches) == it.num_batches
  keys = [k for b in batches for k in row_keys(b)]
  first, second = keys[:n], keys[n:]
  assert len(keys) == 2 * n and len(set(first)) == n and set(first) == set(second)
  assert first != second  # reshuffled for the second epoch
  # Endless: consecutive epochs, each a permutation of the split.
  endless = pretrain(data_dir, split="validation", global_batch_size=1)
  keys = [row_keys(next(endless))[0] for _ in range(2 * n)]
  assert set(keys[:n]) == set(keys[n:]) == set(first) and keys[:n] != keys[n:]


def test_eval_padding_counts_every_example_once(data_dir, tok):
  it = classify(data_dir)
  batches = list(it)
  with pytest.raises(StopIteration):
    next(it)
  assert len(batches) == it.num_batches == 11
  assert all(b["input_ids"].shape == (100, 64) and b["label"].shape == (100,) for b in batches)
  mask = np.concatenate([b["example_mask"] for b in batches])
  assert mask.sum() == 1066 and mask[:1066].all()
  last = batches[-1]
  assert all(not last[k][66:].any() for k in last)  # padding rows are all zero
  # Rows are the tokenized test texts with their labels, in order (shuffle=False).
  from bert_jax import datasets
  source = datasets.get_builder(CLASSIFY, data_dir).as_data_source("test")
  records = [source[i] for i in (0, 1, 555, 1065)]
  enc = tok.encode_batch([r["text"].decode() for r in records], max_length=64)
  rows = [batches[i // 100]["input_ids"][i % 100] for i in (0, 1, 555, 1065)]
  np.testing.assert_array_equal(np.stack(rows), enc["input_ids"])
  labels = [batches[i // 100]["label"][i % 100] for i in (0, 1, 555, 1065)]
  assert labels == [int(r["label"]) for r in records]


@pytest.mark.parametrize("process_count", [2, 3])
def test_process_shards_are_disjoint_and_complete(data_dir, process_count):
  shards = [list(classify(data_dir, global_batch_size=24 * process_count, shuffle=True,
                          process_index=p, process_count=process_count))
            for p in range(process_count)]
  assert len({len(s) for s in shards}) == 1  # every process takes the same number of steps
  assert all(b["input_ids"].shape[0] == 24 for s in shards for b in s)
  rows = [k for s in shards for b in s for k in row_keys(b)]
  # Together the processes read every example exactly once (as one process does).
  single = [k for b in classify(data_dir, global_batch_size=24) for k in row_keys(b)]
  assert len(single) == 1066 and sorted(rows) == sorted(single)


def test_dataset_info(data_dir, tok):
  info = classification.data_info(CLASSIFY, data_dir)
  assert info["label_names"] == ["negative", "positive"]
  assert info["split_sizes"] == {"train": 7464, "test": 1066}
  assert info["vocab_size"] == 30522
  info = pretraining.data_info(PRETRAIN, data_dir)
  assert info["label_names"] == [] and info["nsp"] and info["mask_token_id"] == tok.mask_id
  assert set(info["split_sizes"]) == {"train", "validation"}
  meta = info["metadata"]
  assert meta["train"]["documents"] + meta["validation"]["documents"] == 120
  assert meta["train"]["tokens"] > 20_000


def test_local_files_end_to_end(tmp_path, data_dir):
  corpus = tmp_path / "docs"
  corpus.mkdir()
  for i in range(3):
    (corpus / f"{i}.txt").write_text("\n\n".join(
        f"Document {i}.{j} has a first sentence. And a second one here." for j in range(20)))
  it = pretrain(str(tmp_path / "data"), types.SimpleNamespace(
      name="local_text", text_files=str(corpus / "*.txt"), max_seq_length=32, nsp=True),
      global_batch_size=4)
  assert next(it)["input_ids"].shape == (4, 32)
  train = tmp_path / "train.csv"
  with open(train, "w", newline="") as f:
    csv.writer(f).writerows([["text", "text_pair", "label"], ["a b", "c d", "yes"],
                             ["e", "f", "no"], ["g", "h", "yes"]])
  config = types.SimpleNamespace(name="local_classification", train_file=str(train),
                                 max_seq_length=16)
  batch = next(classify(str(tmp_path / "data"), config, split="train", global_batch_size=4))
  assert batch["label"].tolist() == [1, 0, 1, 0] and batch["example_mask"].tolist() == [1, 1, 1, 0]
  assert batch["token_type_ids"][0].tolist()[:7] == [0, 0, 0, 0, 1, 1, 1]


def test_argument_errors(data_dir):
  with pytest.raises(ValueError, match="multiple of process_count"):
    pretrain(data_dir, global_batch_size=6, process_count=4)
  with pytest.raises(ValueError, match=r"no split 'test'; it has \['train', 'validation'\]"):
    pretrain(data_dir, split="test")


def test_loader_benchmark_runs(data_dir, capsys):
  import importlib.util
  import os
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  path = os.path.join(repo, "benchmarks", "loader_throughput.py")
  spec = importlib.util.spec_from_file_location("loader_throughput", path)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  result = bench.main(["--data_dir", data_dir, "--max_documents", "120", "--seconds", "1",
                       "--step-tokens-per-sec", "20000"])
  # Only that it measures: the ratio itself depends on how busy the machine is.
  assert result["ratio"] > 0
  assert "loader/step" in capsys.readouterr().out
