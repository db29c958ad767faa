"""Streamed corpus preparation (datasets/stream_prepare.py) on small corpora with tiny chunks."""

import json
import logging
import os
import re
import types

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")

from bert_jax import datasets
from bert_jax.datasets import base, local_text, stream_prepare
from bert_jax.datasets.movie_reviews_text import movie_review_rows

CHUNK = 16  # documents per chunk here (2,048 in real runs): many chunks from a small corpus


@pytest.fixture
def corpus(tmp_path, monkeypatch):
  monkeypatch.setattr(base, "CHUNK_DOCUMENTS", CHUNK)
  reviews = [re.sub(r"(<br />)+", "\n", text) for text, _ in
             (row for row, _ in zip(movie_review_rows("imdb"), range(400)))]
  d = tmp_path / "corpus"
  d.mkdir()
  (d / "a.txt").write_text("\n\n".join(reviews[:250]) + "\n", encoding="utf-8")
  (d / "b.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in reviews[250:]) + "\n",
                             encoding="utf-8")
  return str(d)


def _config(text_files, nsp=True, **kw):
  return types.SimpleNamespace(name="local_text", text_files=text_files, nsp=nsp,
                               max_seq_length=64, **kw)


def _prepare(text_files, data_dir, monkeypatch, *, shard_examples=100, on_shard=None,
             num_workers=1, **kw):
  monkeypatch.setattr(local_text.LocalText, "shard_examples", shard_examples)
  monkeypatch.setattr(local_text.LocalText, "on_shard", staticmethod(on_shard) if on_shard
                      else None)
  return datasets.get_builder(_config(text_files, num_workers=num_workers, **kw), str(data_dir))


def _records(builder, split):
  source = builder.as_data_source(split)
  return [_key(source[i]) for i in range(len(source))]


def _key(example):
  return (tuple(example["input_ids"].tolist()), tuple(example["token_type_ids"].tolist()),
          int(example.get("next_sentence_label", -1)))


def _shards(builder):
  """Per split: the shard lengths and the records in order (array_record's bytes may differ
  from run to run for the same records)."""
  return {split: (info.shard_lengths, _records(builder, split))
          for split, info in builder.info.splits.items()}


def test_streamed_equals_the_tfds_generator_path(corpus, tmp_path, monkeypatch):
  """Same records, in the same order per split, as `_generate_examples` (the TFDS writer then
  stores those in key-hash order); several shards per split; the metadata sums match."""
  builder = _prepare(corpus, tmp_path / "data", monkeypatch)
  assert len(builder.info.splits["train"].shard_lengths) > 3
  reference = local_text.LocalText(config=builder.builder_config, data_dir=str(tmp_path / "ref"))
  generators = reference._split_generators(None)
  for split, generator in generators.items():
    expected = [_key(example) for _, example in generator]
    assert _records(builder, split) == expected
    assert builder.info.metadata[split] == reference.info.metadata[split]
    assert builder.info.metadata[split]["examples"] == len(expected)
  assert builder.info.metadata["read"] == reference.info.metadata["read"]
  assert builder.info.metadata["read"]["documents"] == 400
  assert not os.path.exists(stream_prepare.work_dir(builder))


