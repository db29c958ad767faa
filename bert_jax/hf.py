"""transformers BERT and ModernBERT checkpoints in and out: `load_hf_checkpoint` /
`save_hf_checkpoint`, dispatched on `BertConfig.family` (from config.json's model_type).

Every weight is mapped by name through one table (`_weight_table`) built from the config, and
every shape is asserted both ways. torch is imported only to read a `pytorch_model.bin`.

Layout of a torch weight against ours (E = hidden, H = heads, D = head_dim, I = intermediate):

  transformers key (after an optional `bert.` prefix)     torch shape   ours
  embeddings.{word,position,token_type}_embeddings.weight  [rows, E]     embeddings/*/embedding
  embeddings.LayerNorm.{weight,bias}                        [E]           embeddings/layer_norm/{scale,bias}
  encoder.layer.{i}.attention.self.{query,key,value}.weight [H*D, E]      encoder/layer_{i}/attention/*/kernel [E, H, D]
  encoder.layer.{i}.attention.self.{query,key,value}.bias   [H*D]         .../bias [H, D]
  encoder.layer.{i}.attention.output.dense.{weight,bias}    [E, H*D]      .../attention/out/kernel [H, D, E]
  encoder.layer.{i}.attention.output.LayerNorm              [E]           .../attention_norm
  encoder.layer.{i}.intermediate.dense                      [I, E]        .../intermediate/kernel [E, I]
  encoder.layer.{i}.output.dense                            [E, I]        .../output/kernel [I, E]
  encoder.layer.{i}.output.LayerNorm                        [E]           .../output_norm
  pooler.dense                                              [E, E]        pooler
  cls.predictions.transform.dense / .LayerNorm              [E, E] / [E]  mlm_head/transform / layer_norm
  cls.predictions.bias (alias cls.predictions.decoder.bias) [V]           mlm_head/bias
  cls.predictions.decoder.weight                            [V, E]        tied: must equal word_embeddings
  cls.seq_relationship                                      [2, E]        nsp_head
  classifier                                                [L, E]        classifier
  qa_outputs                                                [2, E]        qa_outputs
A torch Linear weight is [out, in] and a Flax kernel [in, out]: kernels are transposed, then
reshaped to split or merge the heads axis.

ModernBERT (config.json model_type "modernbert", `BertConfig.family="modernbert"`;
`modernbert_config.py` maps the config) has its own table, `_modernbert_table`, keys after an
optional `model.` prefix; norms and projections carry a bias only when the config says so:

  embeddings.tok_embeddings.weight          [V, E]        embeddings/word_embeddings/embedding
  embeddings.norm                           [E]           embeddings/layer_norm
  layers.{i}.attn_norm (none in layer 0)    [E]           encoder/layer_{i}/attention_norm
  layers.{i}.attn.Wqkv                      [3*H*D, E]    .../attention/{query,key,value} (thirds)
  layers.{i}.attn.Wo                        [E, H*D]      .../attention/out
  layers.{i}.mlp_norm                       [E]           .../output_norm
  layers.{i}.mlp.Wi                         [2*I, E]      .../{intermediate, gate} (halves)
  layers.{i}.mlp.Wo                         [E, I]        .../output
  final_norm                                [E]           final_norm
  head.{dense,norm}                         [E, E] / [E]  mlm_head (MLM) or head/{transform, layer_norm}
  decoder.bias (decoder.weight tied)        [V]           mlm_head/bias
  classifier                                [L, E]        classifier (QA: qa_outputs)
A fused tensor is one `_Weight` per part (`part` of `parts` along its first axis): split on
load, concatenated in order on save.

A classifier that pools otherwise than with the [CLS] pooler (`model.POOLINGS`) is written with
a `bert_jax_pooling` key in config.json, which bert_jax reads back; transformers ignores it and
pools with the pooler, so its outputs then differ from ours (`save_hf_checkpoint` warns).
Other task settings (a QA model's windows) go to config.json as `bert_jax_<name>` keys too
(`settings`, `read_settings`); `load_hf_checkpoint` keeps every `bert_jax_*` key out of the
encoder's config.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import numpy as np
from safetensors.numpy import load_file, save_file

from bert_jax import fileio
from bert_jax.config import BertConfig
from bert_jax.errors import ConfigError, DataError

HEADS = (None, "mlm", "pretraining", "classification", "token_classification",
         "question_answering")
_ARCHITECTURES = {None: "BertModel", "mlm": "BertForMaskedLM",
                  "pretraining": "BertForPreTraining",
                  "classification": "BertForSequenceClassification",
                  "token_classification": "BertForTokenClassification",
                  "question_answering": "BertForQuestionAnswering"}
# As in transformers, these models' encoders have no pooling layer.
_NO_POOLER = ("mlm", "token_classification", "question_answering")
# The same for family="modernbert": no pooler; a final norm; a prediction head (`head`) before
# every classifier.
_MODERNBERT_TOP_LEVEL = {None: {"embeddings", "encoder", "final_norm"}, "mlm": {"bert", "mlm_head"},
                         "classification": {"bert", "head", "classifier"},
                         "token_classification": {"bert", "head", "classifier"},
                         "question_answering": {"bert", "head", "qa_outputs"}}
# Our top-level params of each head's model.
_TOP_LEVEL = {None: {"embeddings", "encoder", "pooler"}, "mlm": {"bert", "mlm_head"},
              "pretraining": {"bert", "mlm_head", "nsp_head"},
              "classification": {"bert", "classifier"},
              "token_classification": {"bert", "classifier"},
              "question_answering": {"bert", "qa_outputs"}}
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
# Buffers, not weights.
_IGNORED = ("embeddings.position_ids", "embeddings.token_type_ids")
# Head weights a checkpoint may carry that the requested model does not use; dropped on load,
# as transformers does when it loads BertModel from a BertForPreTraining checkpoint.
_HEAD_KEYS = frozenset(
    [f"cls.predictions.transform.{m}.{p}" for m in ("dense", "LayerNorm")
     for p in ("weight", "bias")]
    + ["cls.predictions.bias", "cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
       "cls.seq_relationship.weight", "cls.seq_relationship.bias",
       "classifier.weight", "classifier.bias", "qa_outputs.weight", "qa_outputs.bias"])
_POOLER_KEYS = ("pooler.dense.weight", "pooler.dense.bias")
# config.json key of a classifier's sentence vector when it is not the pooler (see module).
POOLING_KEY = "bert_jax_pooling"
# config.json keys of bert_jax task settings (`settings` of save_hf_checkpoint); never the
# encoder's.
SETTINGS_PREFIX = "bert_jax_"

log = logging.getLogger("bert_jax.hf")


@dataclasses.dataclass(frozen=True)
class _Weight:
  hf_key: str                  # transformers name, without the `bert.` / `model.` prefix
  path: tuple[str, ...]        # path in our tree
  hf_shape: tuple[int, ...]    # the whole transformers tensor
  shape: tuple[int, ...]
  transpose: bool              # torch Linear weight [out, in] <-> kernel [in, ..., out]
  part: int = 0                # a fused tensor (ModernBERT's Wqkv, Wi) holds `parts` weights
  parts: int = 1               # along its first axis; this one is number `part`

  def to_flax(self, w: np.ndarray) -> np.ndarray:
    w = np.split(w, self.parts, axis=0)[self.part]
    return (w.T if self.transpose else w).reshape(self.shape)

  def to_hf(self, w: np.ndarray) -> np.ndarray:
    """Our array -> this weight's part of the transformers tensor."""
    part_shape = (self.hf_shape[0] // self.parts,) + self.hf_shape[1:]
    if self.transpose:
      return w.reshape(part_shape[::-1]).T
    return w.reshape(part_shape)


class _Table(list):
  """A weight table under construction: `add`, `linear` and `norm` append `_Weight`s, the
  encoder's under `body` (() for the bare encoder, ("bert",) under a head)."""

  def __init__(self, body: tuple[str, ...], embed: int):
    super().__init__()
    self.body, self.embed = body, embed

  def add(self, hf_key, path, hf_shape, shape=None, transpose=False, prefix=None, part=0,
          parts=1):
    prefix = self.body if prefix is None else prefix
    self.append(_Weight(hf_key, prefix + path, hf_shape, shape or hf_shape, transpose, part,
                        parts))

  def linear(self, hf_key, path, n_in, n_out, kernel_shape=None, bias_shape=None, prefix=None,
             bias=True, part=0, parts=1):
    """A torch Linear [parts * n_out, n_in] (part `part` of it) -> kernel [n_in, n_out]."""
    self.add(f"{hf_key}.weight", path + ("kernel",), (parts * n_out, n_in),
             kernel_shape or (n_in, n_out), transpose=True, prefix=prefix, part=part,
             parts=parts)
    if bias:
      self.add(f"{hf_key}.bias", path + ("bias",), (parts * n_out,), bias_shape or (n_out,),
               prefix=prefix, part=part, parts=parts)

  def norm(self, hf_key, path, prefix=None, bias=True):
    self.add(f"{hf_key}.weight", path + ("scale",), (self.embed,), prefix=prefix)
    if bias:
      self.add(f"{hf_key}.bias", path + ("bias",), (self.embed,), prefix=prefix)


def _weight_table(c: BertConfig, head: str | None, num_labels: int | None) -> list[_Weight]:
  """Every weight of the BERT model `head` selects, in checkpoint order."""
  E, H, D, I, V = (c.hidden_size, c.num_attention_heads, c.head_dim, c.intermediate_size,
                   c.vocab_size)
  table = _Table(() if head is None else ("bert",), E)
  add, linear, layer_norm = table.add, table.linear, table.norm

  for name, rows in (("word", V), ("position", c.max_position_embeddings),
                     ("token_type", c.type_vocab_size)):
    add(f"embeddings.{name}_embeddings.weight", ("embeddings", f"{name}_embeddings", "embedding"),
        (rows, E))
  layer_norm("embeddings.LayerNorm", ("embeddings", "layer_norm"))
  for i in range(c.num_hidden_layers):
    hf, ours = f"encoder.layer.{i}", ("encoder", f"layer_{i}")
    for proj in ("query", "key", "value"):
      linear(f"{hf}.attention.self.{proj}", ours + ("attention", proj), E, H * D,
             kernel_shape=(E, H, D), bias_shape=(H, D))
    linear(f"{hf}.attention.output.dense", ours + ("attention", "out"), H * D, E,
           kernel_shape=(H, D, E))
    layer_norm(f"{hf}.attention.output.LayerNorm", ours + ("attention_norm",))
    linear(f"{hf}.intermediate.dense", ours + ("intermediate",), E, I)
    linear(f"{hf}.output.dense", ours + ("output",), I, E)
    layer_norm(f"{hf}.output.LayerNorm", ours + ("output_norm",))
  if head not in _NO_POOLER:
    linear("pooler.dense", ("pooler",), E, E)
  if head in ("mlm", "pretraining"):
    linear("cls.predictions.transform.dense", ("mlm_head", "transform"), E, E, prefix=())
    layer_norm("cls.predictions.transform.LayerNorm", ("mlm_head", "layer_norm"), prefix=())
    add("cls.predictions.bias", ("mlm_head", "bias"), (V,), prefix=())
  if head == "pretraining":
    linear("cls.seq_relationship", ("nsp_head",), E, 2, prefix=())
  if head in ("classification", "token_classification") and num_labels is not None:
    linear("classifier", ("classifier",), E, num_labels, prefix=())
  if head == "question_answering" and num_labels is not None:
    linear("qa_outputs", ("qa_outputs",), E, num_labels, prefix=())
  return table


def _modernbert_table(c: BertConfig, head: str | None, num_labels: int | None,
                      with_head: bool = True) -> list[_Weight]:
  """Every weight of the ModernBERT model `head` selects (the `ModernBertModel` keys under
  `model.` below a head); `with_head`: the classifiers' `head.*` prediction head is there."""
  E, H, D, I, V = (c.hidden_size, c.num_attention_heads, c.head_dim, c.intermediate_size,
                   c.vocab_size)
  table = _Table(() if head is None else ("bert",), E)
  table.add("embeddings.tok_embeddings.weight", ("embeddings", "word_embeddings", "embedding"),
            (V, E))
  table.norm("embeddings.norm", ("embeddings", "layer_norm"), bias=c.norm_bias)
  for i in range(c.num_hidden_layers):
    hf, ours = f"layers.{i}", ("encoder", f"layer_{i}")
    if not c.skips_attention_norm(i):
      table.norm(f"{hf}.attn_norm", ours + ("attention_norm",), bias=c.norm_bias)
    for part, proj in enumerate(("query", "key", "value")):  # Wqkv: [3 * H * D, E]
      table.linear(f"{hf}.attn.Wqkv", ours + ("attention", proj), E, H * D,
                   kernel_shape=(E, H, D), bias_shape=(H, D), bias=c.attention_bias, part=part,
                   parts=3)
    table.linear(f"{hf}.attn.Wo", ours + ("attention", "out"), H * D, E, kernel_shape=(H, D, E),
                 bias=c.attention_bias)
    table.norm(f"{hf}.mlp_norm", ours + ("output_norm",), bias=c.norm_bias)
    for part, proj in enumerate(("intermediate", "gate")):  # Wi: [2 * I, E], act(first) * second
      table.linear(f"{hf}.mlp.Wi", ours + (proj,), E, I, bias=c.mlp_bias, part=part, parts=2)
    table.linear(f"{hf}.mlp.Wo", ours + ("output",), I, E, bias=c.mlp_bias)
  table.norm("final_norm", ("final_norm",), bias=c.norm_bias)
  top = "mlm_head" if head == "mlm" else "head"
  if head == "mlm" or (head in _NO_POOLER + ("classification",) and with_head):
    table.linear("head.dense", (top, "transform"), E, E, bias=c.classifier_bias, prefix=())
    table.norm("head.norm", (top, "layer_norm"), bias=c.norm_bias, prefix=())
  if head == "mlm" and c.decoder_bias:
    table.add("decoder.bias", ("mlm_head", "bias"), (V,), prefix=())
  out = "qa_outputs" if head == "question_answering" else "classifier"
  if head in ("classification", "token_classification", "question_answering") and num_labels:
    table.linear("classifier", (out,), E, num_labels, prefix=())
  return table


# Layer stacking for scan_layers=True ---------------------------------------------------------

def stack_layers(encoder_params: dict[str, Any], num_layers: int) -> dict[str, Any]:
  """{"layer_0": t, ..., "layer_{n-1}": t} -> {"layers": t} with a leading [layers] axis."""
  names = [f"layer_{i}" for i in range(num_layers)]
  if sorted(encoder_params) != sorted(names):
    raise ValueError(f"stack_layers expects encoder keys {names}, got {sorted(encoder_params)}")
  layers = [encoder_params[n] for n in names]
  return {"layers": jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *layers)}


