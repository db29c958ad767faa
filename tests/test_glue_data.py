"""GLUE TSV readers (bert_jax.datasets.glue_tsv): quirks, errors, real counts, the builder."""

import json
import os

import ml_collections
import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")

from bert_jax import datasets, input_pipeline
from bert_jax.datasets import glue_tsv
from bert_jax.errors import ConfigError, DataError

NLI = "index\tsentence1\tsentence2\tlabel\n"
GLUE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                    "glue")
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
  assert list(glue_tsv.SPECS) == ["cola", "sst2", "mrpc", "stsb", "rte", "wnli", "qnli"]
  stsb, qnli = glue_tsv.SPECS["stsb"], glue_tsv.SPECS["qnli"]
  assert (stsb.problem_type, stsb.label_names, stsb.metrics) == ("regression", (),
                                                                 ("pearson", "spearman"))
  assert qnli.splits == ("validation",) and qnli.label_ids == {"entailment": 0,
                                                               "not_entailment": 1}
  assert glue_tsv.SPECS["cola"].header is None
  assert glue_tsv.SPECS["mrpc"].metrics == ("f1", "accuracy")
  for spec in glue_tsv.SPECS.values():
    assert spec.header is None or len(spec.header) == spec.num_columns
    assert len(spec.file_labels) == len(spec.label_names)


def test_specs_match_tfds_glue():
  """Folders, label names and text feature names as TFDS's own glue builder has them."""
  glue = pytest.importorskip("tensorflow_datasets.text.glue")
  tfds_configs = {c.name: c for c in glue.Glue.BUILDER_CONFIGS}
  for task, spec in glue_tsv.SPECS.items():
    c = tfds_configs[task]
    assert spec.folder == c.data_dir, task
    assert spec.label_names == tuple(c.label_classes or ()), task
    assert spec.tfds_keys == tuple(c.text_features), task
    assert (spec.pair is not None) == (len(c.text_features) == 2), task


def _tfds_examples(task, path, split):
  """TFDS glue's own generator over `path`, as (texts..., label id or score)."""
  glue = pytest.importorskip("tensorflow_datasets.text.glue")
  spec = glue_tsv.SPECS[task]
  builder = glue.Glue(config=task, data_dir=os.path.dirname(path))
  out = []
  for _, ex in builder._generate_examples(data_file=path, split=split):
    label = ex["label"]
    label = spec.label_names.index(label) if isinstance(label, str) else float(label)
    out.append(tuple(ex[k] for k in spec.tfds_keys) + (label,))
  return out


def _ours(task, path):
  return [(r["text"],) + ((r["text_pair"],) if "text_pair" in r else ())
          + (float(np.float32(r["label"])) if task == "stsb" else r["label"],)
          for r in glue_tsv.read_glue(task, path)]


FIXTURES = {
    "cola": 'gj04\t1\t\tHe said "hi.\nclc95\t0\t*\tHim left',
    "sst2": 'sentence\tlabel\na " quoted \t1\nbad \t0\n',
    "stsb": STSB + _stsb_row(0, "A", "B", "3.800") + _stsb_row(1, '"C', "D", "0"),
    "rte": NLI + "0\ta\tb\tnot_entailment\n1\tc\td\tentailment",
    "wnli": NLI + "0\ta\tb\t1\n1\tc\td\t0\n",
    "qnli": "index\tquestion\tsentence\tlabel\n0\tWho?\tHe.\tentailment\n",
}


@pytest.mark.parametrize("task", sorted(FIXTURES))
def test_fixture_examples_equal_tfds_glue(tmp_path, task):
  """TFDS glue's reader (csv, QUOTE_NONE) gives the same examples from the same file."""
  path = _write(tmp_path / "train.tsv", FIXTURES[task])
  assert _ours(task, path) == _tfds_examples(task, path, "train")


def test_real_examples_equal_tfds_glue():
  """Every real file but MRPC's (TFDS builds MRPC from Microsoft's original files)."""
  if not os.path.isdir(GLUE):
    pytest.skip(f"{GLUE} is absent (the real GLUE TSV files; ../shared/data/README.md)")
  for task in glue_tsv.SPECS:
    if task == "mrpc":
      continue
    for split, path in glue_tsv.split_files(task, GLUE).items():
      assert _ours(task, path) == _tfds_examples(task, path, "train" if split == "train"
                                                 else "dev"), (task, split)


