"""Fine-tune on your own labelled data: CSV or JSON Lines with `text`, `label`
(and optional `text_pair`) columns. Label names are mapped to ids in the order first seen.

  python -m bert_jax.main --config=experiments/finetune_csv.py --workdir=workdirs/mytask \
      --config.data.train_file=train.csv --config.data.eval_file=test.csv \
      --config.init_from=/path/to/bert_or_bert_jax_workdir

Derived from finetune_rotten_tomatoes (same optimizer and schedule); set num_train_steps to
about 3 epochs of your data. eval_results.json holds the final accuracy.
"""

from experiments import finetune_rotten_tomatoes


def get_config(arg: str = "minilm"):
  c = finetune_rotten_tomatoes.get_config(arg)
  c.data.update(name="local_classification", train_split="train", eval_split="validation")
  return c
