"""Token classification (named-entity recognition): one folder, one task.

  task.py     `TokenClassification` (the `Task`; `TASK` is what the registry reads)
  conll.py    CoNLL / JSON Lines / TFDS readers, IOB tags and the label list
  windows.py  words -> wordpiece windows (max-context rule), predictions back to words
  metrics.py  seqeval entity scores, entity spans, the error analysis, predictions.conll

The CLI that tags text with a trained model is `python -m bert_jax.tag`.
"""

from bert_jax.tasks.token_classification.task import (
    TASK,
    TokenClassification,
    failure_lines,
    read_split,
    tag_batch,
)

__all__ = ["TASK", "TokenClassification", "failure_lines", "read_split", "tag_batch"]