def test_resume_after_interruption_gives_identical_shards(corpus, tmp_path, monkeypatch, caplog):
  whole = _prepare(corpus, tmp_path / "whole", monkeypatch)
  seen = []

  def stop_after_two(manifest):
    seen.append(json.loads(json.dumps(manifest)))
    if len(seen) == 2:
      raise KeyboardInterrupt("killed")

  with pytest.raises(KeyboardInterrupt):
    _prepare(corpus, tmp_path / "resumed", monkeypatch, on_shard=stop_after_two)
  work = stream_prepare.work_dir(local_text.LocalText(
      config=whole.builder_config, data_dir=str(tmp_path / "resumed")))
  manifest = json.load(open(os.path.join(work, stream_prepare.MANIFEST)))
  assert manifest == seen[-1] and manifest["num_documents"] == 400
  assert manifest["fingerprint"] == stream_prepare.fingerprint(whole, 100)
  assert sum(len(e["shards"]) for e in manifest["splits"].values()) == 2
  assert sorted(os.listdir(work)) == sorted(
      [stream_prepare.MANIFEST] + [s["name"] for e in manifest["splits"].values()
                                   for s in e["shards"]])
  # A kill while a shard was being written leaves part of it: discarded on resume.
  with open(os.path.join(work, "train-00002.array_record.tmp"), "wb") as f:
    f.write(b"partial")
  packed = []
  monkeypatch.setattr(stream_prepare, "_pack", _recording(packed))
  with caplog.at_level(logging.INFO, logger="bert_jax.datasets"):
    resumed = _prepare(corpus, tmp_path / "resumed", monkeypatch)
  assert "resuming after 2 finished shards" in caplog.text
  assert min(i for s, i in packed if s == "train") == manifest["splits"]["train"]["chunks"]
  assert _shards(resumed) == _shards(whole)
  assert resumed.info.metadata == whole.info.metadata
  assert re.search(r"local_text: [\d,]+/400 documents, [\d.]+/[\d.]+ MB, [\d.]+ MB/s, ETA",
                   caplog.text)


def test_changed_settings_start_over(corpus, tmp_path, monkeypatch, caplog):
  def stop(manifest):
    raise KeyboardInterrupt("killed")

  with pytest.raises(KeyboardInterrupt):
    _prepare(corpus, tmp_path / "data", monkeypatch, on_shard=stop)
  with caplog.at_level(logging.WARNING, logger="bert_jax.datasets"):
    builder = _prepare(corpus, tmp_path / "data", monkeypatch, shard_examples=150)
  assert "an unfinished preparation with other inputs or settings" in caplog.text
  assert _records(builder, "train") == _records(
      _prepare(corpus, tmp_path / "fresh", monkeypatch, shard_examples=150), "train")


def _recording(calls, reader=None):
  pack = stream_prepare._pack

  def recorded(split, chunk_index, chunk):
    calls.append((split, chunk_index) if reader is None else (len(chunk), reader[0]))
    return pack(split, chunk_index, chunk)
  return recorded


def test_reader_is_streamed_in_chunks(corpus, tmp_path, monkeypatch):
  """At every packed chunk the reader has run at most two chunks ahead (one pending per
  split): documents are never all in memory."""
  read = [0]
  documents = local_text.LocalText._documents

  def counting(self, quiet=False):
    for document in documents(self, quiet):
      if not quiet:
        read[0] += 1
      yield document

  monkeypatch.setattr(local_text.LocalText, "_documents", counting)
  calls = []
  monkeypatch.setattr(stream_prepare, "_pack", _recording(calls, read))
  _prepare(corpus, tmp_path / "data", monkeypatch, num_workers=1)
  assert len(calls) > 20 and read[0] == 400
  packed = np.cumsum([n for n, _ in calls])
  ahead = np.array([r for _, r in calls]) - packed
  assert ahead.max() <= 2 * CHUNK


def test_one_and_two_workers_give_identical_shards(corpus, tmp_path, monkeypatch):
  one = _prepare(corpus, tmp_path / "one", monkeypatch, num_workers=1, nsp=False)
  two = _prepare(corpus, tmp_path / "two", monkeypatch, num_workers=2, nsp=False)
  assert _shards(one) == _shards(two) and len(_shards(one)["train"][0]) > 4
  assert one.info.metadata == two.info.metadata


def test_cli(corpus, tmp_path, monkeypatch, capsys):
  from bert_jax import corpus as cli
  monkeypatch.setattr(local_text.LocalText, "shard_examples", 100)
  info = cli.main([f"--text_files={corpus}", f"--data_dir={tmp_path / 'data'}",
                   "--max_seq_length=64", "--num_workers=1"])
  assert info["split_sizes"]["train"] > 0 and "_s64_full" in info["config_name"]
  # main's data config finds it prepared
  again = datasets.get_builder(_config(corpus, nsp=False), str(tmp_path / "data"))
  assert str(again.data_dir) == info["data_dir"]
  with pytest.raises(SystemExit):
    cli.main([f"--text_files={tmp_path / 'nothing'}/*.txt", f"--data_dir={tmp_path}"])
  assert capsys.readouterr().err.startswith("error: ")

