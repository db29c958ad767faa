"""Named-entity recognition on CoNLL-2003, fine-tuning all-MiniLM-L6-v2 (6 layers, hidden 384).

  python -m bert_jax.main --config=experiments/ner_conll2003.py --workdir=workdirs/ner \
      --config.data.train_file=../shared/data/conll2003/train.txt \
      --config.data.eval_file=../shared/data/conll2003/dev.txt
Online, the TFDS dataset works by name instead: --config.data.name=conll2003
--config.data.eval_split=validation (not tested here: no network).

Rows of 64 word pieces: CoNLL sentences average 18 pieces, and the 38 train / 25 dev sentences
longer than 62 are split into overlapping windows (every word is still predicted, by the window
where it has the most context), so 64 costs half of 128 and drops nothing.
Training rows are packed (`data.packing`): 8 rows hold ~25 sentences (3.09 a row, 96% of the
pieces real against 31% padded; 8 rows divide over 8 devices), faster per sentence by the
ratio in benchmarks/RESULTS.md ("Packing"). 3 epochs of 14,041 sentences (~4,560 packed
rows an epoch) = 1,710 steps, lr 5e-5 with 10% warmup. The run
writes eval_results.json (entity-level f1 / precision / recall, word accuracy), a
predictions.conll that conlleval re-scores, report.md (per-type table, entity-type confusion,
the most confident wrong entities) and best/ (the checkpoint with the best dev F1).
`:short` trains 300 steps (~0.5 epoch, a CPU budget). Results measured here:
docs/RESULTS_tasks.md (the :short F1 there predates packing: 300 padded steps of 32,
--config.data.packing=false --config.batch_size=32).
Tag text afterwards: echo "EU rejects German call." | python -m bert_jax.tag --checkpoint W
"""

from experiments import base
from experiments.finetune_rotten_tomatoes import minilm_dir


def get_config(arg: str = "full"):
  c = base.get_config()
  c.task = "token_classification"
  c.init_from = minilm_dir()
  c.data.update(name="local_tagged", max_seq_length=64, train_split="train",
                eval_split="validation")
  c.optimizer.update(learning_rate=5e-5, weight_decay=0.01,
                     warmup_ratio=170 / 1710)  # ~10%: the published run's 170 steps
  c.data.packing = True
  c.batch_size = 8  # packed rows: ~25 sentences a step
  c.eval_batch_size = 128
  c.num_train_steps = 300 if arg == "short" else 1710
  c.log_every_steps = 50
  c.eval_every_steps = 300 if arg == "short" else 570
  c.checkpoint_every_steps = c.eval_every_steps
  c.keep_checkpoints = 1
  return c