@pytest.mark.parametrize("task,text,message", [
    ("rte", "index\tsentence1\tsentence2\tgold\n0\ta\tb\tentailment\n",
     ": expected header ['index', 'sentence1', 'sentence2', 'label'] for glue/rte, found "
     "['index', 'sentence1', 'sentence2', 'gold']"),
    ("sst2", "", ": expected header ['sentence', 'label'] for glue/sst2, found []"),
    ("rte", NLI + "0\ta\tb\tentailment\n1\ta\tb\n",
     ":3: expected 4 tab-separated columns for glue/rte, found 3"),
    ("rte", NLI + "0\ta\tb\tneutral\n",
     ":2: label 'neutral' is not one of ['entailment', 'not_entailment'] (glue/rte)"),
    ("cola", "gj04\t2\t\tx\n", ":1: label '2' is not one of ['0', '1'] (glue/cola)"),
    ("cola", "source\tlabel\tmark\tsentence\n",
     ":1: label 'label' is not one of ['0', '1'] (glue/cola); CoLA's files have no header"),
    ("stsb", STSB + _stsb_row(0, "A", "B", "abc"), ":2: score 'abc' is not a number"),
    ("stsb", STSB + _stsb_row(0, "A", "B", "nan"), ":2: score 'nan' is not a number"),
    ("wnli", NLI, ": no rows"),
])
def test_errors(tmp_path, task, text, message):
  path = _write(tmp_path / "f.tsv", text)
  with pytest.raises(DataError) as e:
    glue_tsv.read_glue(task, path)
  assert str(e.value).startswith(path + message)
  assert "\n" not in str(e.value)


def test_not_found_not_utf8_unknown_task(tmp_path):
  missing = str(tmp_path / "RTE" / "dev.tsv")
  with pytest.raises(DataError, match=f"^{missing}: file not found .*layout: CoLA/, SST-2/"):
    glue_tsv.read_glue("rte", missing)
  path = tmp_path / "bad.tsv"
  path.write_bytes(NLI.encode() + b"0\tcaf\xe9\tb\tentailment\n")
  with pytest.raises(DataError, match=r"bad.tsv: invalid UTF-8 at byte offset 37 "):
    glue_tsv.read_glue("rte", str(path))
  with pytest.raises(ConfigError, match="glue task 'mnli' is not one of cola, sst2"):
    glue_tsv.read_glue("mnli", str(path))


COUNTS = {"cola": (8551, 1043), "sst2": (67349, 872), "mrpc": (3668, 408),
          "stsb": (5749, 1500), "rte": (2490, 277), "wnli": (635, 71), "qnli": (None, 5463)}


def test_real_counts():
  if not os.path.isdir(GLUE):
    pytest.skip(f"{GLUE} is absent (the real GLUE TSV files; ../shared/data/README.md)")
  for task, (train, dev) in COUNTS.items():
    files = glue_tsv.split_files(task, GLUE)
    found = {s: len(glue_tsv.read_glue(task, p)) for s, p in files.items()}
    assert found == ({"validation": dev} if train is None else
                     {"train": train, "validation": dev}), task


def _config(**kw):
  return ml_collections.ConfigDict({"name": "glue_tsv", "glue_task": "rte", "glue_dir": "", **kw})


def _records(builder, split):
  source = input_pipeline.data_source(builder, split)
  return [source[i] for i in range(len(source))]


def test_builder_matches_reader(tmp_path):
  glue = tmp_path / "glue"
  _write(glue / "RTE" / "train.tsv", NLI + '0\tHe said "yes\tb\tentailment\n'
         "1\tc\td\tnot_entailment\n2\te\tf\tentailment\n")
  _write(glue / "RTE" / "dev.tsv", NLI + "0\tg\th\tnot_entailment")
  builder = datasets.classification_builder(_config(glue_dir=str(glue)),
                                            data_dir=str(tmp_path / "tfds"))
  name = builder.builder_config.name
  assert name.startswith("rte_") and len(name) == 12
  assert builder.info.features["label"].names == ["entailment", "not_entailment"]
  assert "Wang" in builder.info.citation
  for split, file in (("train", "train.tsv"), ("validation", "dev.tsv")):
    got = [(input_pipeline.text(r["text"]), input_pipeline.text(r["text_pair"]), int(r["label"]))
           for r in _records(builder, split)]
    rows = glue_tsv.read_glue("rte", str(glue / "RTE" / file))
    assert got == [(r["text"], r["text_pair"], r["label"]) for r in rows]


