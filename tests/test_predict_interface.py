"""`Task.predict_examples`: every task implements it, and on tiny random-init models it gives
what each task's older path gives (classification probabilities, NER entities, QA answers,
fill-mask fillers against the full-vocabulary MLM at every position, computed here)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import inference, ops, tasks
from bert_jax.config import BertConfig
from bert_jax.errors import ConfigError, DataError
from bert_jax.tasks.base import Task
from bert_jax.tasks.classification.task import Classification
from bert_jax.tasks.pretraining.task import MaskingConfig, Pretraining
from bert_jax.tasks.question_answering.task import QuestionAnswering
from bert_jax.tasks.token_classification.task import TokenClassification

TEXTS = ["a gorgeous, witty film", "dull and lifeless",
         "Peter Blackburn visited Brussels on Monday with the European Commission ."]


@pytest.fixture(scope="module")
def cfg(tok):
  return ops.resolve(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=32,
                                max_position_embeddings=64))


def init(task: Task, cfg: BertConfig, seed: int = 0):
  model = task.model(cfg)
  batch = task.dummy_batch(8)
  params = model.init(jax.random.key(seed), *(batch[k] for k in inference.FIELDS))["params"]
  return model, params


def test_every_task_implements_predict_examples():
  for name in tasks.names():
    assert tasks.get(name).predict_examples is not Task.predict_examples, name
  with pytest.raises(NotImplementedError, match="'base'"):
    type("Base", (Task,), {"name": "base"})().predict_examples(None, None, None, [],
                                                               max_length=8)


def test_classification_matches_predict(tok, cfg):
  task = Classification(num_labels=2, label_names=("neg", "pos"))
  model, params = init(task, cfg)
  probs = task.predict(model, params, tok, TEXTS, max_length=32, batch_size=2)  # [3, 2]
  cut = []
  out = task.predict_examples(model, params, tok, [{"text": t} for t in TEXTS], max_length=32,
                              batch_size=2, truncated=cut)
  assert cut == []
  for p, r in zip(probs, out):
    assert r["label"] == ("neg", "pos")[int(p.argmax())]
    np.testing.assert_allclose([r["probabilities"]["neg"], r["probabilities"]["pos"]], p)
    assert r["probability"] == max(r["probabilities"].values())
  # Pairs: all or none.
  pairs = [{"text": t, "text_pair": "it is"} for t in TEXTS]
  assert len(task.predict_examples(model, params, tok, pairs, max_length=32)) == 3
  with pytest.raises(DataError, match="text_pair"):
    task.predict_examples(model, params, tok, [{"text": "a"}, pairs[0]], max_length=32)


def test_token_classification_matches_tag(tok, cfg):
  task = TokenClassification(label_names=("O", "B-PER", "I-PER", "B-LOC", "I-LOC"))
  model, params = init(task, cfg)
  entities = task.tag(model, params, tok, TEXTS, max_length=16, batch_size=2)
  out = task.predict_examples(model, params, tok, [{"text": t} for t in TEXTS], max_length=16,
                              batch_size=2)
  assert out == [{"text": t, "entities": e} for t, e in zip(TEXTS, entities)]


def test_question_answering_matches_answer(tok, cfg):
  task = QuestionAnswering(max_query_length=8, doc_stride=8)
  model, params = init(task, cfg)
  questions, contexts = ["where is it ?", "who visited ?"], [TEXTS[2], TEXTS[0]]
  answers = task.answer(model, params, tok, questions, contexts, max_length=24, top_k=2)
  out = task.predict_examples(model, params, tok,
                              [{"question": q, "context": c} for q, c in zip(questions, contexts)],
                              max_length=24, top_k=2)
  assert out == answers and out[0]["question"] == "where is it ?"


def full_vocabulary_fill(model, params, tok, texts, window: int, top_k: int):
  """The former fill_mask: the MLM head over every position, un-jitted, one padded batch."""
  enc = tok.encode_batch(texts, max_length=window)
  ids = np.asarray(enc["input_ids"])
  out = model.apply({"params": params}, *(jnp.asarray(enc[k]) for k in inference.FIELDS))
  logits = out[0] if isinstance(out, tuple) else out  # [batch, window, vocab]
  probs = np.asarray(jax.nn.softmax(logits.astype(jnp.float32), axis=-1))
  results = []
  for row in range(len(texts)):
    per_mask = []
    for pos in np.flatnonzero(ids[row] == tok.mask_id):
      best = np.argsort(-probs[row, pos])[:top_k]
      per_mask.append(list(zip(tok.convert_ids_to_tokens(best.tolist()), probs[row, pos, best])))
    results.append(per_mask)
  return results


@pytest.mark.parametrize("nsp", [False, True])
def test_fill_mask_matches_the_full_vocabulary_forward(tok, cfg, nsp):
  task = Pretraining(MaskingConfig(vocab_size=tok.vocab_size, mask_token_id=tok.mask_id), nsp)
  model, params = init(task, cfg, seed=1)
  texts = ["I love [MASK] language processing.", "[MASK] is the [MASK] of [MASK] .",
           "the [MASK] " + "film " * 40]  # the last is cut to the window of 30 pieces
  cut = []
  out = task.predict_examples(model, params, tok, [{"text": t} for t in texts], max_length=32,
                              batch_size=2, top_k=4, truncated=cut)
  assert cut == [2] and [len(r["masks"]) for r in out] == [1, 3, 1]
  expected = full_vocabulary_fill(model, params, tok, texts, 32, 4)
  for r, text, want in zip(out, texts, expected):
    assert r["text"] == text
    for fillers, want_fillers in zip(r["masks"], want, strict=True):
      assert [f["token"] for f in fillers] == [t for t, _ in want_fillers]
      np.testing.assert_allclose([f["probability"] for f in fillers],
                                 [p for _, p in want_fillers], rtol=1e-5, atol=1e-6)


def test_fill_mask_checks(tok, cfg):
  from bert_jax import fill_mask
  task = Pretraining(MaskingConfig(vocab_size=tok.vocab_size, mask_token_id=tok.mask_id))
  model, params = init(task, cfg)
  with pytest.raises(DataError, match="no \\[MASK\\] token in 'no mask here'"):
    task.predict_examples(model, params, tok, [{"text": "no mask here"}], max_length=32)
  with pytest.raises(DataError, match="beyond the model's window of 30 pieces"):
    task.predict_examples(model, params, tok, [{"text": "film " * 40 + "[MASK]"}],
                          max_length=32)
  loaded = inference.Loaded(cfg, params, "pretraining", task, tok.vocab_file, 32)
  (fillers,), = fill_mask.fill_mask(loaded, ["I love [MASK] films."], top_k=3)
  assert len(fillers) == 3 and fillers[0][1] >= fillers[1][1] >= fillers[2][1]
  clf = Classification(num_labels=2, label_names=("neg", "pos"))
  wrong = inference.Loaded(cfg, init(clf, cfg)[1], "classification", clf, tok.vocab_file, 32)
  with pytest.raises(ConfigError, match="a classification model; fill-mask needs a pretraining"):
    fill_mask.fill_mask(wrong, ["I love [MASK] films."])


@pytest.mark.parametrize("problem_type", ["single_label_classification", "regression",
                                          "multi_label_classification"])
def test_predict_cli_columns_are_the_former_ones(tok, cfg, problem_type):
  """`predict.line` of each result prints what the CLI printed from `predict.predict`."""
  from bert_jax import predict
  names = ("a", "b", "c") if problem_type != "regression" else ()
  task = Classification(num_labels=len(names) or 1, label_names=names,
                        problem_type=problem_type)
  model, params = init(task, cfg, seed=2)
  loaded = inference.Loaded(cfg, params, "classification", task, tok.vocab_file, 32)
  labels, probs = predict.predict(loaded, TEXTS)
  results = inference.predict_examples(loaded, "classification", [{"text": t} for t in TEXTS],
                                       refusal="")
  for label, p, result in zip(labels, probs, results):
    if problem_type == "regression":
      former = f"{float(label):.4f}"
    elif problem_type == "multi_label_classification":
      on = np.flatnonzero(label)
      former = (f"{'|'.join(names[j] for j in on) or '-'}\t"
                f"{'|'.join(f'{p[j]:.4f}' for j in on) or '-'}")
    else:
      former = f"{names[label]}\t{p[label]:.4f}"
    assert predict.line(result) == former