def unstack_layers(encoder_params: dict[str, Any]) -> dict[str, Any]:
  """{"layers": t with a leading [layers] axis} -> {"layer_0": t, ..., "layer_{n-1}": t}."""
  if set(encoder_params) != {"layers"}:
    raise ValueError(f"unstack_layers expects encoder keys ['layers'], got "
                     f"{sorted(encoder_params)}")
  leaves = jax.tree.leaves(encoder_params["layers"])
  sizes = {np.shape(x)[0] for x in leaves}
  if len(sizes) != 1:
    raise ValueError(f"stacked layer params disagree on the number of layers: {sorted(sizes)}")
  (n,) = sizes
  return {f"layer_{i}": jax.tree.map(lambda x, i=i: np.asarray(x[i]), encoder_params["layers"])
          for i in range(n)}


# Reading -------------------------------------------------------------------------------------

def architecture(head: str | None, family: str = "bert") -> str:
  """The transformers class of a head (None: BertModel; family "modernbert": ModernBert*)."""
  if head not in _ARCHITECTURES:
    raise ValueError(f"head={head!r} is not one of {HEADS}")
  if family == "modernbert":
    if head == "pretraining":
      raise ConfigError("ModernBERT has no pretraining (MLM + NSP) model; use head='mlm'")
    return _ARCHITECTURES[head].replace("Bert", "ModernBert", 1)
  return _ARCHITECTURES[head]