def test_builder_qnli_has_only_validation(tmp_path):
  glue = tmp_path / "glue"
  _write(glue / "QNLI" / "dev.tsv", FIXTURES["qnli"])
  builder = datasets.classification_builder(_config(glue_task="qnli", glue_dir=str(glue)),
                                            data_dir=str(tmp_path / "tfds"))
  assert set(builder.info.splits) == {"validation"}
  record = _records(builder, "validation")[0]
  assert (input_pipeline.text(record["text"]), int(record["label"])) == ("Who?", 0)


def test_builder_config_errors(tmp_path):
  with pytest.raises(ConfigError, match="data.glue_task='mnli' is not one of cola, sst2"):
    datasets.classification_builder(_config(glue_task="mnli"), data_dir=str(tmp_path))
  with pytest.raises(ConfigError, match="set data.glue_dir to the folder holding CoLA/"):
    datasets.classification_builder(_config(), data_dir=str(tmp_path))
  with pytest.raises(DataError, match="nowhere: not a folder"):
    datasets.classification_builder(_config(glue_dir=str(tmp_path / "nowhere")),
                                    data_dir=str(tmp_path))
  _write(tmp_path / "glue" / "RTE" / "dev.tsv", FIXTURES["rte"])  # train.tsv missing
  train = tmp_path / "glue" / "RTE" / "train.tsv"
  with pytest.raises(DataError, match=f"^{train}: file not found"):
    datasets.classification_builder(_config(glue_dir=str(tmp_path / "glue")),
                                    data_dir=str(tmp_path))


def test_builder_stsb_scores(tmp_path):
  glue = tmp_path / "glue"
  _write(glue / "STS-B" / "train.tsv", STSB + _stsb_row(0, "A", "B", "3.800"))
  _write(glue / "STS-B" / "dev.tsv", STSB + _stsb_row(0, "C", "D", "0.5") +
         _stsb_row(1, "E", "F", "5.000"))
  builder = datasets.classification_builder(
      _config(glue_task="stsb", glue_dir=str(glue)), data_dir=str(tmp_path / "tfds"))
  assert builder.info.features["label"].np_dtype == np.float32
  records = _records(builder, "validation")
  assert [input_pipeline.text(r["text_pair"]) for r in records] == ["D", "F"]
  assert [float(r["label"]) for r in records] == [0.5, 5.0]


def _rte_fixture(glue, n_train=64, n_eval=16):
  """An RTE folder whose label is whether the hypothesis repeats the premise's verb."""
  def rows(n, seed):
    rs = np.random.RandomState(seed)
    out = []
    for i in range(n):
      verb, other = rs.choice(["runs", "sleeps", "sings", "reads"], 2, replace=False)
      same = i % 2 == 0
      out.append(f"{i}\tthe cat {verb} at home .\tthe cat {verb if same else other} ."
                 f"\t{'entailment' if same else 'not_entailment'}\n")
    return NLI + "".join(out)
  _write(glue / "RTE" / "train.tsv", rows(n_train, 0))
  _write(glue / "RTE" / "dev.tsv", rows(n_eval, 1))
  return str(glue)


@pytest.mark.slow
def test_rte_fine_tunes_end_to_end(tmp_path):
  """data.name=glue_tsv through the classification task: batches, a few train steps, eval."""
  from bert_jax import train
  from bert_jax.tasks.classification import task as classification
  from experiments import finetune_csv
  c = finetune_csv.get_config("scratch")
  c.data.update(name="glue_tsv", glue_task="rte", glue_dir=_rte_fixture(tmp_path / "glue"),
                data_dir=str(tmp_path / "tfds"), max_seq_length=32)
  batch = next(iter(classification.make_iterator(
      c.data, split="validation", global_batch_size=8, seed=0, shuffle=False, num_epochs=1)))
  assert batch["input_ids"].shape == (8, 32) and list(batch["label"]) == [0, 1] * 4
  assert (batch["token_type_ids"].max(axis=1) == 1).all()  # the pair is the second segment
  c.model.update(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=32)
  c.update(batch_size=8, eval_batch_size=16, num_train_steps=3, log_every_steps=1,
           eval_every_steps=3, checkpoint_every_steps=3)
  c.optimizer.update(warmup_steps=0)
  metrics = train.train_and_evaluate(c, str(tmp_path / "workdir"))
  assert np.isfinite(metrics["loss"])
  # The accuracy is the share of right predictions in predictions.jsonl (one per example).
  rows = [json.loads(line)
          for line in open(tmp_path / "workdir" / "predictions.jsonl", encoding="utf-8")]
  assert len(rows) == metrics["num_examples"] > 0
  assert metrics["accuracy"] == pytest.approx(np.mean([r["label"] == r["predicted"]
                                                       for r in rows]), abs=1e-6)
