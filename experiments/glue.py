"""GLUE fine-tuning, one config per task: `experiments/glue.py:<task>` (cola, sst2, mrpc, stsb,
rte, wnli, qnli). The suite `python -m bert_jax.glue` runs these for every task and seed; one
run by hand:

  python -m bert_jax.main --config=experiments/glue.py:rte --workdir=workdirs/glue_rte \
      --config.data.glue_dir=../shared/data/glue --config.init_from=/path/to/bert

Hyperparameters: one global setting, BERT's (Devlin et al., 2019, section 4.1: batch 32, 3
epochs, the best learning rate of {5e-5, 4e-5, 3e-5, 2e-5} per task; google-research/bert's
run_classifier.py: max_seq_length 128, 10% warmup then linear decay, dropout 0.1), with one
learning rate for every task, 5e-5 (small models such as MiniLM prefer the top of the grid; a
suite runs one setting, not the grid: `--learning_rate` changes it). Per task only the epochs
differ: the small tasks (MRPC, STS-B, RTE, WNLI, <= 5,750 examples) train 5 epochs, crammed
BERT's one setting for every task (JonasGeiping/cramming, cramming/config/eval/GLUE_sane.yaml:
5 epochs, lr 4e-5, batch 16), the large ones (CoLA, SST-2, QNLI) BERT's 3.

`num_train_steps` is set by the suite from the epochs and the packed rows of the training
split (`bert_jax.tasks.packing_plan`): rows are packed (`data.packing`) so that a step holds about
32 examples. By hand, set `--config.num_train_steps` yourself.

Data: the GLUE TSVs of `data.glue_dir` (`bert_jax/datasets/glue_tsv.py`); with
`data.glue_dir` empty, TFDS's `glue/<task>` (prepared beforehand: this machine has no
internet), with the same examples and label names.
"""

from bert_jax.datasets.glue_tsv import SPECS
from experiments import base

TASKS = tuple(SPECS)  # cola, sst2, mrpc, stsb, rte, wnli, qnli
EPOCHS = {"cola": 3, "sst2": 3, "qnli": 3, "mrpc": 5, "stsb": 5, "rte": 5, "wnli": 5}
EXAMPLES_PER_STEP = 32


def get_config(arg: str = "rte"):
  if arg not in TASKS:
    raise ValueError(f"glue.py takes a GLUE task ({', '.join(TASKS)}), not {arg!r}")
  c = base.get_config()
  c.task = "classification"
  c.problem_type = SPECS[arg].problem_type
  c.data.update(name="glue_tsv", glue_task=arg, max_seq_length=128, train_split="train",
                eval_split="validation", packing=True)
  c.model.update(hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=512, max_position_embeddings=128)
  c.optimizer.update(learning_rate=5e-5, warmup_ratio=0.1)
  c.batch_size = 16  # packed rows; the suite sets it so a step holds ~32 examples
  c.eval_batch_size = 128
  c.num_train_steps = 1_000  # the suite sets it from EPOCHS
  c.log_every_steps = 50
  c.eval_every_steps = 1_000_000  # evaluate once, at the end
  c.checkpoint_every_steps = 250
  c.keep_checkpoints = 1
  return c


def use_tfds(c, task: str) -> None:
  """Reads TFDS's `glue/<task>` instead of the TSV files (same examples)."""
  text_key, pair_key = (SPECS[task].tfds_keys + ("",))[:2]
  c.data.update(name=f"glue/{task}", text_key=text_key, text_pair_key=pair_key,
                label_key="label")
