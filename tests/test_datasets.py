"""TFDS builders on small real slices, prepared to array_record without TensorFlow."""

import csv
import gzip
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import types

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from bert_jax import datasets  # noqa: E402
from bert_jax.datasets import base, local_classification, local_text, rotten_tomatoes  # noqa: E402
from bert_jax.datasets.movie_reviews_text import MovieReviewsText, movie_review_rows  # noqa: E402
from bert_jax.tokenizer import Tokenizer  # noqa: E402


def cfg(**kw):
  return types.SimpleNamespace(**kw)


def _records(builder, split):
  source = builder.as_data_source(split)
  return [source[i] for i in range(len(source))]


def test_no_tensorflow(data_dir):
  assert importlib.util.find_spec("tensorflow") is None
  datasets.get_builder(cfg(name="rotten_tomatoes"), data_dir)
  assert "tensorflow" not in sys.modules


def test_default_data_dir(monkeypatch, tmp_path):
  monkeypatch.setenv("BERT_JAX_DATA_DIR", str(tmp_path))
  assert datasets.default_data_dir() == str(tmp_path)
  monkeypatch.delenv("BERT_JAX_DATA_DIR")
  assert datasets.default_data_dir() == os.path.expanduser("~/tensorflow_datasets")


def test_rotten_tomatoes(data_dir):
  builder = datasets.get_builder(cfg(name="rotten_tomatoes"), data_dir)
  assert os.path.isdir(os.path.join(data_dir, "rotten_tomatoes", "1.0.0"))
  assert builder.info.file_format.value == "array_record"
  splits = {s: v.num_examples for s, v in builder.info.splits.items()}
  assert splits == {"train": 7464, "test": 1066}
  assert builder.info.features["label"].names == ["negative", "positive"]
  rows = list(movie_review_rows("rotten_tomatoes"))
  expected = {(text, int(label)) for text, label in rows}
  seen = {s: [(r["text"].decode(), int(r["label"])) for r in _records(builder, s)]
          for s in ("train", "test")}
  assert set(seen["train"]) | set(seen["test"]) == expected
  assert not set(seen["train"]) & set(seen["test"])
  assert np.bincount([label for _, label in seen["test"]]).tolist() == [533, 533]
  # The split is a fixed function of the data (seeded), not of the run.
  labels = np.array([int(label) for _, label in rows])
  again = rotten_tomatoes.split_indices(labels)
  test_texts = {rows[i][0] for i in again["test"]}
  assert test_texts == {text for text, _ in seen["test"]}


def test_validation_rule():
  assert base.validation_mask(25_000).sum() == 500
  assert base.validation_mask(200).sum() == 4
  assert base.validation_mask(2).sum() == 1 and base.validation_mask(1).sum() == 0
  np.testing.assert_array_equal(base.validation_mask(1000), base.validation_mask(1000))


def test_movie_reviews_text_slice(data_dir, tok):
  config = cfg(name="movie_reviews_text", max_documents=200, nsp=True, max_seq_length=128)
  builder = datasets.get_builder(config, data_dir)
  name = builder.builder_config.name
  assert name == f"v{tok.vocab_hash}_s128_nsp_p0.1_n200"
  meta = builder.info.metadata
  assert meta["train"]["documents"] == 196 and meta["validation"]["documents"] == 4
  for split in ("train", "validation"):
    records = _records(builder, split)
    assert len(records) == meta[split]["examples"] == builder.info.splits[split].num_examples
    assert sum(len(r["input_ids"]) for r in records) == meta[split]["example_tokens"]
    for r in records:
      ids = r["input_ids"]
      assert ids.dtype == np.int32 and len(ids) <= 128 and ids[0] == tok.cls_id
      assert (ids == tok.sep_id).sum() == 2 and ids[-1] == tok.sep_id
  labels = [r["next_sentence_label"] for r in _records(builder, "train")]
  assert 0.4 < np.mean(labels) < 0.6
  # Another packing mode or length is another config (directory); nothing collides.
  full = datasets.get_builder(cfg(name="movie_reviews_text", max_documents=200, nsp=False,
                                  max_seq_length=64), data_dir)
  assert full.builder_config.name == f"v{tok.vocab_hash}_s64_full_n200"
  assert "next_sentence_label" not in full.info.features
  assert all(len(r["input_ids"]) <= 64 for r in _records(full, "train"))
  assert full.info.metadata["train"]["tokens"] == meta["train"]["tokens"]  # same text


