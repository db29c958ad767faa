"""Extractive question answering (SQuAD v1.1), fine-tuning all-MiniLM-L6-v2.

No SQuAD training set is available offline: split the shared part of the dev set by article
(the last 10 articles evaluate, the first 38 train; see
bert_jax/tasks/question_answering/reader.py), then train:
  python -m bert_jax.tasks.question_answering.split \
      --squad ../shared/data/squad_v1.1/dev-v1.1-part.json --out workdirs/squad_split
  python -m bert_jax.main --config=experiments/qa_squad.py --workdir=workdirs/qa \
      --config.data.train_file=workdirs/squad_split/train.json \
      --config.data.eval_file=workdirs/squad_split/eval.json
Online, the TFDS dataset works by name: --config.data.name=squad/v1.1 (not tested here).

Windows of 384 pieces overlapping by 128 (question <= 64 pieces), packed (`data.packing`):
7,793 training windows average 175 pieces, so 16 rows hold ~32 windows (1.98 a row, 90% of
the pieces real against 46% padded). 2 epochs of the 7,612 training questions = 493 steps,
lr 1e-4 with 10% warmup; measured here: EM 0.527 / F1 0.658 on the 1,768 eval questions in 75
min (docs/RESULTS_tasks.md). `:short` is a CPU budget, unpacked as measured: windows of 256
pieces overlapping by 64, 150 steps of 16 windows (about 0.3 epoch).
eval_results.json holds exact_match and f1 (fractions) and the number of questions;
predictions.json is the official {id: answer} file; report.md the analysis.
Ask afterwards: python -m bert_jax.answer --checkpoint W --context_file FILE "question?"
"""

from experiments import base
from experiments.finetune_rotten_tomatoes import minilm_dir


def get_config(arg: str = "full"):
  c = base.get_config()
  c.task = "question_answering"
  c.init_from = minilm_dir()
  c.data.update(name="local_squad", max_seq_length=384, max_query_length=64, doc_stride=128,
                n_best_size=20, max_answer_length=30, train_split="train",
                eval_split="validation")
  c.model.max_position_embeddings = 512
  c.optimizer.update(learning_rate=1e-4, warmup_ratio=0.1, weight_decay=0.01)  # 49 of 493
  if arg == "short":
    c.data.update(max_seq_length=256, doc_stride=64)
  c.data.packing = arg != "short"
  c.batch_size = 16  # windows (:short) or packed rows of ~2 windows
  c.eval_batch_size = 64
  c.num_train_steps = 150 if arg == "short" else 493
  c.log_every_steps = 25
  c.eval_every_steps = c.num_train_steps
  c.checkpoint_every_steps = 50
  c.keep_checkpoints = 1
  return c
