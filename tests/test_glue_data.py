"""GLUE TSV readers (bert_jax.datasets.glue_tsv): quirks, errors, real counts, the builder."""

import os

import ml_collections
import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")

from bert_jax import datasets, input_pipeline  # noqa: E402
from bert_jax.datasets import glue_tsv  # noqa: E402
from bert_jax.errors import ConfigError, DataError  # noqa: E402

NLI = "index\tsentence1\tsentence2\tlabel\n"
STSB = ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
        "\tscore\n")


def _write(path, text, bom=False):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
  return str(path)


def _stsb_row(i, a, b, score):
  return f"{i}\tmain-captions\tMSRvid\t2012test\t000{i}\tnone\tnone\t{a}\t{b}\t{score}\n"


def test_cola_headerless_no_final_newline(tmp_path):
  path = _write(tmp_path / "dev.tsv", 'gj04\t1\t\tHe said "hi.\nclc95\t0\t*\tHim left')
  rows = glue_tsv.read_glue("cola", path)
  assert rows == [{"text": 'He said "hi.', "label": 1, "line": 1},
                  {"text": "Him left", "label": 0, "line": 2}]


def test_mrpc_bom_and_bare_quotes(tmp_path):
  text = ("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
          '1\t7\t8\the called " the witness "\t" The witness " , he said .\n'
          "0\t9\t10\ta\tb\n")
  rows = glue_tsv.read_glue("mrpc", _write(tmp_path / "train.tsv", text, bom=True))
  assert rows[0] == {"text": 'he called " the witness "', "label": 1, "line": 2,
                     "text_pair": '" The witness " , he said .'}
  assert [r["label"] for r in rows] == [1, 0]


def test_sst2_stsb_rte_wnli(tmp_path):
  sst = glue_tsv.read_glue("sst2", _write(tmp_path / "s.tsv", "sentence\tlabel\nit 's ok \t1\n"))
  assert sst == [{"text": "it 's ok ", "label": 1, "line": 2}]
  stsb = glue_tsv.read_glue("stsb", _write(tmp_path / "b.tsv", STSB + _stsb_row(0, "A", "B",
                                                                                 "3.800")))
  assert stsb == [{"text": "A", "text_pair": "B", "label": 3.8, "line": 2}]
  rte = glue_tsv.read_glue("rte", _write(tmp_path / "r.tsv", NLI + "0\ta\tb\tnot_entailment\n"
                                         "1\tc\td\tentailment\r\n"))
  assert [(r["text"], r["text_pair"], r["label"]) for r in rte] == [("a", "b", 1),
                                                                     ("c", "d", 0)]
  wnli = glue_tsv.read_glue("wnli", _write(tmp_path / "w.tsv", NLI + "0\ta\tb\t1\n"))
  assert wnli[0]["label"] == 1 and glue_tsv.SPECS["wnli"].label_names[1] == "entailment"


def test_specs():
  assert set(glue_tsv.SPECS) == {"cola", "sst2", "mrpc", "stsb", "rte", "wnli", "qnli"}
  assert glue_tsv.SPECS["stsb"].problem_type == "regression"
  assert glue_tsv.SPECS["stsb"].label_names == ()
  assert not glue_tsv.SPECS["qnli"].has_train
  assert glue_tsv.SPECS["cola"].header is None
  assert glue_tsv.SPECS["rte"].label_names == ("entailment", "not_entailment")


@pytest.mark.parametrize("task,text,message", [
    ("rte", "index\tsentence1\tsentence2\tgold\n0\ta\tb\tentailment\n",
     "expected header ['index', 'sentence1', 'sentence2', 'label'] for glue/rte, found "
     "['index', 'sentence1', 'sentence2', 'gold']"),
    ("rte", NLI + "0\ta\tb\tentailment\n1\ta\tb\n",
     ":3: expected 4 tab-separated columns, found 3"),
    ("rte", NLI + "0\ta\tb\tneutral\n",
     ":2: label 'neutral' is not one of ['entailment', 'not_entailment']"),
    ("cola", "gj04\t2\t\tx\n", ":1: label '2' is not one of ['0', '1']"),
    ("stsb", STSB + _stsb_row(0, "A", "B", "abc"), ":2: score 'abc' is not a number"),
])
def test_errors(tmp_path, task, text, message):
  path = _write(tmp_path / "f.tsv", text)
  with pytest.raises(DataError) as e:
    glue_tsv.read_glue(task, path)
  assert str(e.value).startswith(path) and message in str(e.value)
  assert "\n" not in str(e.value)


