"""bert_jax: a pure-functional BERT in JAX/Flax.

The core (config, model, kernels, masking, steps, optimizer, transformers conversion) imports
with only jax, flax, optax, chex and numpy; the data pipeline and the training loop import
their extra dependencies lazily.
"""

from bert_jax.config import BertConfig
from bert_jax.masking import MaskedBatch, mask_tokens
from bert_jax.model import (
  BertForMaskedLM,
  BertForPreTraining,
  BertForQuestionAnswering,
  BertForSequenceClassification,
  BertForTokenClassification,
  BertModel,
  BertOutput,
  ClassificationHead,
  MLMHead,
)

__all__ = [
    "BertConfig", "BertModel", "BertOutput", "BertForMaskedLM", "BertForPreTraining",
    "BertForSequenceClassification", "BertForTokenClassification", "BertForQuestionAnswering",
    "ClassificationHead", "MLMHead", "MaskedBatch", "mask_tokens", "load_hf_checkpoint",
    "save_hf_checkpoint",
]


def __getattr__(name):
  # transformers conversion is imported on first use (it needs safetensors).
  if name in ("load_hf_checkpoint", "save_hf_checkpoint"):
    from bert_jax import hf
    return getattr(hf, name)
  raise AttributeError(f"module 'bert_jax' has no attribute {name!r}")
