"""Extractive question answering (SQuAD v1.1): one folder, one task.

  task.py        `QuestionAnswering` (the `Task`; `TASK` is what the registry reads)
  reader.py      SQuAD v1.1 JSON / TFDS -> `Example`s; the split by article
  windows.py     `[CLS] question [SEP] context-window [SEP]` rows with offsets, max context
  prediction.py  start/end logits -> the n-best answer spans; predictions.json
  metrics.py     the official SQuAD v1.1 EM / F1; the error analysis of report.md
  split.py       `python -m bert_jax.tasks.question_answering.split`: one file -> train/eval

The CLI that answers questions with a trained model is `python -m bert_jax.answer`.
"""

from bert_jax.tasks.question_answering.task import (
    TASK,
    QuestionAnswering,
    failure_lines,
    read_split,
    span_logits,
)

__all__ = ["TASK", "QuestionAnswering", "failure_lines", "read_split", "span_logits"]
