"""Sentence and sentence-pair classification: one folder, one task.

  task.py      `Classification` (the `Task`; `TASK` is what the registry reads)
  analysis.py  the failure check of report.md: confusion, per-label P/R, by length, worst errors

Readers are the TFDS builders of `bert_jax.datasets` (Rotten Tomatoes, CSV / JSON Lines / TSV
files); the CLI that classifies text with a trained model is `python -m bert_jax.predict`.
"""

from bert_jax.tasks.classification.task import (
    FIELDS,
    TASK,
    Classification,
    data_info,
    make_iterator,
    make_packed_iterator,
    predict_batch,
)

__all__ = ["FIELDS", "TASK", "Classification", "data_info", "make_iterator",
           "make_packed_iterator", "predict_batch"]