def is_transformers_dir(path: str) -> bool:
  """Whether `path` holds a checkpoint `load_hf_checkpoint` reads: config.json plus
  model.safetensors, a sharded model.safetensors.index.json, or pytorch_model.bin."""
  return (os.path.isfile(os.path.join(path, "config.json"))
          and any(os.path.isfile(os.path.join(path, f)) for f in _WEIGHT_FILES))


def read_label_names(path: str) -> list[str] | None:
  """The label names in config.json's `id2label`, in label order; None when it has none."""
  return id2label_names(path, fileio.read_json(os.path.join(path, "config.json")))


def id2label_names(path: str, hf_config: dict, model: str = "") -> list[str] | None:
  """The label names of a parsed config.json's `id2label` ({"0": name, ...}), ordered by id;
  the ids must be 0..n-1. None when it has none, or with `model` (e.g. "a token classifier")
  ConfigError "<path>/config.json has no id2label: not <model>". One-line ConfigErrors naming
  the file."""
  id2label = hf_config.get("id2label") or {}
  if not id2label:
    if model:
      raise ConfigError(f"{path}/config.json has no id2label: not {model}")
    return None
  try:
    names = {int(k): v for k, v in dict(id2label).items()}
  except (TypeError, ValueError):
    names = {}
  if sorted(names) != list(range(len(id2label))):
    raise ConfigError(f"{path}/config.json: the id2label ids {list(id2label)} are not "
                      f"0..{len(id2label) - 1}")
  return [names[i] for i in range(len(names))]


