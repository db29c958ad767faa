"""bert_jax: a pure-functional BERT in JAX/Flax.

The core (config, model, masking, steps, optimizer, transformers conversion) imports with only
jax, flax, optax, chex and numpy; the data pipeline and the training loop import their extra
dependencies lazily.
"""

from bert_jax.config import BertConfig
from bert_jax.model import (BertForMaskedLM, BertForPreTraining, BertForSequenceClassification,
                            BertModel, BertOutput, ClassificationHead, MLMHead)

__all__ = [
    "BertConfig", "BertModel", "BertOutput", "BertForMaskedLM", "BertForPreTraining",
    "BertForSequenceClassification", "ClassificationHead", "MLMHead",
]