def test_movie_reviews_documents():
  docs = MovieReviewsText._documents(None)
  first = [next(docs) for _ in range(50)]
  assert not any("<br" in d for d in first) and sum("\n" in d for d in first) > 10
  assert first[0].startswith("I rented I AM CURIOUS-YELLOW")


# ----------------------------------------------------------------------------- local_text

@pytest.fixture
def corpus(tmp_path):
  # Paragraphs on single lines: a blank line would start a new document.
  reviews = [re.sub(r"(<br />)+", "\n", text) for text, _ in
             (row for row, _ in zip(movie_review_rows("imdb"), range(12)))]
  d = tmp_path / "corpus"
  (d / "sub").mkdir(parents=True)
  (d / "a.txt").write_text("\n\n".join(reviews[:4]) + "\n\n\n", encoding="utf-8")
  with gzip.open(d / "sub" / "b.txt.gz", "wt", encoding="utf-8") as f:
    f.write("\r\n\r\n".join(reviews[4:8]))
  (d / "c.jsonl").write_text("\n".join(json.dumps({"text": t, "id": i})
                                       for i, t in enumerate(reviews[8:11])) + "\n\n",
                             encoding="utf-8")
  (d / "empty.txt").write_bytes(b"")
  # One undecodable line of 11 (under local_text.MAX_INVALID_UTF8_FRACTION): skipped.
  (d / "latin1.txt").write_bytes(b"good first line\ncaf\xe9 au lait\n" +
                                 b"".join(b"line %d\n" % i for i in range(9)))
  (d / "ignored.csv").write_text("not,a,corpus\n")
  return d, reviews


def test_iter_documents_and_bad_input(corpus, caplog):
  d, reviews = corpus
  files = local_text.list_files(str(d))
  assert [os.path.relpath(f, d) for f in files] == [
      "a.txt", "c.jsonl", "empty.txt", "latin1.txt", os.path.join("sub", "b.txt.gz")]
  stats = local_text.ReadStats()
  with caplog.at_level(logging.WARNING, logger="bert_jax.datasets"):
    docs = list(local_text.iter_documents(files, stats))
  assert docs == [r.strip("\n") for r in reviews[:4]] + reviews[8:11] + [
      "good first line\n" + "\n".join(f"line {i}" for i in range(9))] + [
      r.strip("\n") for r in reviews[4:8]]
  counts = (stats.files, stats.documents, stats.empty_files, stats.invalid_utf8_lines)
  assert counts == (5, 12, 1, 1)
  messages = [r.getMessage() for r in caplog.records]
  assert any(f"{d / 'empty.txt'}: empty file; skipped" == m for m in messages)
  assert f"{d / 'latin1.txt'}: invalid UTF-8 at byte offset 19 (invalid continuation byte); " \
      "1 of 11 lines skipped" in messages


