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

from bert_jax.errors import ConfigError
from bert_jax.tasks.base import FinishedRun, Task

__all__ = ["FinishedRun", "Task", "get", "names", "packing_plan"]


def names() -> list[str]:
  """Every registered task name."""
  return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg)


def get(name: str) -> type[Task]:
  """The task class registered as `name`; one clear error for an unknown name."""
  if name not in names():
    raise ConfigError(f"unknown task {name!r}; tasks: {', '.join(names())}")
  return importlib.import_module(f"{__name__}.{name}").TASK


def packing_plan(config) -> dict:
  """How `config`'s training split packs (`data.packing`), epoch 0 of seed 0: examples, packed
  rows, examples per row, mean length, and padded / packed row fill (real tokens / row tokens).

  Preparing the data and tokenizing the split once; a run's step count in epochs is
  `ceil(epochs * packed_rows / rows per step)`.
  """
  task_cls = get(config.task)
  task = task_cls.from_config(config, task_cls.data_info(config))
  it = task.iterator(config, split=config.data.train_split, global_batch_size=1, seed=0,
                     shuffle=True, num_epochs=1, packed=True)
  plan, row = it.plan, int(config.data.max_seq_length)
  examples, rows = len(plan.lengths), plan.num_rows
  return {"examples": examples, "packed_rows": rows, "examples_per_row": examples / rows,
          "mean_length": float(plan.lengths.mean()),
          "padded_fill": float(plan.lengths.mean()) / row, "packed_fill": plan.fill()}
