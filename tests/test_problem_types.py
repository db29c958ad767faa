"""config.problem_type of the classification task: readers, metrics, loss parity with
transformers, export through transformers' pipeline, packing, tiny end-to-end runs."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

from bert_jax.datasets import local_classification as lc
from bert_jax.errors import ConfigError, DataError
from bert_jax.tasks.classification import metrics
from bert_jax.tasks.classification.task import Classification

REG, MULTI = "regression", "multi_label_classification"


def _write(path, text):
  path.write_text(text)
  return str(path)


# --- readers ---------------------------------------------------------------------------------

def test_regression_reader_and_error(tmp_path):
  path = _write(tmp_path / "r.csv", "text,label\na,1.5\nb,-2\n")
  rows, _ = lc.read_rows(path, problem_type=REG)
  assert [r["label"] for r in rows] == [1.5, -2.0]
  bad = _write(tmp_path / "bad.csv", "text,label\na,1.5\nb,abc\n")
  with pytest.raises(DataError, match=r"bad.csv:3: label 'abc' is not a number "
                                      r"\(problem_type='regression'\)"):
    lc.read_rows(bad, problem_type=REG)


def test_multi_label_readers(tmp_path):
  csv_path = _write(tmp_path / "m.csv", 'text,label\na,x|y\nb,\nc,y\n')
  rows, _ = lc.read_rows(csv_path, problem_type=MULTI)
  assert [r["label"] for r in rows] == [["x", "y"], [], ["y"]]
  tsv = _write(tmp_path / "m.tsv", "text\tlabel\na\tx;z\n")
  rows, _ = lc.read_rows(tsv, problem_type=MULTI, label_separator=";")
  assert rows[0]["label"] == ["x", "z"]
  jl = _write(tmp_path / "m.jsonl", '{"text": "a", "label": ["x", "y"]}\n'
                                    '{"text": "b", "label": "y|z"}\n{"text": "c", "label": []}\n')
  rows, _ = lc.read_rows(jl, problem_type=MULTI)
  assert [r["label"] for r in rows] == [["x", "y"], ["y", "z"], []]
  assert lc.label_names_of(rows) == ["x", "y", "z"]
  bad = _write(tmp_path / "bad.jsonl", '{"text": "a", "label": ["x", 3]}\n')
  with pytest.raises(DataError, match=r"bad.jsonl:1: label 3 .*multi_label"):
    lc.read_rows(bad, problem_type=MULTI)


def test_config_names_and_errors(tmp_path):
  path = _write(tmp_path / "t.csv", "text,label\na,1\n")
  single = lc.classification_config(path)
  assert lc.classification_config(path, problem_type="single_label_classification").name == \
      single.name
  assert lc.classification_config(path, problem_type=REG).name != single.name
  with pytest.raises(ConfigError, match="problem_type='ordinal' is not one of"):
    lc.classification_config(path, problem_type="ordinal")
  with pytest.raises(ConfigError, match="problem_type='bogus' is not one of "
                                        "single_label_classification, regression, multi"):
    Classification(2, ("a", "b"), problem_type="bogus")


# --- metrics ---------------------------------------------------------------------------------

def _summary(task, sums):
  return task.summarize({"loss_sum": 0.0, "tokens_sum": 0.0, **sums})


def test_single_label_metrics_match_sklearn():
  from sklearn import metrics as sk
  rs = np.random.RandomState(0)
  for n_labels in (2, 3, 5):
    gold, pred = rs.randint(0, n_labels, 200), rs.randint(0, n_labels, 200)
    pred[:50] = gold[:50]
    c = metrics.confusion_matrix(gold, pred, n_labels)
    task = Classification(n_labels, tuple(map(str, range(n_labels))))
    out = _summary(task, {"correct_sum": float(np.trace(c)), "example_count": 200.0,
                          **{f"confusion_{g}_{p}_sum": float(c[g, p])
                             for g in range(n_labels) for p in range(n_labels)}})
    avg = "binary" if n_labels == 2 else "macro"
    assert abs(out["accuracy"] - sk.accuracy_score(gold, pred)) < 1e-6
    assert abs(out["f1"] - sk.f1_score(gold, pred, average=avg, zero_division=0)) < 1e-6
    assert abs(out["matthews_corrcoef"] - sk.matthews_corrcoef(gold, pred)) < 1e-6
  # A label never gold nor predicted is left out of the macro mean, as sklearn does.
  gold, pred = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])
  c = metrics.confusion_matrix(gold, pred, 4)
  assert abs(metrics.f1(c) - sk.f1_score(gold, pred, average="macro")) < 1e-6
  assert metrics.matthews_corrcoef(metrics.confusion_matrix([1, 1], [1, 1], 2)) == 0.0


def test_regression_metrics_match_scipy():
  from scipy import stats
  rs = np.random.RandomState(1)
  gold = rs.randint(0, 6, 300).astype(np.float64)  # many ties
  pred = np.round(gold + rs.randn(300), 1)  # ties too
  assert abs(metrics.pearson(pred, gold) - stats.pearsonr(pred, gold)[0]) < 1e-6
  assert abs(metrics.spearman(pred, gold) - stats.spearmanr(pred, gold)[0]) < 1e-6
  sums = [len(pred), pred.sum(), gold.sum(), (pred * pred).sum(), (gold * gold).sum(),
          (pred * gold).sum()]
  assert abs(metrics.pearson_from_sums(*sums) - stats.pearsonr(pred, gold)[0]) < 1e-6
  assert abs(metrics.mse(pred, gold) - np.mean((pred - gold) ** 2)) < 1e-9
  assert metrics.pearson(np.ones(5), gold[:5]) == 0.0 == metrics.spearman(np.ones(5), gold[:5])
  task = Classification(1, (), problem_type=REG)
  host = task.host_metrics(None, {"scores": pred[:, None]}, {"label": gold})
  assert abs(host["spearman"] - stats.spearmanr(pred, gold)[0]) < 1e-6


def test_multi_label_metrics_match_sklearn():
  from sklearn import metrics as sk
  rs = np.random.RandomState(2)
  gold = (rs.rand(100, 6) > 0.6).astype(np.float32)
  gold[:, 5] = 0  # a label never gold
  probs = rs.rand(100, 6)
  probs[:, 5] = 0.1  # ...nor predicted: F1 0 in the macro mean (zero_division=0)
  pred = probs > 0.5
  hit = gold > 0.5
  tp, fp, fn = (hit & pred).sum(0), (~hit & pred).sum(0), (hit & ~pred).sum(0)
  task = Classification(6, tuple("abcdef"), problem_type=MULTI)
  sums = {"example_count": 100.0, "exact_match_sum": float((hit == pred).all(-1).sum()),
          "label_tp_sum": float(tp.sum()), "label_fp_sum": float(fp.sum()),
          "label_fn_sum": float(fn.sum())}
  for j in range(6):
    sums.update({f"label_tp_{j}_sum": float(tp[j]), f"label_fp_{j}_sum": float(fp[j]),
                 f"label_fn_{j}_sum": float(fn[j])})
  out = _summary(task, sums)
  for avg in ("micro", "macro"):
    theirs = sk.f1_score(gold.astype(int), pred.astype(int), average=avg, zero_division=0)
    assert abs(out[f"f1_{avg}"] - theirs) < 1e-6, avg
  assert abs(out["exact_match"] - sk.accuracy_score(gold.astype(int), pred.astype(int))) < 1e-6


# --- loss parity with transformers -----------------------------------------------------------

@pytest.mark.parametrize("weights", ["random", "minilm"])
@pytest.mark.parametrize("problem_type", [REG, MULTI])
def test_loss_and_logits_match_transformers(tmp_path, problem_type, weights):
  torch = pytest.importorskip("torch")
  from bert_jax import hf
  from bert_jax import model as M
  from tests.test_hf import IDS, MASK, SEGMENTS, check, minilm_dir, torch_model, torch_run
  num_labels = 1 if problem_type == REG else 4
  if weights == "minilm":  # the real encoder, a seeded random head
    import transformers
    torch.manual_seed(5)
    theirs = transformers.BertForSequenceClassification.from_pretrained(
        minilm_dir(), num_labels=num_labels, problem_type=problem_type).eval()
  else:
    theirs = torch_model("BertForSequenceClassification", seed=5, num_labels=num_labels,
                         problem_type=problem_type)
  theirs.save_pretrained(tmp_path)
  if problem_type == REG:
    labels = np.array([0.7, -1.3], np.float32)
  else:
    labels = np.array([[1, 0, 1, 0], [0, 0, 0, 1]], np.float32)
  ref = torch_run(theirs, labels=torch.tensor(labels))
  config, params = hf.load_hf_checkpoint(tmp_path, head="classification")
  task = Classification(num_labels, () if problem_type == REG else tuple("abcd"),
                        problem_type=problem_type)
  batch = {"input_ids": IDS, "attention_mask": MASK, "token_type_ids": SEGMENTS,
           "label": labels, "example_mask": np.ones(2, np.int32)}
  model = M.BertForSequenceClassification(config, num_labels=num_labels)
  sums, outputs = task.forward(model, params, batch, deterministic=True, dropout_rng=None)
  loss = task.loss(sums, task.denominators(batch))
  key = "scores" if problem_type == REG else "probs"
  ref_out = ref.logits if problem_type == REG else torch.sigmoid(ref.logits)
  check(f"{problem_type} outputs", outputs[key], ref_out)
  check(f"{problem_type} loss", np.asarray(loss), ref.loss.numpy())


# --- packing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("problem_type", [REG, MULTI])
def test_packed_loss_equals_unpacked(problem_type):
  import jax

  from bert_jax import model as M
  from bert_jax.config import BertConfig
  from bert_jax.row_packing import pack
  num_labels = 1 if problem_type == REG else 3
  task = Classification(num_labels, () if problem_type == REG else ("a", "b", "c"),
                        problem_type=problem_type)
  cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=32, max_position_embeddings=32)
  model = M.BertForSequenceClassification(cfg, num_labels=num_labels)
  rs = np.random.RandomState(3)
  lengths = [5, 7, 4, 6]
  ids = np.zeros((4, 16), np.int32)
  for i, n in enumerate(lengths):
    ids[i, :n] = rs.randint(4, 50, n)
    ids[i, 0] = 2
  mask = (ids > 0).astype(np.int32)
  labels = (rs.randn(4).astype(np.float32) if problem_type == REG
            else (rs.rand(4, 3) > 0.5).astype(np.float32))
  params = model.init(jax.random.PRNGKey(0), ids, mask, np.zeros_like(ids))["params"]
  flat = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids),
          "label": labels, "example_mask": np.ones(4, np.int32)}
  sums, _ = task.forward(model, params, flat, deterministic=True, dropout_rng=None)
  examples = [{"input_ids": ids[i, :n], "token_type_ids": np.zeros(n, np.int32),
               "label": labels[i]} for i, n in enumerate(lengths)]
  packed = pack(examples, np.array([[0, 1], [2, 3]]), row_length=16,
                token_keys=("input_ids", "token_type_ids"), example_keys=("label",))
  assert packed["label"].dtype == np.float32
  assert packed["label"].shape == ((2, 2) if problem_type == REG else (2, 2, 3))
  psums, _ = task.forward(model, params, packed, deterministic=True, dropout_rng=None)
  for k in ("loss_sum", "example_count"):
    np.testing.assert_allclose(float(psums[k]), float(sums[k]), rtol=1e-5, atol=1e-6)
  summary = task.summarize({k: float(v) for k, v in sums.items()})
  assert task.best_metric in summary


# --- export, transformers pipeline, end to end ----------------------------------------------

def _write_data(path, n, seed, problem_type):
  rs = np.random.RandomState(seed)
  lines = ["text,label"]
  for i in range(n):
    good = i % 2
    word = rs.choice(["great", "fine", "lovely"] if good else ["dull", "bad", "awful"])
    if problem_type == REG:
      label = f"{good * 4 + rs.rand():.3f}"
    else:
      label = "|".join(x for x, on in (("pos", good), ("long", i % 3 == 0)) if on)
    lines.append(f"the film was {word} and slow,{label}")
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def _train(tmp, problem_type, tiny_csv_classifier) -> str:
  from bert_jax import train
  c = tiny_csv_classifier(tmp, _write_data(tmp / "train.csv", 48, 0, problem_type),
                          _write_data(tmp / "eval.csv", 20, 1, problem_type))
  c.problem_type = problem_type
  workdir = str(tmp / "workdir")
  train.train_and_evaluate(c, workdir)
  return workdir


@pytest.mark.slow
@pytest.mark.parametrize("problem_type", [REG, MULTI])
def test_fine_tune_export_and_pipeline(tmp_path, problem_type, tiny_csv_classifier):
  transformers = pytest.importorskip("transformers")
  from bert_jax import export, inference, predict
  workdir = _train(tmp_path, problem_type, tiny_csv_classifier)
  results = json.load(open(os.path.join(workdir, "eval_results.json")))
  wanted = (("pearson", "spearman", "mse") if problem_type == REG
            else ("f1_micro", "f1_macro", "exact_match"))
  for k in wanted + ("loss",):
    assert k in results and np.isfinite(results[k]), (k, results)
  assert os.path.exists(os.path.join(workdir, "report.md"))
  rows = [json.loads(x) for x in open(os.path.join(workdir, "predictions.jsonl"))]
  assert len(rows) == 20
  assert set(rows[0]) == ({"text", "label", "predicted"} if problem_type == REG
                          else {"text", "labels", "predicted", "probabilities"})

  loaded = inference.load(workdir)
  assert loaded.task.problem_type == problem_type
  texts = ["the film was great and slow", "the film was awful and slow"]
  _, ours = predict.predict(loaded, texts)
  out = str(tmp_path / "hf")
  export.export(workdir, out)
  config = json.load(open(os.path.join(out, "config.json")))
  assert config["problem_type"] == problem_type
  if problem_type == REG:
    assert config["id2label"] == {"0": "LABEL_0"}
  pipe = transformers.pipeline("text-classification", model=out, top_k=None,
                               function_to_apply="none" if problem_type == REG else "sigmoid")
  names = ["LABEL_0"] if problem_type == REG else list(loaded.label_names)
  for text, mine in zip(texts, ours):
    (scores,) = pipe([text])  # top_k=None: every label's score
    theirs = {d["label"]: d["score"] for d in scores}
    np.testing.assert_allclose([theirs[n] for n in names], mine, atol=1e-4)
  # The export reads back with its problem type.
  again = inference.load(out, task="classification")
  assert again.task.problem_type == problem_type
