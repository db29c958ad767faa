"""Tiny BERT pretraining on the embedded IMDB review corpus: a few minutes on 2 CPU cores.

  python -m bert_jax.main --config=experiments/pretrain_tiny.py --workdir=workdirs/pretrain_tiny
  python -m bert_jax.main --config=experiments/pretrain_tiny.py:long --workdir=workdirs/long

The recipe of docs/RESULTS.md section 8 (the study `scripts/recipe_study.py`): a 2-layer,
hidden-128 BERT over an 8,192-piece vocabulary trained on the IMDB reviews
(`experiments/vocab/imdb_8k.txt`, made by `python -m bert_jax.train_vocab --vocab_size 8192`; the
embedding table is 1.0 M of 1.5 M parameters instead of 3.9 M of 4.3 M with bert-base-uncased's
30,522 pieces, so a step is 1.5x faster), no dropout (short runs underfit), AdamW lr 1e-3 with
5% warmup and linear decay, batches of 32 x 128 pieces, 15% masking (80/10/10). Crammed
BERT's recipe options: `--config.optimizer.schedule=one_cycle` (or `wsd`),
`--config.budget_minutes=60` (a wall-time budget; num_train_steps is then an upper bound) and
`--config.masking.random_token_prob=0` (80/20), see experiments/base.py.

The default run prepares `movie_reviews_text` once for this vocabulary (tokenized, about a
minute), then trains 1,000 steps (about 4 minutes on 2 cores); `:long` is the 60-minute
recipe (18,000 steps at this machine's 5.0 steps/s). The run prints step, loss, tokens/s
and ETA; metrics.jsonl and TensorBoard events land in the workdir. Fine-tuning from it takes
its vocabulary along (init_from).
"""

import os

from experiments import base

VOCAB_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vocab", "imdb_8k.txt")


def get_config(arg: str = ""):
  c = base.get_config()
  c.model.update(hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=512, max_position_embeddings=128,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  c.data.vocab_file = VOCAB_FILE
  c.data.max_seq_length = 128
  c.batch_size = 32
  c.eval_batch_size = 64
  c.log_every_steps = 20
  if arg == "long":
    c.num_train_steps = 18_000
    c.eval_every_steps = 1_800
    c.num_eval_batches = -1
    c.checkpoint_every_steps = 1_800
    c.keep_checkpoints = 10
  elif arg:
    raise ValueError(f"pretrain_tiny.py takes '' or 'long', not {arg!r}")
  else:
    c.num_train_steps = 1_000
    c.eval_every_steps = 250
    c.num_eval_batches = 10
    c.checkpoint_every_steps = 250
  c.optimizer.update(learning_rate=1e-3, warmup_ratio=0.05)
  return c