def read_pooling(path: str) -> str:
  """The sentence vector a directory's classifier was trained with: config.json's
  `bert_jax_pooling`, else "cls_pooler" (every transformers checkpoint)."""
  return fileio.read_json(os.path.join(path, "config.json")).get(POOLING_KEY, "cls_pooler")


def read_settings(path: str) -> dict[str, Any]:
  """The task settings in a directory's config.json: {name: value} of its `bert_jax_<name>`
  keys (pooling included); {} for a transformers checkpoint."""
  hf_config = fileio.read_json(os.path.join(path, "config.json"))
  return {k.removeprefix(SETTINGS_PREFIX): v for k, v in hf_config.items()
          if k.startswith(SETTINGS_PREFIX)}


def _read_weights(path: str) -> dict[str, np.ndarray]:
  safetensors, index, torch_bin = (os.path.join(path, f) for f in _WEIGHT_FILES)
  if os.path.exists(safetensors):
    return load_file(safetensors)  # bf16 loads as ml_dtypes.bfloat16 (registered by jax)
  if os.path.exists(index):
    shards = sorted(set(fileio.read_json(index)["weight_map"].values()))
    weights = {}
    for shard in shards:
      weights.update(load_file(os.path.join(path, shard)))
    return weights
  if os.path.exists(torch_bin):
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError(f"reading {torch_bin} needs torch (pip install torch), or convert the "
                        "checkpoint to model.safetensors") from e
    state = torch.load(torch_bin, map_location="cpu", weights_only=True)
    return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in state.items()}
  present = sorted(os.listdir(path))
  raise FileNotFoundError(f"no weights in {path}: looked for {', '.join(_WEIGHT_FILES)}; "
                          f"found {present}")


