"""BERT-base pretraining recipe (for GPU/TPU): 90% of steps at sequence 128, then 512.

Phase 1 (seq 128, batch 256, 900k steps in the paper; scale num_train_steps to your budget):
  python -m bert_jax.main --config=experiments/pretrain_base.py --workdir=runs/base128 \
      --config.data.name=wikipedia/20230601.en
Phase 2 (seq 512) continues from phase 1's parameters with a fresh optimizer:
  python -m bert_jax.main --config=experiments/pretrain_base.py:512 --workdir=runs/base512 \
      --config.init_from=runs/base128 --config.data.name=wikipedia/20230601.en

Any TFDS text corpus that is prepared as array_record works by name (`data.name`), or your
own documents with --config.data.name=local_text --config.data.text_files='corpus/*.txt'.
Expect the MLM loss to fall below 2.0 and MLM accuracy above 60% late in phase 1 (as BERT).
On several devices add e.g. --config.mesh.fsdp=8; bf16 compute is on (float32 parameters).
"""

from experiments import base


def get_config(arg: str = "128"):
  c = base.get_config()
  seq = int(arg or 128)
  c.data.max_seq_length = seq
  c.data.nsp = True
  c.masking.max_predictions_per_seq = 20 if seq <= 128 else 80
  c.model.update(dtype="bfloat16", param_dtype="float32")
  c.optimizer.update(learning_rate=1e-4, warmup_ratio=0.1 if seq > 128 else 1 / 90)  # 10k
  c.batch_size = 256
  c.num_train_steps = 900_000 if seq <= 128 else 100_000
  c.log_every_steps = 100
  c.eval_every_steps = 10_000
  c.num_eval_batches = 50
  c.checkpoint_every_steps = 5_000
  return c
