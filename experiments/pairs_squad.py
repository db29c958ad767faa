"""Sentence-pair matching from SQuAD (QNLI's construction), fine-tuning all-MiniLM-L6-v2:
[CLS] question [SEP] sentence [SEP] -> does the sentence answer the question (1) or not (0)?

Make the pairs (split by article as the QA task: last 10 articles evaluate), then train:
  python scripts/make_pairs.py --squad ../shared/data/squad_v1.1/dev-v1.1-part.json \
      --split train --out workdirs/squad_pairs/train
  python scripts/make_pairs.py --squad ../shared/data/squad_v1.1/dev-v1.1-part.json \
      --split eval --out workdirs/squad_pairs/eval
  python -m bert_jax.main --config=experiments/pairs_squad.py --workdir=workdirs/pairs_minilm
Other files: --config.data.train_file=... --config.data.eval_file=...; the lexical baseline:
  python scripts/pair_baseline.py --train workdirs/squad_pairs/train/pairs.csv \
      --eval workdirs/squad_pairs/eval/pairs.csv

About one negative per positive (make_pairs.py's default): 16,087 train pairs (51.2%
positive), 3,817 eval (50.3%). 128 pieces per pair (1.2% of the train pairs are longer; the
longer text is cut first). One epoch (500 steps of batch 32) at lr 5e-5; `:short` trains 300
(0.6 epoch). eval_results.json holds accuracy; report.md the tokenizer output of a pair with
its segment ids, the confusion matrix (precision, recall and F1 of label 1 follow from it) and
the most confidently wrong pairs. `:scratch` starts from random weights of the tiny
architecture instead (finetune_rotten_tomatoes's `:scratch`).
"""

from experiments import finetune_csv

PAIRS_DIR = "workdirs/squad_pairs"


def get_config(arg: str = "minilm"):
  c = finetune_csv.get_config("scratch" if arg == "scratch" else "minilm")
  # text = question, text_pair = sentence; naming the pair column makes a file without it an
  # error instead of silently training on the questions alone.
  c.data.update(train_file=f"{PAIRS_DIR}/train/pairs.csv",
                eval_file=f"{PAIRS_DIR}/eval/pairs.csv", text_pair_key="text_pair",
                label_names="0,1", max_seq_length=128)
  # The tables in docs/RESULTS.md (section 7) were measured with padded rows of 32 pairs;
  # --config.data.packing=true --config.batch_size=16 packs ~2 pairs a row.
  c.data.packing = False
  c.batch_size = 32
  c.num_train_steps = 300 if arg == "short" else 500
  c.optimizer.warmup_ratio = 0.1
  c.eval_every_steps = c.num_train_steps
  c.checkpoint_every_steps = 100
  return c