def _normalize_keys(weights: dict[str, np.ndarray], path: str,
                    prefix: str = "bert.") -> dict[str, np.ndarray]:
  """Strips the `bert.` (ModernBERT: `model.`) prefix, renames old LayerNorm gamma/beta, drops
  buffers."""
  out = {}
  for key, value in weights.items():
    name = key.removeprefix(prefix)
    if name.endswith(".gamma") and "LayerNorm" in name:
      name = name[:-len("gamma")] + "weight"
    elif name.endswith(".beta") and "LayerNorm" in name:
      name = name[:-len("beta")] + "bias"
    if name in _IGNORED:
      continue
    if name in out:
      raise DataError(f"{path}: weight {name!r} appears twice (with and without {prefix!r})")
    out[name] = value
  return out


def load_hf_checkpoint(path: str, *, head: str | None = None,
                       config_overrides: dict[str, Any] | None = None,
                       ) -> tuple[BertConfig, dict[str, Any]]:
  """Reads a transformers BERT directory: `config.json` + `model.safetensors` (or the sharded
  `model.safetensors.index.json`, or `pytorch_model.bin`, which needs torch).

  Returns `(config, params)`: params are numpy arrays in `config.param_dtype`, the tree under
  "params" (no partitioning boxes). `head` picks the model they are for:

    None              `BertModel(config)`: {"embeddings", "encoder", "pooler"}
    "mlm"             `BertForMaskedLM(config)`: {"bert" (no pooler), "mlm_head"}
    "pretraining"     `BertForPreTraining(config)`: {"bert", "mlm_head", "nsp_head"}
    "classification"  `BertForSequenceClassification(config, num_labels)`: {"bert", "classifier"};
                      "classifier" only when the checkpoint has one (a fine-tuned
                      BertForSequenceClassification), else init one and add it.
    "token_classification"  `BertForTokenClassification(config, num_labels)`: {"bert" (no
                      pooler), "classifier"}; "classifier" only when the checkpoint has one.
    "question_answering"  `BertForQuestionAnswering(config)`: {"bert" (no pooler),
                      "qa_outputs"}; "qa_outputs" only when the checkpoint has one.

  With head=None, `BertModel(config).apply({"params": params}, ids, mask, segments)` takes them
  as returned.
  A ModernBERT directory (model_type "modernbert") gives a family="modernbert" config and the
  same models' trees without a pooler, with `final_norm`, and with `head` (the prediction
  head, when the checkpoint has one) beside "classifier" / "qa_outputs"; "pretraining" does
  not exist there. `apply({"params": params}, ids, mask)`: no token types.
  Checkpoints saved from BertModel (keys like `embeddings.word_embeddings.weight`) and from
  BertFor{MaskedLM,PreTraining,SequenceClassification,TokenClassification,QuestionAnswering}
  (`bert.`-prefixed, plus `cls.*` / `classifier.*` / `qa_outputs.*`) both load. Head weights
  the chosen model does not use are dropped (e.g. `head=None` on bert-base-uncased's
  BertForPreTraining weights); a tied `cls.predictions.decoder.weight` must equal the word
  embeddings. Any other unknown key, any missing key and any shape mismatch raise DataError
  naming the keys.
  `config_overrides` sets fields that config.json lacks (dtype, param_dtype, scan_layers,
  remat_policy, attention_impl, kernels); with scan_layers=True the layers come stacked
  (`stack_layers`).
  """
  if head not in HEADS:
    raise ValueError(f"head={head!r} is not one of {HEADS}")
  config_file = os.path.join(path, "config.json")
  if not os.path.exists(config_file):
    raise FileNotFoundError(f"{config_file} not found: not a transformers checkpoint directory")
  hf_config = fileio.read_json(config_file)
  for key in [k for k in hf_config if k.startswith(SETTINGS_PREFIX)]:
    del hf_config[key]  # the task's settings, not the encoder's (read_settings)
  config = BertConfig.from_dict(hf_config, **(config_overrides or {}))
  if config.family == "modernbert":
    weights = _normalize_keys(_read_weights(path), path, "model.")
    table = _modernbert_weights(path, config, head, weights)
    droppable = {k for k in weights if k.split(".")[0] in ("head", "decoder", "classifier")}
  else:
    weights = _normalize_keys(_read_weights(path), path)
    table = _bert_weights(path, config, head, weights)
    droppable = _HEAD_KEYS | set(_POOLER_KEYS)
  used = {w.hf_key for w in table}
  missing = sorted(k for k in used if k not in weights)
  unknown = sorted(k for k in weights if k not in used and k not in droppable)
  if missing or unknown:
    hint = ""
    if missing and set(missing) <= set(_POOLER_KEYS):
      hint = (" (BertForMaskedLM, BertForTokenClassification and BertForQuestionAnswering save "
              "no pooler: load with head='mlm', 'token_classification' or 'question_answering')")
    raise DataError(f"{path} does not match {architecture(head, config.family)} for its "
                    f"config.json: missing keys {missing}, unknown keys {unknown}{hint}")

  params: dict[str, Any] = {}
  for w in table:
    value = weights[w.hf_key]
    if tuple(value.shape) != w.hf_shape:
      raise DataError(f"{path}: weight {w.hf_key!r} has shape {tuple(value.shape)}, expected "
                      f"{w.hf_shape} from config.json")
    _set(params, w.path, np.asarray(w.to_flax(value), dtype=config.storage_dtype))
  if config.scan_layers:
    encoder = params["encoder"] if head is None else params["bert"]["encoder"]
    stacked = stack_layers(encoder, config.num_hidden_layers)
    encoder.clear()
    encoder.update(stacked)
  return config, params


