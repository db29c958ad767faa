"""Task registry: `config.task` names a folder (package) of this package whose `TASK` is the
task class.

| config.task           | folder                   | model                          |
|-----------------------|--------------------------|--------------------------------|
| pretraining           | pretraining/             | BertForMaskedLM / PreTraining  |
| classification        | classification/          | BertForSequenceClassification  |
| token_classification  | token_classification/    | BertForTokenClassification     |
| question_answering    | question_answering/      | BertForQuestionAnswering       |

A task's folder holds everything that is only its own: the `Task` subclass (task.py), its
readers, windows, metrics, error analysis and prediction files; its `__init__.py` exports
`TASK`. Adding a task is one folder here, an experiment config and its tests; the loop, the
steps and the CLIs find it by name (big_vision's import by name).
"""

from __future__ import annotations

import importlib
import pkgutil

from bert_jax.tasks.base import FinishedRun, Task

__all__ = ["FinishedRun", "Task", "get", "names"]


def names() -> list[str]:
  """Every registered task name."""
  return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg)


def get(name: str) -> type[Task]:
  """The task class registered as `name`; one clear error for an unknown name."""
  if name not in names():
    raise ValueError(f"unknown task {name!r}; tasks: {', '.join(names())}")
  return importlib.import_module(f"{__name__}.{name}").TASK