def test_local_text_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="matches no"):
    local_text.list_files(str(tmp_path / "*.txt"))
  (tmp_path / "x.csv").write_text("a\n")
  with pytest.raises(ValueError, match=r"x.csv: unsupported file type"):
    local_text.list_files(str(tmp_path / "*"))
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"text": "fine"}\n{"text": broken\n')
  with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
    list(local_text.iter_documents([str(bad)]))
  bad.write_text('{"text": "fine"}\n\n{"body": "no text"}\n')
  with pytest.raises(ValueError, match=r"bad.jsonl:3: expected a JSON object with a string"):
    list(local_text.iter_documents([str(bad)]))
  with pytest.raises(ValueError, match="needs data.text_files"):
    datasets.get_builder(cfg(name="local_text", text_files=""), str(tmp_path))


def test_local_text_builder(corpus, tmp_path, tok):
  d, _ = corpus
  (d / "ignored.csv").unlink()
  long_doc = " ".join(f"token{i % 50}" for i in range(30_000))  # one line, no punctuation
  (d / "long.txt").write_text(long_doc, encoding="utf-8")
  config = cfg(name="local_text", text_files=f"{d}/**/*.txt,{d}/*.jsonl,{d}/sub/*.gz",
               nsp=False, max_seq_length=128)
  builder = datasets.get_builder(config, str(tmp_path / "data"))
  assert builder.builder_config.name.startswith("f") and "_s128_full" in builder.builder_config.name
  meta = builder.info.metadata
  assert meta["read"] == {"files": 6, "documents": 13, "empty_files": 1,
                          "invalid_utf8_lines": 1, "empty_documents": 0}
  assert meta["train"]["documents"] + meta["validation"]["documents"] == 13
  (long_ids,) = tok.tokenize_to_ids([long_doc])
  assert meta["train"]["tokens"] + meta["validation"]["tokens"] > len(long_ids)
  records = _records(builder, "train") + _records(builder, "validation")
  assert all(len(r["input_ids"]) <= 128 for r in records)
  body = np.concatenate([r["input_ids"][1:-1] for r in records])
  assert (body != tok.sep_id).sum() == meta["train"]["tokens"] + meta["validation"]["tokens"]
  # Editing the corpus changes the fingerprint: a new config, prepared afresh.
  (d / "a.txt").write_text("A brand new document.\n", encoding="utf-8")
  assert datasets.get_builder(config, str(tmp_path / "data")).builder_config.name != \
      builder.builder_config.name


# ------------------------------------------------------------------- local_classification

def _csv(path, header, rows):
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
  return str(path)


def test_local_classification(tmp_path):
  train = _csv(tmp_path / "train.csv", ["text", "text_pair", "label"],
               [["A great, moving film.", "I loved it", "pos"],
                ["Dull, \"long\"\nand slow", "no", "neg"],
                ["Fine", "ok", "neutral"], ["Ça va", "bien", "pos"]])
  evalf = tmp_path / "eval.jsonl"
  evalf.write_text('{"text": "so so", "text_pair": "meh", "label": "neutral"}\n\n'
                   '{"text": "bad", "text_pair": "awful", "label": "neg"}\n', encoding="utf-8")
  config = cfg(name="local_classification", train_file=train, eval_file=str(evalf))
  builder = datasets.get_builder(config, str(tmp_path / "data"))
  assert builder.info.features["label"].names == ["neg", "neutral", "pos"]
  train_records = _records(builder, "train")
  rows = [(r["text"].decode(), r["text_pair"].decode(), int(r["label"])) for r in train_records]
  assert rows == [
      ("A great, moving film.", "I loved it", 2), ('Dull, "long"\nand slow', "no", 0),
      ("Fine", "ok", 1), ("Ça va", "bien", 2)]
  assert [int(r["label"]) for r in _records(builder, "validation")] == [1, 0]
  # Declared label names fix the order (and the set).
  declared = datasets.get_builder(cfg(name="local_classification", train_file=train,
                                      label_names="pos,neg,neutral"), str(tmp_path / "data"))
  assert declared.info.features["label"].names == ["pos", "neg", "neutral"]
  assert [int(r["label"]) for r in _records(declared, "train")] == [0, 1, 2, 0]
  assert list(declared.info.splits) == ["train"]


def test_numeric_labels_sort_numerically(tmp_path):
  train = _csv(tmp_path / "t.tsv".replace(".tsv", ".csv"), ["label", "text"],
               [["10", "a"], ["2", "b"], ["1", "c"]])
  rows, has_pair = local_classification.read_rows(train)
  assert not has_pair and local_classification.label_names_of(rows) == ["1", "2", "10"]
  tsv = tmp_path / "t.tsv"
  tsv.write_text("text\tlabel\nhello\t1\n", encoding="utf-8")
  assert local_classification.read_rows(str(tsv))[0][0]["text"] == "hello"


def test_classification_bad_input(tmp_path):
  no_label = _csv(tmp_path / "no_label.csv", ["text", "sentiment"], [["a", "1"]])
  with pytest.raises(ValueError, match=r"no_label.csv: missing column 'label' "
                                       r"\(header has \['text', 'sentiment'\]\)"):
    local_classification.read_rows(no_label)
  no_text = _csv(tmp_path / "no_text.csv", ["sentence", "label"], [["a", "1"]])
  with pytest.raises(ValueError, match=r"no_text.csv: missing column 'text'"):
    local_classification.read_rows(no_text)
  empty = tmp_path / "empty.csv"
  empty.write_text("")
  with pytest.raises(ValueError, match=r"empty.csv: empty file"):
    local_classification.read_rows(str(empty))
  latin = tmp_path / "latin.csv"
  latin.write_bytes(b"text,label\ncaf\xe9,1\n")
  with pytest.raises(ValueError, match=r"latin.csv: invalid UTF-8 at byte offset 14"):
    local_classification.read_rows(str(latin))
  short = tmp_path / "short.csv"
  short.write_text("text,label\nonly text\n")
  with pytest.raises(ValueError, match=r"short.csv:2: missing value for 'label'"):
    local_classification.read_rows(str(short))
  badjson = tmp_path / "bad.jsonl"
  badjson.write_text('{"text": "a", "label": 1}\n{"text": "b"}\n')
  with pytest.raises(ValueError, match=r"bad.jsonl:2: missing field 'label'"):
    local_classification.read_rows(str(badjson))

  train = _csv(tmp_path / "train.csv", ["text", "label"], [["good", "pos"], ["bad", "neg"]])
  evalf = _csv(tmp_path / "eval.csv", ["text", "label"], [["fine", "pos"], ["what", "neutral"]])
  with pytest.raises(ValueError, match=r"eval.csv:3: label 'neutral' is not one of the "
                                       r"labels of .*train.csv \['neg', 'pos'\] \(declare"):
    datasets.get_builder(cfg(name="local_classification", train_file=train, eval_file=evalf),
                         str(tmp_path / "data"))
  with pytest.raises(ValueError, match=r"train.csv:3: label 'neg' is not one of the "
                                       r"declared labels \['pos', 'negative'\]"):
    datasets.get_builder(cfg(name="local_classification", train_file=train,
                             label_names=["pos", "negative"]), str(tmp_path / "data"))
  with pytest.raises(FileNotFoundError, match="missing.csv: classification file not found"):
    datasets.get_builder(cfg(name="local_classification", train_file=str(tmp_path / "missing.csv")),
                         str(tmp_path / "data"))


def _local_text(files, data_dir):
  return datasets.get_builder(cfg(name="local_text", text_files=files, nsp=False,
                                  max_seq_length=32), data_dir)


def test_local_text_unusable_files_are_one_error_before_any_example(tmp_path, caplog):
  """Issue 13: an empty, a latin-1 and a binary corpus each give one DataError naming the file
  (before: 'local_text: no documents to prepare (source: <glob>)' for all three)."""
  from bert_jax.errors import DataError
  data = str(tmp_path / "data")
  empty = tmp_path / "empty.txt"
  empty.write_bytes(b"")
  with pytest.raises(DataError, match=rf"^{re.escape(str(empty))}: empty file; no documents"):
    _local_text(str(empty), data)
  blank = tmp_path / "blank.txt"
  blank.write_text("\n\n  \n")
  with pytest.raises(DataError, match=r"no documents in 2 files \(1 empty, 1 only blank lines"):
    _local_text(f"{empty},{blank}", data)
  latin = tmp_path / "latin.txt"
  latin.write_bytes("Un café crème.\nLa forêt était là.\n\nÀ bientôt.\n".encode("latin-1"))
  with pytest.raises(DataError, match=rf"^{re.escape(str(latin))}: not UTF-8 text \(invalid "
                                      r"UTF-8 at byte offset 6: invalid continuation byte; 3 "
                                      r"of 3 lines\); convert it"):
    _local_text(str(latin), data)
  binary = tmp_path / "binary.txt"
  binary.write_bytes(bytes(np.random.RandomState(0).randint(0, 256, 20_000, dtype=np.uint8)))
  with caplog.at_level(logging.WARNING, logger="bert_jax.datasets"):
    with pytest.raises(DataError, match=rf"^{re.escape(str(binary))}: binary data, not text "
                                        r"\(a NUL byte at offset \d+\)"):
      _local_text(str(binary), data)
  assert not caplog.records  # no per-line warnings before the error
  assert not [f for _, _, names in os.walk(data) for f in names]  # nothing was prepared


def test_local_text_few_bad_lines_give_one_warning_per_file(tmp_path, caplog):
  text = tmp_path / "mostly.txt"
  good = b"".join(b"A plain sentence number %d.\n" % i for i in range(40))
  text.write_bytes(good + b"caf\xe9\n" + good + b"na\xefve\n")  # 2 of 82 lines
  stats = local_text.ReadStats()
  with caplog.at_level(logging.WARNING, logger="bert_jax.datasets"):
    docs = list(local_text.iter_documents([str(text)], stats))
  assert len(docs) == 1 and docs[0].count("\n") == 79 and stats.invalid_utf8_lines == 2
  assert [r.getMessage() for r in caplog.records] == [
      f"{text}: invalid UTF-8 at byte offset {len(good) + 3} (invalid continuation byte); "
      "2 of 82 lines skipped"]


def test_check_enough_examples():
  from bert_jax.errors import DataError
  info = {"name": "local_text", "split_sizes": {"train": 3, "validation": 1},
          "metadata": {"train": {"documents": 1}}}
  base.check_enough_examples(info, "train", 3)
  with pytest.raises(DataError, match=r"^local_text: split 'train' has 3 examples from 1 "
                                      r"documents, fewer than one batch \(config.batch_size=8\)"):
    base.check_enough_examples(info, "train", 8)
  with pytest.raises(DataError, match=r"no split 'test' \(it has \['train', 'validation'\]\)"):
    base.check_enough_examples(info, "test", 1)


def test_classification_column_keys_are_honoured(tmp_path):
  """data.text_key / data.label_key / data.text_pair_key name the columns (label_key was
  ignored before: a 'sentiment' column was 'missing column label')."""
  train = _csv(tmp_path / "train.csv", ["review", "sentiment", "question"],
               [["good film", "pos", "q1"], ["bad film", "neg", "q2"]])
  config = cfg(name="local_classification", train_file=train, text_key="review",
               label_key="sentiment", text_pair_key="")
  builder = datasets.get_builder(config, str(tmp_path / "data"))
  assert builder.info.features["label"].names == ["neg", "pos"]
  assert [(r["text"].decode(), int(r["label"])) for r in _records(builder, "train")] == [
      ("good film", 1), ("bad film", 0)]
  paired = datasets.get_builder(cfg(name="local_classification", train_file=train,
                                    text_key="review", label_key="sentiment",
                                    text_pair_key="question"), str(tmp_path / "data"))
  assert [r["text_pair"].decode() for r in _records(paired, "train")] == ["q1", "q2"]
  assert paired.builder_config.name != builder.builder_config.name
  with pytest.raises(ValueError, match=r"train.csv: missing column 'label' \(header has "
                                       r"\['review', 'sentiment', 'question'\]\); set "
                                       r"data.label_key to the column that holds it"):
    datasets.get_builder(cfg(name="local_classification", train_file=train, text_key="review"),
                         str(tmp_path / "data"))
  jsonl = tmp_path / "t.jsonl"
  jsonl.write_text('{"review": "fine", "y": 1}\n{"review": "meh", "y": null}\n')
  columns = local_classification.Columns(text="review", label="y")
  with pytest.raises(ValueError, match=r"t.jsonl:2: empty label"):
    local_classification.read_rows(str(jsonl), columns)
  with pytest.raises(ValueError,
                     match=r"t.jsonl:1: missing fields 'text', 'label' .*set data.text_key"):
    local_classification.read_rows(str(jsonl))


def test_classification_rows_with_empty_text_are_skipped_and_counted(tmp_path, caplog):
  from bert_jax.errors import DataError
  train = _csv(tmp_path / "gaps.csv", ["text", "label"],
               [["good", "pos"], ["", "neg"], ["  ", "pos"], ["bad", "neg"]])
  with caplog.at_level(logging.WARNING, logger="bert_jax.datasets"):
    rows, _ = local_classification.read_rows(train)
    local_classification.read_rows(train)  # warned once per file
  assert [r["text"] for r in rows] == ["good", "bad"]
  assert [r.getMessage() for r in caplog.records] == [
      f"{train}: skipped 2 of 4 rows with empty text (first at line 3)"]
  blank = _csv(tmp_path / "blank.csv", ["text", "label"], [["", "pos"]])
  with pytest.raises(DataError, match=r"blank.csv: no row has text \(all 1 are empty\)"):
    local_classification.read_rows(blank)


def test_classification_errors_are_data_errors(tmp_path):
  """Each is one line naming the file (and line): main.py prints it without a traceback."""
  from bert_jax.errors import DataError
  empty = tmp_path / "empty.csv"
  empty.write_text("")
  broken = tmp_path / "broken.jsonl"
  broken.write_text('{"text": "a", "label": 1}\n{"text": broken\n')
  header_only = tmp_path / "header.csv"
  header_only.write_text("text,label\n")
  for path, message in [(empty, r"empty.csv: empty file"),
                        (broken, r"broken.jsonl:2: not valid JSON \(Expecting value at column "
                                 r"10\)"),
                        (header_only, r"header.csv: header but no rows")]:
    with pytest.raises(DataError, match=message):
      local_classification.read_rows(str(path))
  train = _csv(tmp_path / "train.csv", ["text", "text_pair", "label"], [["a", "b", "x"]])
  evalf = _csv(tmp_path / "eval.csv", ["text", "label"], [["a", "x"]])
  with pytest.raises(DataError, match=r"eval.csv: lacks a text pair column but .*train.csv "
                                      r"does"):
    datasets.get_builder(cfg(name="local_classification", train_file=train, eval_file=evalf),
                         str(tmp_path / "data"))


# --------------------------------------------------------------- prepared TFDS, by name

class TinySst2Like(tfds.core.GeneratorBasedBuilder):
  """Stands in for a user's prepared glue/sst2: `sentence`, `label`, configs."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="sst2")]
  code_path = base.module_path(__file__)

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "sentence": tfds.features.Text(),
        "label": tfds.features.ClassLabel(names=["negative", "positive"]),
        "idx": tfds.features.Scalar(np.int32)}))

  def _split_generators(self, dl_manager):
    rows = [(t, int(label)) for (t, label), _ in
            zip(movie_review_rows("rotten_tomatoes"), range(60))]
    return {"train": self._generate_examples(rows[:40]),
            "validation": self._generate_examples(rows[40:])}

  def _generate_examples(self, rows):
    for i, (text, label) in enumerate(rows):
      yield i, {"sentence": text, "label": label, "idx": i}


@pytest.fixture(scope="module")
def prepared_by_name(data_dir):
  TinySst2Like(data_dir=data_dir).download_and_prepare(file_format="array_record")
  return "tiny_sst2_like/sst2"


def test_prepared_dataset_by_name(prepared_by_name, data_dir, tmp_path):
  config = cfg(name=prepared_by_name, text_key="sentence", nsp=True, max_seq_length=32)
  builder = datasets.get_builder(config, data_dir)
  assert builder.info.splits["validation"].num_examples == 20
  from bert_jax.tasks import classification
  info = classification.data_info(config, data_dir)
  assert info["label_names"] == ["negative", "positive"]
  batches = list(classification.make_iterator(
      config, split="validation", global_batch_size=8, seed=0, shuffle=False, num_epochs=1,
      data_dir=data_dir))
  assert len(batches) == 3 and sum(int(b["example_mask"].sum()) for b in batches) == 20
  first = builder.as_data_source("validation")[0]
  assert batches[0]["label"][0] == first["label"]
  expected = Tokenizer().encode(first["sentence"].decode(), max_length=32)["input_ids"]
  np.testing.assert_array_equal(batches[0]["input_ids"][0], expected)
  # Used as a pretraining corpus: tokenized and packed once by `tfds_text`.
  corpus = datasets.get_builder(config, data_dir, kind="corpus")
  assert corpus.name == "tfds_text"
  assert corpus.builder_config.name.startswith("tiny_sst2_like-sst2_v")
  meta = corpus.info.metadata
  assert meta["train"]["documents"] + meta["validation"]["documents"] == 40
  with pytest.raises(ValueError,
                     match=r"no text feature 'text' \(features: \['idx', 'label', 'sentence'\]\)"):
    datasets.get_builder(cfg(name=prepared_by_name), data_dir, kind="corpus")
  with pytest.raises(FileNotFoundError, match=r"data.name='glue/sst2': no prepared TFDS dataset"):
    datasets.get_builder(cfg(name="glue/sst2"), data_dir)
  # A dataset prepared as tfrecord only cannot be read without TensorFlow: say so.
  copy = tmp_path / "tiny_sst2_like" / "sst2" / "1.0.0"
  shutil.copytree(builder.data_dir, copy)
  info = json.loads((copy / "dataset_info.json").read_text())
  info["fileFormat"] = "tfrecord"
  (copy / "dataset_info.json").write_text(json.dumps(info))
  with pytest.raises(ValueError, match=r"prepared as tfrecord, but reading without "
                                       r"TensorFlow needs array_record"):
    datasets.get_builder(cfg(name=prepared_by_name), str(tmp_path))


def test_wrong_task(data_dir):
  with pytest.raises(ValueError, match="classification dataset, not a corpus"):
    datasets.get_builder(cfg(name="rotten_tomatoes"), data_dir, kind="corpus")
  with pytest.raises(ValueError, match="pretraining corpus, not a labelled dataset"):
    datasets.get_builder(cfg(name="movie_reviews_text"), data_dir, kind="labelled")


@pytest.mark.slow
def test_full_movie_reviews_corpus(tmp_path):
  """The whole embedded corpus: 25,000 reviews, ~7.4M wordpieces (about a minute)."""
  builder = datasets.get_builder(cfg(name="movie_reviews_text"), str(tmp_path))
  meta = builder.info.metadata
  assert meta["train"]["documents"] == 24_500 and meta["validation"]["documents"] == 500
  tokens = meta["train"]["tokens"] + meta["validation"]["tokens"]
  assert 7_300_000 < tokens < 7_500_000
  assert builder.info.splits["train"].num_examples > 80_000