def _bert_weights(path: str, config: BertConfig, head: str | None,
                  weights: dict[str, np.ndarray]) -> list[_Weight]:
  """The BERT head checks on a checkpoint's (normalized) `weights` -- the MLM / NSP heads there,
  one output bias, the tied decoder -- and the weight table to read; pops the decoder keys."""
  if head in ("mlm", "pretraining") and not any(k.startswith("cls.predictions.") for k in weights):
    raise DataError(f"{path} has no MLM head (no cls.predictions.* weights), so head={head!r} "
                    "cannot load; use head=None for the encoder alone")
  if head == "pretraining" and not any(k.startswith("cls.seq_relationship.") for k in weights):
    raise DataError(f"{path} has no next-sentence head (no cls.seq_relationship.* weights); "
                    "use head='mlm'")
  if "cls.predictions.decoder.bias" in weights:
    bias = weights.pop("cls.predictions.decoder.bias")
    if "cls.predictions.bias" not in weights:
      weights["cls.predictions.bias"] = bias
    elif not np.array_equal(bias, weights["cls.predictions.bias"]):
      raise DataError(f"{path}: cls.predictions.decoder.bias differs from cls.predictions.bias; "
                      "this model has one output bias")
  decoder = weights.pop("cls.predictions.decoder.weight", None)
  embeddings = weights.get("embeddings.word_embeddings.weight")
  if (decoder is not None and embeddings is not None and head in ("mlm", "pretraining")
      and not np.array_equal(decoder, embeddings)):
    raise DataError(f"{path}: cls.predictions.decoder.weight is not tied to "
                    "embeddings.word_embeddings.weight; this model ties them")

  head_key = "qa_outputs.weight" if head == "question_answering" else "classifier.weight"
  num_labels = weights[head_key].shape[0] if head_key in weights else None
  if head == "question_answering" and num_labels not in (None, 2):
    raise DataError(f"{path}: qa_outputs.weight has {num_labels} outputs; "
                    "BertForQuestionAnswering has 2 (start, end)")
  return _weight_table(config, head, num_labels)


def _modernbert_weights(path: str, config: BertConfig, head: str | None,
                        weights: dict[str, np.ndarray]) -> list[_Weight]:
  """The ModernBERT head checks (an MLM head there; the decoder tied to the word embeddings)
  and the weight table to read; pops decoder.weight."""
  architecture(head, "modernbert")  # no pretraining model
  if head == "mlm" and not ("decoder.bias" in weights or "decoder.weight" in weights
                            or ("head.dense.weight" in weights
                                and "classifier.weight" not in weights)):
    raise DataError(f"{path} has no MLM head (no decoder.* or head.* weights), so head='mlm' "
                    "cannot load; use head=None for the encoder alone")
  decoder = weights.pop("decoder.weight", None)
  embeddings = weights.get("embeddings.tok_embeddings.weight")
  if (decoder is not None and embeddings is not None and head == "mlm"
      and not np.array_equal(decoder, embeddings)):
    raise DataError(f"{path}: decoder.weight is not tied to embeddings.tok_embeddings.weight; "
                    "this model ties them")
  num_labels = weights["classifier.weight"].shape[0] if "classifier.weight" in weights else None
  if head == "question_answering" and num_labels not in (None, 2):
    raise DataError(f"{path}: classifier.weight has {num_labels} outputs; "
                    "ModernBertForQuestionAnswering needs 2 (start, end)")
  return _modernbert_table(config, head, num_labels, with_head="head.dense.weight" in weights)


