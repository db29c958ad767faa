"""Masked-language-model pretraining (and next-sentence prediction): one folder, one task.

  task.py  `Pretraining` (the `Task`; `TASK` is what the registry reads): BERT's 15% / 80-10-10
           masking inside the compiled step (`bert_jax.masking`), MLM / NSP losses;
           `predict_examples` fills [MASK]s (`fill_mask_batch`: jitted, MLM head at the
           [MASK] positions only)

Corpora are the TFDS builders of `bert_jax.datasets`; the CLI that fills masks with a trained
model is `python -m bert_jax.fill_mask`.
"""

from bert_jax.tasks.pretraining.task import (
    FIELDS,
    TASK,
    MaskingConfig,
    Pretraining,
    apply_masking,
    data_info,
    document_segments,
    make_iterator,
)

__all__ = ["FIELDS", "TASK", "MaskingConfig", "Pretraining", "apply_masking", "data_info",
           "document_segments", "make_iterator"]
