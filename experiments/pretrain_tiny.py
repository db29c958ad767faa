"""Tiny BERT pretraining on the embedded IMDB review corpus: a few minutes on 2 CPU cores.

  python -m bert_jax.main --config=experiments/pretrain_tiny.py --workdir=workdirs/pretrain_tiny

The run prepares `movie_reviews_text` once (tokenized, about a minute), then trains a
2-layer, hidden-128 BERT for 300 steps of 32 x 128 tokens. Expect the MLM loss to fall from
about 10.3 (uniform over 30,522 word pieces) to about 7 and held-out MLM accuracy to rise
above 5% (the run prints step, loss, tokens/s and ETA; metrics.jsonl and TensorBoard events
land in the workdir).
"""

from experiments import base


def get_config():
  c = base.get_config()
  c.model.update(hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=512, max_position_embeddings=128)
  c.data.max_seq_length = 128
  c.optimizer.update(learning_rate=1e-3, warmup_steps=30)
  c.batch_size = 32
  c.eval_batch_size = 64
  c.num_train_steps = 300
  c.log_every_steps = 20
  c.eval_every_steps = 100
  c.num_eval_batches = 10
  c.checkpoint_every_steps = 100
  return c