# Writing -------------------------------------------------------------------------------------

def save_hf_checkpoint(path: str, config: BertConfig, params: dict[str, Any], *,
                       head: str | None = None,
                       label_names: Sequence[str] | None = None,
                       pooling: str = "cls_pooler",
                       problem_type: str | None = None,
                       settings: Mapping[str, Any] | None = None,
                       extra_files: Mapping[str, str | bytes] | None = None) -> str:
  """Writes `params` as a transformers checkpoint directory; returns `path`.

  `head` names the tree as in `load_hf_checkpoint` (None: BertModel, "mlm", "pretraining",
  "classification", "token_classification", "question_answering") and selects the
  transformers class written to config.json's `architectures`: BertModel keys are unprefixed,
  the others `bert.`-prefixed with `cls.*` / `classifier.*` / `qa_outputs.*` heads (the tied
  decoder weight is not written, as transformers does), so `<that class>.from_pretrained(path)`
  reports no missing or unexpected keys. For the classification heads config.json gets
  `id2label` / `label2id` from `label_names` (one per classifier output; default LABEL_i).
  `params` may be boxed (LogicallyPartitioned), wrapped in {"params": ...}, scanned or not, in
  any float dtype; weights are written as float32. `extra_files` ({name: text or bytes}, e.g.
  the tokenizer's), model.safetensors and config.json are written to a temp directory, given
  the umask's mode and renamed into `path` (config.json last); other files there stay.
  `pooling` other than "cls_pooler" (a classifier's `model.POOLINGS`) goes to config.json as
  `bert_jax_pooling`, with a warning: transformers pools with the pooler. `settings` (JSON
  values; bert_jax's task settings, e.g. a QA model's windows) go to config.json as
  `bert_jax_<name>` (`read_settings`). `problem_type` (a classifier's: single_label_
  classification, regression, multi_label_classification) goes to config.json's
  `problem_type`, which transformers' loss and pipeline read.
  A family="modernbert" config writes a ModernBertConfig and the ModernBert* class of `head`
  (`model.`-prefixed encoder); a classifier's pooling "cls" / "mean" goes to its
  `classifier_pooling` ("cls_pooler": the config's own).
  """
  from bert_jax.model import POOLINGS
  if head not in HEADS:
    raise ValueError(f"head={head!r} is not one of {HEADS}")
  architecture(head, config.family)  # ModernBERT: no pretraining model
  if pooling not in POOLINGS:
    raise ValueError(f"pooling={pooling!r} is not one of {', '.join(POOLINGS)}")
  if pooling != "cls_pooler" and head != "classification":
    raise ValueError(f"pooling={pooling!r} is for the classification head, not head={head!r}")
  if settings and "pooling" in settings:
    raise ValueError("pass the pooling as pooling=, not in settings")
  params = flax.core.unfreeze(nn.meta.unbox(params))
  if set(params) == {"params"}:
    params = params["params"]
  params = jax.tree.map(lambda x: np.asarray(jax.device_get(x)), params)
  expected_top = (_MODERNBERT_TOP_LEVEL if config.family == "modernbert" else _TOP_LEVEL)[head]
  if set(params) != expected_top:
    raise ValueError(f"head={head!r} expects top-level params {sorted(expected_top)}, got "
                     f"{sorted(params)}")
  body = params if head is None else params["bert"]
  if "layers" in body.get("encoder", {}):
    body = {**body, "encoder": unstack_layers(body["encoder"])}
    params = body if head is None else {**params, "bert": body}

  num_labels = None
  if head in ("classification", "token_classification"):
    num_labels = params["classifier"]["kernel"].shape[-1]
  elif head == "question_answering":
    num_labels = params["qa_outputs"]["kernel"].shape[-1]
  if label_names is not None:
    if head not in ("classification", "token_classification"):
      raise ValueError(f"label_names are for the classification heads, not head={head!r}")
    label_names = list(label_names)
    if len(label_names) != num_labels or len(set(label_names)) != num_labels:
      raise ValueError(f"label_names {label_names} must be {num_labels} distinct names, one per "
                       "classifier output")
  tensors = _tensors(config, head, params, num_labels)

  modern = config.family == "modernbert"
  hf_config = config.to_dict()
  hf_config["architectures"] = [architecture(head, config.family)]
  if head in ("classification", "token_classification"):
    names = label_names or [f"LABEL_{i}" for i in range(num_labels)]
    hf_config["id2label"] = {str(i): name for i, name in enumerate(names)}
    hf_config["label2id"] = {name: i for i, name in enumerate(names)}
  if problem_type is not None:
    if head != "classification":
      raise ValueError(f"problem_type={problem_type!r} is for the classification head, not "
                       f"head={head!r}")
    hf_config["problem_type"] = problem_type
  if modern and head == "classification" and pooling in ("cls", "mean"):
    hf_config["classifier_pooling"] = pooling  # ModernBERT's own choice: cls or mean
  elif pooling != "cls_pooler":
    hf_config[POOLING_KEY] = pooling
    log.warning("%s: this classifier pools with %r; transformers' "
                "BertForSequenceClassification ignores config.json's %s and pools with the "
                "[CLS] pooler (cls_pooler), so its outputs differ from bert_jax's. "
                "bert_jax.inference.load reads the key back.", path, pooling, POOLING_KEY)
  hf_config.update({f"{SETTINGS_PREFIX}{k}": v for k, v in (settings or {}).items()})
  _write_files(path, tensors, hf_config, extra_files or {})
  return path


