"""scripts/make_pairs.py (question/sentence pairs from SQuAD) and scripts/pair_baseline.py, on
the shared SQuAD file; experiments/pairs_squad.py reads the CSV through local_classification."""

import csv
import importlib.util
import json
import os

import numpy as np
import pytest

from bert_jax.tasks.question_answering import reader as qa_reader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(name):
  """scripts/<name>.py as a module (the scripts are no package)."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", name + ".py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


make_pairs = _script("make_pairs")
pair_baseline = _script("pair_baseline")


@pytest.fixture(scope="module")
def squad_file(shared_data):
  path = os.path.join(shared_data, "squad_v1.1", "dev-v1.1-part.json")
  if not os.path.exists(path):
    pytest.skip(f"{path} is absent")
  return path


def read_csv(path):
  with open(path, encoding="utf-8", newline="") as f:
    return list(csv.DictReader(f))


def test_no_article_on_both_sides(squad_file, tmp_path):
  stats = {split: make_pairs.main(["--squad", squad_file, "--split", split,
                                   "--out", str(tmp_path / split)])
           for split in ("train", "eval")}
  train_titles, eval_titles = set(stats["train"]["titles"]), set(stats["eval"]["titles"])
  assert not train_titles & eval_titles
  assert len(train_titles) == 38 and len(eval_titles) == 10
  last_ten = qa_reader.load_json(squad_file)["data"][-10:]
  assert stats["eval"]["titles"] == [a["title"] for a in last_ten]
  # Every sentence is from a paragraph of its own side.
  train_data, eval_data = qa_reader.split_articles(squad_file)
  for split, data in (("train", train_data), ("eval", eval_data)):
    contexts = "\n".join(p["context"] for a in data["data"] for p in a["paragraphs"])
    rows = read_csv(tmp_path / split / "pairs.csv")
    assert len(rows) == stats[split]["pairs"]
    assert all(r["text_pair"] in contexts for r in rows[::50]), split
  assert stats["train"]["questions"] == 7612 and stats["eval"]["questions"] == 1768


def test_labels_on_a_hand_checked_paragraph(squad_file):
  _, eval_data = qa_reader.split_articles(squad_file)
  paragraph = eval_data["data"][0]["paragraphs"][0]  # the IPCC's first paragraph
  context = paragraph["context"]
  spans = make_pairs.sentence_spans(context)
  assert len(spans) == 6
  assert context[spans[4][0]:].startswith("The ultimate objective of the UNFCCC")
  labels = {qa["question"]: [p[2] for p in make_pairs.question_pairs(context, spans, qa)]
            for qa in paragraph["qas"]}
  # Checked by hand against the paragraph: the sentence holding each answer.
  assert labels["What organization is the IPCC a part of?"] == [1, 0, 0, 0, 0, 0]
  assert labels["What UN resolution endorsed the IPCC?"] == [0, 1, 0, 0, 0, 0]
  assert labels["What is the UN's climate change treaty?"] == [0, 0, 0, 1, 0, 0]
  assert labels["What does the UN want to stabilize?"] == [0, 0, 0, 0, 1, 0]


def test_sentence_offsets_and_balance(squad_file):
  data = qa_reader.load_json(squad_file)
  for article in data["data"][:5]:
    for paragraph in article["paragraphs"]:
      context = paragraph["context"]
      spans = make_pairs.sentence_spans(context)
      assert all(a < b <= c for (a, b), (c, _) in zip(spans, spans[1:] + [(len(context), 0)]))
      for qa in paragraph["qas"]:  # every answer lands in some sentence
        assert sum(p[2] for p in make_pairs.question_pairs(context, spans, qa)) >= 1
  one = {"data": data["data"][:3]}
  everything = list(make_pairs.make_pairs(one, negatives_per_positive=0))
  balanced = list(make_pairs.make_pairs(one, negatives_per_positive=1, seed=0))
  assert balanced == list(make_pairs.make_pairs(one, negatives_per_positive=1, seed=0))
  positives = [p for p in everything if p[2] == 1]
  assert [p for p in balanced if p[2] == 1] == positives  # every positive kept
  assert len(everything) > 2 * len(positives)  # sentences per paragraph > 2 on average
  negatives = len(balanced) - len(positives)
  assert 0.8 * len(positives) <= negatives <= len(positives)
  assert set(balanced) <= set(everything)


def test_csv_feeds_the_pair_classifier(squad_file, tmp_path):
  """The pairs_squad config reads the CSV as pairs: question segment 0, sentence segment 1."""
  from bert_jax.tasks import classification
  from experiments import pairs_squad
  small = tmp_path / "small.json"
  small.write_text(json.dumps({"version": "1.1",
                               "data": qa_reader.load_json(squad_file)["data"][:3]}))
  for split in ("train", "eval"):
    make_pairs.main(["--squad", str(small), "--split", split, "--num_eval_articles", "1",
                     "--out", str(tmp_path / split)])
  config = pairs_squad.get_config("short")
  config.data.update(train_file=str(tmp_path / "train" / "pairs.csv"),
                     eval_file=str(tmp_path / "eval" / "pairs.csv"),
                     data_dir=str(tmp_path / "tfds"))
  info = classification.data_info(config.data, config.data.data_dir)
  assert info["label_names"] == ["0", "1"]
  assert info["split_sizes"]["train"] == len(read_csv(tmp_path / "train" / "pairs.csv"))
  it = classification.make_iterator(config.data, split="validation", global_batch_size=8,
                                    seed=0, shuffle=False, num_epochs=1,
                                    data_dir=config.data.data_dir)
  batch = next(iter(it))
  first = read_csv(tmp_path / "eval" / "pairs.csv")[0]
  assert batch["label"][0] == int(first["label"])
  segments, mask = batch["token_type_ids"][0], batch["attention_mask"][0]
  assert segments.max() == 1 and mask.sum() > segments.sum() > 0
  from bert_jax.tokenizer import Tokenizer
  tokens = Tokenizer().convert_ids_to_tokens(batch["input_ids"][0][segments == 0][:4])
  assert tokens[0] == "[CLS]" and tokens[1:] == Tokenizer().convert_ids_to_tokens(
      Tokenizer().tokenize_to_ids([first["text"]])[0][:3])


def test_baseline_threshold_and_metrics():
  scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
  labels = np.array([0, 0, 1, 0, 1])
  threshold, acc = pair_baseline.best_threshold(scores, labels)
  assert threshold == 0.3 and acc == 0.8  # 0.5 also gives 0.8: the lower one wins
  m = pair_baseline.metrics((scores >= threshold).astype(int), labels)
  assert m == {"accuracy": 0.8, "precision": 2 / 3, "recall": 1.0, "f1": 0.8}
  assert pair_baseline.overlap_scores(["Who wrote Hamlet?"], ["Hamlet was written by "
                                                              "Shakespeare."])[0] == 0.5
