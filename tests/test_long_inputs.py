"""data.long_inputs of the classification task: "truncate" (the default, unchanged) or
"windows" (overlapping windows over a long document, logits aggregated per document)."""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest

from bert_jax import inference, ops
from bert_jax.config import BertConfig
from bert_jax.errors import ConfigError
from bert_jax.tasks.classification import windows as W
from bert_jax.tasks.classification.task import FIELDS, Classification

WORDS = ("the unbelievably extraordinary film was wonderful and acting , sadly ; nevertheless "
         "I would watch it again tomorrow with my grandmother's friends").split()
# ~200 pieces, no repeated run: each window's place in the document is unique.
LONG = " ".join(np.random.RandomState(0).choice(WORDS, 120))
SHORT = "a gorgeous, witty film"


@pytest.fixture(scope="module")
def cfg(tok):
  return ops.resolve(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=32,
                                max_position_embeddings=64))


def _init(task, cfg, seed=0):
  model = task.model(cfg)
  batch = task.dummy_batch(8)
  return model, model.init(jax.random.key(seed), *(batch[k] for k in FIELDS))["params"]


def _loud(params, scale: float):
  """A random init's logits barely depend on the text: a larger classifier makes the
  differences between windows visible above float32 rounding."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: x * scale if "classifier" in jax.tree_util.keystr(path) else x, params)


def _bodies(f, tok, row_prefix):
  """The piece ids of each window between its prefix and its final [SEP]."""
  out = []
  for ids, mask in zip(f["input_ids"], f["attention_mask"]):
    n = int(mask.sum())
    assert ids[0] == tok.cls_id and ids[n - 1] == tok.sep_id
    out.append(ids[row_prefix:n - 1])
  return out


# --- the window plan -------------------------------------------------------------------------

@pytest.mark.parametrize("step", [0, 5, 22])
def test_windows_cover_every_piece(tok, step):
  pieces = tok.tokenize_to_ids([LONG])[0]
  assert len(pieces) > 100
  f, stats = W.encode(tok, [LONG], max_seq_length=24, window_step=step)
  bodies = _bodies(f, tok, 1)
  assert stats["num_windows"] == len(bodies) > 1 and stats["num_windowed"] == 1
  assert (f["doc_index"] == 0).all() and (f["doc_windows"] == len(bodies)).all()
  assert stats["num_truncated"] == 0
  # Each window is a run of consecutive pieces of the document; together they hold all of them.
  covered = np.zeros(len(pieces), bool)
  lo = 0
  starts = []
  for body in bodies:
    assert 1 <= len(body) <= 22
    at = next(s for s in range(lo, len(pieces)) if (pieces[s:s + len(body)] == body).all())
    assert at - lo <= (step or 11), (at, lo)  # at most window_step after the previous start
    starts.append(at)
    covered[at:at + len(body)] = True
    lo = at
  assert covered.all()
  assert starts == sorted(set(starts))
  assert starts[-1] + len(bodies[-1]) == len(pieces)
  # Windows start at whole words: never on a continuation piece.
  assert not any(tok.convert_ids_to_tokens([pieces[s]])[0].startswith("##") for s in starts)


def test_short_document_is_its_truncate_row(tok):
  for texts, pairs in (([SHORT, "", "dull"], None), ([SHORT, "q"], ["it is fine", ""])):
    f, stats = W.encode(tok, texts, pairs, max_seq_length=24)
    assert stats["num_windows"] == len(texts) and stats["num_windowed"] == 0
    enc = tok.encode_batch(texts, pairs, max_length=24)
    for k in FIELDS:
      np.testing.assert_array_equal(f[k], enc[k], err_msg=k)
    np.testing.assert_array_equal(f["doc_index"], np.arange(len(texts)))


def test_pairs_window_the_second_text(tok):
  question = "was the acting any good ?"
  q = tok.tokenize_to_ids([question])[0]
  pieces = tok.tokenize_to_ids([LONG])[0]
  f, stats = W.encode(tok, [question], [LONG], max_seq_length=32)
  bodies = _bodies(f, tok, 2 + len(q))
  assert len(bodies) > 1 and stats["num_truncated"] == 0
  for ids, types, body in zip(f["input_ids"], f["token_type_ids"], bodies):
    np.testing.assert_array_equal(ids[1:1 + len(q)], q)  # the first text whole in every row
    assert ids[1 + len(q)] == tok.sep_id
    n = 2 + len(q) + len(body) + 1
    np.testing.assert_array_equal(types[:n], [0] * (2 + len(q)) + [1] * (len(body) + 1))
  joined = np.concatenate(bodies)
  assert set(pieces.tolist()) <= set(joined.tolist())
  assert (bodies[0] == pieces[:len(bodies[0])]).all()
  assert (bodies[-1] == pieces[-len(bodies[-1]):]).all()
  # A first text longer than half the room is cut to it, and counted.
  f, stats = W.encode(tok, [LONG], [LONG], max_seq_length=32)
  assert stats["truncated"] == [0]
  padding = 32 - f["attention_mask"][0].sum()
  assert (f["token_type_ids"][0] == 0).sum() == 2 + (32 - 3) // 2 + padding


# --- config ----------------------------------------------------------------------------------

def _config(**data):
  c = ml_collections.ConfigDict({"pooling": "cls_pooler",
                                 "problem_type": "single_label_classification",
                                 "data": {"max_seq_length": 24, **data}})
  return c


def test_bad_long_inputs_is_a_config_error():
  with pytest.raises(ConfigError, match=r"data.long_inputs='chunks' is not one of truncate, "
                                        "windows"):
    Classification.from_config(_config(long_inputs="chunks"), {"label_names": ["a", "b"]})
  with pytest.raises(ConfigError, match=r"data.window_aggregation='median'"):
    Classification(2, ("a", "b"), long_inputs="windows", window_aggregation="median")
  with pytest.raises(ConfigError, match=r"data.window_step=-1"):
    Classification(2, ("a", "b"), long_inputs="windows", window_step=-1)
  with pytest.raises(ConfigError, match=r"data.window_step=23 must be at most"):
    W.encode(None, [], max_seq_length=24, window_step=23)


def test_truncate_is_the_default_and_unchanged(tok, cfg):
  info = {"label_names": ["neg", "pos"]}
  default = Classification.from_config(_config(), info)
  assert default == Classification.from_config(_config(long_inputs="truncate"), info)
  assert default == Classification(2, ("neg", "pos"))
  assert default.host_keys == ("input_ids", "label") and default.host_only_keys == ()
  assert default.checkpoint_info() == {"label_names": ["neg", "pos"], "pooling": "cls_pooler"}
  windowed = Classification.from_config(_config(long_inputs="windows", window_step=7,
                                                window_aggregation="max"), info)
  assert Classification.from_checkpoint_info(windowed.checkpoint_info()) == windowed
  assert Classification.from_checkpoint_info(default.checkpoint_info()) == default
  # Truncate: prediction reads the first max_length pieces only (the tail changes nothing);
  # windows read the tail too.
  model, params = _init(default, cfg)
  texts = [LONG, LONG + " awful awful awful terrible dreadful " * 20]
  cut = []
  probs = default.predict(model, params, tok, texts, max_length=24, truncated=cut)
  assert cut == [0, 1]
  np.testing.assert_allclose(probs[0], probs[1], atol=1e-6)
  enc = tok.encode_batch(texts[:1], max_length=24)
  from bert_jax.tasks.classification.task import predict_batch
  np.testing.assert_allclose(probs[0], np.asarray(predict_batch(
      model, params, *(enc[k] for k in FIELDS)))[0], atol=1e-6)
  windows = Classification(2, ("neg", "pos"), long_inputs="windows")
  loud = _loud(params, 1000)
  cut = []
  wprobs = windows.predict(model, loud, tok, texts, max_length=24, truncated=cut)
  log_odds = np.log(wprobs[:, 1]) - np.log(wprobs[:, 0])  # [2]
  assert cut == [] and abs(log_odds[0] - log_odds[1]) > 1e-3
  probs = default.predict(model, loud, tok, texts, max_length=24)
  np.testing.assert_allclose(probs[0], probs[1], atol=1e-6)
  # Forward: no logits output in truncate mode (eval outputs as before).
  f, _ = W.encode(tok, texts, max_seq_length=24)
  batch = {**{k: f[k] for k in FIELDS}, "label": np.zeros(len(f["input_ids"]), np.int32)}
  _, outputs = default.forward(model, params, batch, deterministic=True, dropout_rng=None)
  assert set(outputs) == {"probs"}
  _, outputs = windows.forward(model, params, batch, deterministic=True, dropout_rng=None)
  assert set(outputs) == {"probs", "logits"}


# --- aggregation -----------------------------------------------------------------------------

def _window_logits(model, params, f):
  """Each window alone through the model, at full length: [N, labels]."""
  return np.concatenate([np.asarray(model.apply({"params": params},
                                                *(f[k][i:i + 1] for k in FIELDS)))
                         for i in range(len(f["input_ids"]))])


@pytest.mark.parametrize("how", ["mean", "max"])
@pytest.mark.parametrize("problem_type", ["single_label_classification", "regression",
                                          "multi_label_classification"])
def test_aggregation_matches_numpy(tok, cfg, how, problem_type):
  names = () if problem_type == "regression" else ("a", "b", "c")
  task = Classification(1 if not names else 3, names, problem_type=problem_type,
                        long_inputs="windows", window_aggregation=how)
  model, params = _init(task, cfg, seed=1)
  params = _loud(params, 1000)
  texts = [LONG, SHORT, LONG[::-1], "dull " * 40]
  f, stats = W.encode(tok, texts, max_seq_length=20)
  assert stats["num_windowed"] == 3
  per_window = _window_logits(model, params, f)  # [N, L]

  def expected(reduce):  # [D, L]: the windows' logits reduced, then activated
    out = np.stack([getattr(per_window[f["doc_index"] == d], reduce)(0) for d in range(4)])
    if problem_type == "single_label_classification":
      return np.exp(out) / np.exp(out).sum(-1, keepdims=True)
    if problem_type == "multi_label_classification":
      return 1 / (1 + np.exp(-out))
    return out

  want = expected(how)
  # The windows disagree enough that the other aggregation fails the comparison below.
  assert np.abs(want - expected({"mean": "max", "max": "mean"}[how])).max() > 5 * 2e-5
  got = task.predict(model, params, tok, texts, max_length=20, batch_size=4)
  np.testing.assert_allclose(got, want, atol=2e-5)
  out = task.predict_examples(model, params, tok, [{"text": t} for t in texts], max_length=20)
  assert len(out) == 4
  if problem_type == "single_label_classification":
    np.testing.assert_allclose([[o["probabilities"][n] for n in names] for o in out], want,
                               atol=2e-5)
    assert [o["label"] for o in out] == [names[i] for i in want.argmax(-1)]
  elif problem_type == "regression":
    np.testing.assert_allclose([o["score"] for o in out], want[:, 0], atol=2e-5)


def test_host_metrics_are_per_document(tok, cfg):
  task = Classification(2, ("neg", "pos"), long_inputs="windows")
  rs = np.random.RandomState(0)
  doc_windows = np.array([3, 1, 2, 4, 1])
  doc_index = np.repeat(np.arange(5), doc_windows)
  logits = rs.randn(len(doc_index), 2).astype(np.float32)
  gold = np.array([1, 0, 1, 0, 1])
  rows = {"doc_index": doc_index, "doc_windows": doc_windows[doc_index],
          "label": gold[doc_index], "input_ids": np.zeros((len(doc_index), 4), np.int32)}
  out = task.host_metrics(None, {"logits": logits, "probs": logits}, rows)
  mean = np.stack([logits[doc_index == d].mean(0) for d in range(5)])
  log_p = mean - np.log(np.exp(mean).sum(-1, keepdims=True))
  assert out["num_examples"] == 5 and out["num_windows"] == len(doc_index)
  assert out["accuracy"] == pytest.approx(np.mean(mean.argmax(-1) == gold))
  assert out["loss"] == pytest.approx(-np.mean(log_p[np.arange(5), gold]), rel=1e-5)
  # An evaluation cut inside a document's windows (num_eval_batches) leaves that one out.
  cut = {k: v[:-2] for k, v in rows.items()}
  out = task.host_metrics(None, {"logits": logits[:-2], "probs": logits[:-2]}, cut)
  assert out["num_examples"] == 3  # documents 3 (4 windows, 3 present) and 4 left out
  assert out["accuracy"] == pytest.approx(np.mean(mean[:3].argmax(-1) == gold[:3]))


# --- end to end ------------------------------------------------------------------------------

def _write(path, n, seed, long_every=2):
  rs = np.random.RandomState(seed)
  lines = ["text,label"]
  for i in range(n):
    good = i % 2
    words = ["great", "fine", "lovely"] if good else ["dull", "bad", "awful"]
    filler = " ".join(rs.choice(["the", "film", "was", "and", "slow", "plot"], 40))
    text = f"{filler} {rs.choice(words)}" if i % long_every == 0 else f"it was {rs.choice(words)}"
    lines.append(f"{text},{'pos' if good else 'neg'}")
  path.write_text("\n".join(lines) + "\n")
  return str(path)


@pytest.mark.slow
def test_windows_end_to_end(tmp_path, tiny_csv_classifier):
  from bert_jax import train
  c = tiny_csv_classifier(tmp_path, _write(tmp_path / "train.csv", 32, 0),
                          _write(tmp_path / "eval.csv", 12, 1))
  c.data.long_inputs, c.data.window_step, c.data.window_aggregation = "windows", 6, "mean"
  workdir = str(tmp_path / "workdir")
  result = train.train_and_evaluate(c, workdir)
  assert c.data.packing
  # Per document: 12 documents, 6 of them long (41 words > 14 pieces: several windows each).
  assert result["num_examples"] == 12 and result["num_windows"] > 12 + 6
  rows = [json.loads(x) for x in open(os.path.join(workdir, "predictions.jsonl"))]
  assert len(rows) == 12
  assert result["accuracy"] == pytest.approx(np.mean([r["label"] == r["predicted"]
                                                      for r in rows]), abs=1e-6)
  assert rows[0]["text"].split()[-1] in ("dull", "bad", "awful")  # the whole document
  report = open(os.path.join(workdir, "report.md")).read()
  assert "6 of 12 documents longer than max_seq_length=16 split into windows" in report
  # predict_examples on the trained checkpoint aggregates the same windows.
  loaded = inference.load(workdir)
  assert loaded.task.long_inputs == "windows" and loaded.task.window_step == 6
  texts = [x.split(",")[0] for x in open(tmp_path / "eval.csv").read().splitlines()[1:]]
  out = inference.predict_examples(loaded, "classification", [{"text": t} for t in texts],
                                   refusal="")
  for o, r in zip(out, rows):
    assert o["label"] == r["predicted"]
    assert o["probability"] == pytest.approx(r["probability"], abs=1e-4)