def test_not_found_and_not_utf8(tmp_path):
  missing = str(tmp_path / "RTE" / "dev.tsv")
  with pytest.raises(DataError, match="RTE/dev.tsv: file not found .*CoLA/, SST-2/"):
    glue_tsv.read_glue("rte", missing)
  path = tmp_path / "bad.tsv"
  path.write_bytes(NLI.encode() + b"0\tcaf\xe9\tb\tentailment\n")
  with pytest.raises(DataError, match=r"bad.tsv: invalid UTF-8 at byte offset 37 "):
    glue_tsv.read_glue("rte", str(path))


COUNTS = {"cola": (8551, 1043), "sst2": (67349, 872), "mrpc": (3668, 408),
          "stsb": (5749, 1500), "rte": (2490, 277), "wnli": (635, 71), "qnli": (None, 5463)}


def test_real_counts():
  root = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "glue")
  if not os.path.isdir(root):
    pytest.skip("../shared/data/glue is absent (the real GLUE TSV files)")
  for task, (train, dev) in COUNTS.items():
    files = glue_tsv.split_files(task, root)
    found = {s: len(glue_tsv.read_glue(task, p)) for s, p in files.items()}
    assert found == ({"validation": dev} if train is None else
                     {"train": train, "validation": dev}), task


def _config(**kw):
  return ml_collections.ConfigDict({"name": "glue_tsv", "glue_task": "rte", "glue_dir": "", **kw})


def test_builder_matches_reader(tmp_path):
  glue = tmp_path / "glue"
  _write(glue / "RTE" / "train.tsv", NLI + '0\tHe said "yes\tb\tentailment\n'
         "1\tc\td\tnot_entailment\n2\te\tf\tentailment\n")
  _write(glue / "RTE" / "dev.tsv", NLI + "0\tg\th\tnot_entailment")
  config = _config()
  config.glue_dir = str(glue)
  builder = datasets.classification_builder(config, data_dir=str(tmp_path / "tfds"))
  name = builder.builder_config.name
  assert name.startswith("rte_") and len(name) == 12
  assert builder.info.features["label"].names == ["entailment", "not_entailment"]
  for split, file in (("train", "train.tsv"), ("validation", "dev.tsv")):
    source = input_pipeline.data_source(builder, split)
    got = [(input_pipeline.text(r["text"]), input_pipeline.text(r["text_pair"]), int(r["label"]))
           for r in (source[i] for i in range(len(source)))]
    rows = glue_tsv.read_glue("rte", str(glue / "RTE" / file))
    assert got == [(r["text"], r["text_pair"], r["label"]) for r in rows]


def test_builder_config_errors(tmp_path):
  with pytest.raises(ConfigError, match="data.glue_task='mnli' is not one of cola, sst2"):
    datasets.classification_builder(_config(glue_task="mnli"), data_dir=str(tmp_path))
  with pytest.raises(ConfigError, match="set data.glue_dir to the folder holding CoLA/"):
    datasets.classification_builder(_config(), data_dir=str(tmp_path))
  with pytest.raises(DataError, match="file not found"):
    datasets.classification_builder(_config(glue_dir=str(tmp_path)), data_dir=str(tmp_path))


def test_builder_stsb_scores(tmp_path):
  glue = tmp_path / "glue"
  _write(glue / "STS-B" / "train.tsv", STSB + _stsb_row(0, "A", "B", "3.800"))
  _write(glue / "STS-B" / "dev.tsv", STSB + _stsb_row(0, "C", "D", "0.5"))
  builder = datasets.classification_builder(
      _config(glue_task="stsb", glue_dir=str(glue)), data_dir=str(tmp_path / "tfds"))
  assert builder.info.features["label"].np_dtype == np.float32
  record = input_pipeline.data_source(builder, "validation")[0]
  assert input_pipeline.text(record["text_pair"]) == "D"
  assert float(record["label"]) == pytest.approx(0.5)