def _tensors(config: BertConfig, head: str | None, params: dict[str, Any],
             num_labels: int | None) -> dict[str, np.ndarray]:
  """Our (unstacked, numpy) `params` -> the transformers tensors, float32, every shape checked
  and every param placed; fused tensors (ModernBERT's Wqkv, Wi) concatenated from their parts."""
  modern = config.family == "modernbert"
  table = (_modernbert_table if modern else _weight_table)(config, head, num_labels)
  prefix = "model." if modern else "bert."
  parts: dict[str, list[np.ndarray]] = {}
  for w in table:
    value = _get(params, w.path, w)
    if tuple(value.shape) != w.shape:
      raise ValueError(f"param {'/'.join(w.path)} has shape {tuple(value.shape)}, expected "
                       f"{w.shape} from the config")
    key = f"{prefix}{w.hf_key}" if w.path[0] == "bert" else w.hf_key  # heads are unprefixed
    parts.setdefault(key, []).append(w.to_hf(value.astype(np.float32)))  # fused: in order
  unused = sorted(set(_flat_paths(params)) - {"/".join(w.path) for w in table})
  if unused:
    raise ValueError(f"params the {architecture(head, config.family)} checkpoint has no place "
                     f"for: {unused}")
  return {k: np.ascontiguousarray(np.concatenate(v) if len(v) > 1 else v[0])
          for k, v in parts.items()}


def _write_files(path: str, tensors: dict[str, np.ndarray], hf_config: dict,
                 extra_files: Mapping[str, str | bytes]) -> None:
  """Writes `extra_files`, model.safetensors and config.json into a temp directory in `path`,
  fsyncs each, gives each the umask's mode (safetensors writes 0600), renames them into `path`
  and fsyncs `path` (`fileio`'s atomic writes, for a set of files)."""
  reserved = {"model.safetensors", "config.json"} & set(extra_files)
  if reserved or any(os.path.basename(n) != n or n.startswith(".") for n in extra_files):
    raise ValueError(f"extra_files must be plain file names other than model.safetensors and "
                     f"config.json, got {sorted(extra_files)}")
  os.makedirs(path, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tmp-save-", dir=path)
  try:
    for name, content in extra_files.items():
      data = content.encode("utf-8") if isinstance(content, str) else content
      with open(os.path.join(tmp, name), "wb") as f:
        f.write(data)
    save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
      json.dump(hf_config, f, indent=2, sort_keys=True)
      f.write("\n")
    names = [*extra_files, "model.safetensors", "config.json"]  # config last: a complete save
    for name in names:
      fileio.fsync_file(os.path.join(tmp, name))
      fileio.chmod_for_umask(os.path.join(tmp, name))
    for name in names:
      os.replace(os.path.join(tmp, name), os.path.join(path, name))
    fileio.fsync_dir(path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


# Tree helpers --------------------------------------------------------------------------------

def _set(tree: dict, path: tuple[str, ...], value):
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


def _get(tree: dict, path: tuple[str, ...], w: _Weight) -> np.ndarray:
  node = tree
  for name in path:
    if not isinstance(node, dict) or name not in node:
      raise ValueError(f"param {'/'.join(path)} (for {w.hf_key}) is missing")
    node = node[name]
  return node


def _flat_paths(tree: dict, prefix: str = ""):
  for name, node in tree.items():
    if isinstance(node, dict):
      yield from _flat_paths(node, f"{prefix}{name}/")
    else:
      yield f"{prefix}{name}"
