"""Defaults every experiment shares; experiment files import this and override.

Not an experiment itself. Keys that tests and tools rely on: num_train_steps, log_every_steps,
eval_every_steps, checkpoint_every_steps, seed, init_from, mesh, parallelism.
"""

import ml_collections

from bert_jax import sharding


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "pretraining"  # a module of bert_jax/tasks (bert_jax.tasks.names())
  c.seed = 0
  # a bert_jax workdir (its newest checkpoint; <workdir>/checkpoints/<step> for another step;
  # its vocabulary unless data.vocab_file is set) or a transformers BERT directory
  c.init_from = ""
  # classification: the sentence vector the classifier reads (bert_jax.model.POOLINGS):
  # cls_pooler (BERT's tanh dense over [CLS], as transformers), cls, mean or max.
  c.pooling = "cls_pooler"
  # classification: single_label_classification (softmax), regression (one float score, MSE)
  # or multi_label_classification (sigmoid per label, multi-hot labels), as transformers.
  c.problem_type = "single_label_classification"

  # BertConfig fields (transformers' names); vocab_size 0 = the tokenizer's.
  c.model = ml_collections.ConfigDict(dict(
      vocab_size=0, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
      intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
      attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
      initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=0, dtype="float32",
      param_dtype="float32", attention_impl="auto", kernels="auto", remat_policy="none",
      scan_layers=False))

  c.data = ml_collections.ConfigDict(dict(
      name="movie_reviews_text", data_dir="", vocab_file="", max_seq_length=128, nsp=False,
      short_seq_prob=0.1, text_files="", train_file="", eval_file="", text_key="text",
      text_pair_key="", label_key="label", label_names="", label_separator="|", max_documents=0,
      num_workers=0,  # local_text preparation processes (0: one per core; stream_prepare.py)
      train_split="train", eval_split="validation", glue_task="", glue_dir="",
      # Fine-tuning: several whole examples per training row (segment ids; row_packing.py).
      # Pretraining: documents sharing a full-sentence row do not attend to each other
      # (`packing` is accepted there as the old name of per_document_attention).
      packing=False, max_examples_per_row=16, per_document_attention=False,
      # classification: documents longer than max_seq_length pieces (truncate | windows:
      # pieces between window starts, 0 = half a window; mean | max of the windows' logits).
      long_inputs="truncate", window_step=0, window_aggregation="mean",
      # token_classification: CoNLL tag column; label every piece of a word (False: the first
      # piece only, google-research/bert's choice; exports then split words under "simple").
      tag_column=-1, label_all_pieces=True,
      # question_answering: question pieces kept, window overlap, answer search.
      max_query_length=64, doc_stride=128, n_best_size=20, max_answer_length=30))
  # Pretraining: mask_prob of the eligible tokens are predicted (at most
  # max_predictions_per_seq a row); a selected token becomes [MASK] with mask_token_prob, a
  # random id with random_token_prob, else stays (BERT's 80/10/10; 0.8/0.0 is 80/20).
  c.masking = ml_collections.ConfigDict(dict(
      mask_prob=0.15, max_predictions_per_seq=20, whole_word=False, mask_token_prob=0.8,
      random_token_prob=0.1))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=1e-4, weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-6,
      clip_norm=1.0,
      # Warmup as a fraction of num_train_steps (round(ratio * steps), at least 1 for ratio > 0);
      # warmup_steps >= 0 overrides it with an absolute count, -1 uses the ratio.
      warmup_ratio=0.01, warmup_steps=-1,
      # The schedule (bert_jax/optim.py): linear (BERT's warmup + linear decay to 0), one_cycle
      # (crammed BERT's triangle: from cycle_start of the peak up to it at cycle_peak of the
      # budget, then down to 0; warmup not read) or wsd (warmup, stable, then a 1 - sqrt decay
      # to 0 over the last decay_ratio of the budget).
      schedule="linear", decay_ratio=0.2, cycle_start=0.25, cycle_peak=0.75))

  c.batch_size = 256  # global, over all processes and devices
  c.eval_batch_size = 256
  c.grad_accum_steps = 1
  c.num_train_steps = 100_000  # with budget_minutes: an upper bound
  # > 0: a wall-time budget, as crammed BERT: the schedule runs over elapsed / budget (warmup:
  # optimizer.warmup_ratio of it, warmup_steps must be -1) and the run stops when it is spent,
  # saving and evaluating as at the end; elapsed time is kept in the checkpoints (resume).
  c.budget_minutes = 0.0
  c.log_every_steps = 100
  c.eval_every_steps = 5_000
  c.num_eval_batches = -1  # -1: the whole eval split
  c.checkpoint_every_steps = 5_000
  c.keep_checkpoints = 3

  # Parallelism: a (data, fsdp, tensor) mesh, -1 = the remaining devices; or "pmap".
  c.parallelism = "jit"
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.logical_axis_rules = [list(r) for r in sharding.DEFAULT_RULES]
  return c
