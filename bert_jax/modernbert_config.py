"""transformers' ModernBertConfig <-> BertConfig with family="modernbert".

ModernBERT is BERT with these options (config.py): pre-norm with layer 0 reading the embedding
norm as is, bias-free LayerNorms and projections (`norm_bias`, `attention_bias`, `mlp_bias`),
GeGLU (`feed_forward="gated"`), rotary positions with a global and a local base, a local window
of `local_attention` keys on every layer but each `global_attn_every_n_layers`-th, a final norm,
no token types, no pooler. Key by key:

  ModernBertConfig                      BertConfig
  hidden_activation                     hidden_act
  norm_eps                              layer_norm_eps
  norm_bias, attention_bias, mlp_bias   the same
  rope_parameters.full_attention        rope_theta (rope_type "default" only)
  rope_parameters.sliding_attention     local_rope_theta
  (global_rope_theta, local_rope_theta  older config.json keys, read too)
  layer_types / global_attn_every_n_layers   global_attn_every_n_layers (every n-th global)
  local_attention                       local_attention
  attention_dropout                     attention_probs_dropout_prob
  mlp_dropout (embedding_dropout, classifier_dropout written equal)   hidden_dropout_prob
  classifier_bias, classifier_activation, decoder_bias, classifier_pooling   the same

Token ids other than pad_token_id (bos, eos, cls, sep) belong to the tokenizer: they are not
kept, and are written as None. Dropout sits where bert_jax puts it (after each sublayer);
outputs match transformers' in eval mode.
"""

from __future__ import annotations

from typing import Any

from bert_jax.errors import ConfigError

# ModernBertConfig keys with no effect on bert_jax's computation.
_IGNORED = {
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype",
    "initializer_cutoff_factor", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id",
    "deterministic_flash_attn", "sparse_prediction", "sparse_pred_ignore_index",
    "tie_word_embeddings", "reference_compile", "repad_logits_with_grad", "id2label",
    "label2id", "problem_type", "_name_or_path", "output_attentions", "output_hidden_states",
    "return_dict", "embedding_dropout", "classifier_dropout", "is_decoder",
    "add_cross_attention", "chunk_size_feed_forward", "is_encoder_decoder", "use_cache",
}
_SAME = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
         "intermediate_size", "max_position_embeddings", "initializer_range", "pad_token_id",
         "norm_bias", "attention_bias", "mlp_bias", "local_attention", "classifier_bias",
         "classifier_activation", "decoder_bias", "classifier_pooling")
_RENAMED = {"hidden_activation": "hidden_act", "norm_eps": "layer_norm_eps",
            "attention_dropout": "attention_probs_dropout_prob",
            "mlp_dropout": "hidden_dropout_prob"}
# What makes a BertConfig ModernBERT, whatever its size.
FIXED = dict(family="modernbert", norm_position="pre", norm_type="layer_norm",
             embedding_norm=True, final_norm=True, feed_forward="gated",
             position_embedding_type="rotary", type_vocab_size=0)
_DEFAULTS = dict(norm_bias=False, attention_bias=False, mlp_bias=False, rope_theta=160000.0,
                 local_rope_theta=10000.0, local_attention=128, global_attn_every_n_layers=3,
                 classifier_bias=False, classifier_activation="gelu", layer_norm_eps=1e-5,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                 classifier_pooling="cls")


def options(**overrides) -> dict[str, Any]:
  """BertConfig fields of a ModernBERT (transformers' defaults), `overrides` on top:
  `BertConfig(**options(hidden_size=...))`."""
  return {**FIXED, **_DEFAULTS, **overrides}


def _rope_theta(d: dict[str, Any], layer_type: str, old_key: str, default: float) -> float:
  params = (d.get("rope_parameters") or {}).get(layer_type) or {}
  if params.get("rope_type", "default") != "default":
    raise ConfigError(f"config.json rope_parameters.{layer_type}.rope_type="
                      f"{params['rope_type']!r}: only 'default' rotary is supported")
  return float(params.get("rope_theta", d.get(old_key, default)))


def _every_n(d: dict[str, Any]) -> int:
  """global_attn_every_n_layers from layer_types (checked to be that pattern) or the key."""
  n = int(d.get("global_attn_every_n_layers", 3))
  layer_types = d.get("layer_types")
  if layer_types is None:
    return n
  full = [i for i, t in enumerate(layer_types) if t == "full_attention"]
  n = full[1] if len(full) > 1 else max(len(layer_types), 1)
  expected = ["full_attention" if i % n == 0 else "sliding_attention"
              for i in range(len(layer_types))]
  if list(layer_types) != expected:
    raise ConfigError(f"config.json layer_types={layer_types} is not a global layer every n "
                      "layers from layer 0")
  return n


def from_hf(d: dict[str, Any]) -> dict[str, Any]:
  """ModernBertConfig's config.json contents -> BertConfig fields."""
  known = set(_SAME) | set(_RENAMED) | _IGNORED | {
      "rope_parameters", "global_rope_theta", "local_rope_theta", "layer_types",
      "global_attn_every_n_layers", "rope_scaling"}
  unknown = sorted(k for k in d if k not in known)
  if unknown:
    raise ConfigError(f"config.json has ModernBERT keys bert_jax does not know: {unknown}")
  if d.get("rope_scaling"):
    raise ConfigError(f"config.json rope_scaling={d['rope_scaling']!r} is not supported")
  fields = options()
  fields.update({k: d[k] for k in _SAME if k in d})
  fields.update({ours: d[theirs] for theirs, ours in _RENAMED.items() if theirs in d})
  fields["rope_theta"] = _rope_theta(d, "full_attention", "global_rope_theta", 160000.0)
  fields["local_rope_theta"] = _rope_theta(d, "sliding_attention", "local_rope_theta", 10000.0)
  fields["global_attn_every_n_layers"] = _every_n(d)
  if fields.get("pad_token_id") is None:
    fields["pad_token_id"] = 0
  return fields


def to_hf(c) -> dict[str, Any]:
  """A family="modernbert" BertConfig -> ModernBertConfig's config.json contents."""
  differ = {k: getattr(c, k) for k, v in FIXED.items() if getattr(c, k) != v}
  if differ:
    raise ConfigError(f"ModernBertConfig cannot express {differ}: family='modernbert' needs "
                      f"{FIXED}")
  d = {k: getattr(c, k) for k in _SAME}
  d.update({theirs: getattr(c, ours) for theirs, ours in _RENAMED.items()})
  d["classifier_activation"] = c.classifier_activation or c.hidden_act
  d.update(embedding_dropout=c.hidden_dropout_prob, classifier_dropout=c.hidden_dropout_prob)
  local_theta = c.rope_theta if c.local_rope_theta is None else c.local_rope_theta
  d["rope_parameters"] = {
      "full_attention": {"rope_type": "default", "rope_theta": float(c.rope_theta)},
      "sliding_attention": {"rope_type": "default", "rope_theta": float(local_theta)}}
  d["global_attn_every_n_layers"] = c.global_attn_every_n_layers
  d["layer_types"] = ["sliding_attention" if c.is_local(i) else "full_attention"
                      for i in range(c.num_hidden_layers)]
  if c.local_attention == 0:  # transformers needs a window; no layer uses it
    d["local_attention"] = 2 * c.max_position_embeddings
  d.update(model_type="modernbert", architectures=["ModernBertForMaskedLM"], dtype="float32",
           bos_token_id=None, eos_token_id=None, cls_token_id=None, sep_token_id=None,
           tie_word_embeddings=True)
  return d
