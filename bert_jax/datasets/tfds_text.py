"""`tfds_text`: pretraining on a TFDS text dataset you already prepared (e.g. `wikipedia`).

`data.name` is the prepared dataset (`wikipedia/20230601.en`); `data.text_key` names its
text feature ("text" by default). Its `train` split must exist as array_record files
(prepare it with `file_format="array_record"`, or convert it with
`tfds convert_format`); each record is one document. This builder reads it with
`tfds.data_source` (no TensorFlow), then tokenizes and packs it once like every
pretraining builder, holding out 2% of the documents as `validation`.
"""

from __future__ import annotations

from collections.abc import Iterator

from bert_jax.datasets import base
from bert_jax.errors import DataError


def open_prepared(name: str, data_dir: str):
  """The read-only builder of a prepared TFDS dataset; clear errors if unusable here."""
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core import read_only_builder
  try:
    builder = read_only_builder.builder_from_files(name, data_dir=data_dir)
  except Exception as e:  # DatasetNotFoundError and friends carry long listings
    raise FileNotFoundError(
        f"data.name={name!r}: no prepared TFDS dataset of that name under {data_dir} "
        f"(bert_jax builds movie_reviews_text, rotten_tomatoes, local_text and "
        f"local_classification itself; other datasets must be prepared beforehand, "
        f"with file_format='array_record'): {str(e).splitlines()[0]}") from None
  array_record = tfds.core.file_adapters.FileFormat.ARRAY_RECORD
  file_format = builder.info.file_format
  if file_format != array_record and array_record in (builder.info.alternative_file_formats or ()):
    builder = read_only_builder.builder_from_directory(builder.data_dir, file_format=array_record)
    file_format = array_record
  if file_format != array_record:
    raise DataError(
        f"{builder.data_dir}: prepared as {file_format.value if file_format else 'tfrecord'}, "
        f"but reading without TensorFlow needs array_record: re-prepare with "
        f"file_format='array_record' or run `tfds convert_format`.")
  return builder


class TfdsText(base.PretrainingBuilder):
  """Documents of a prepared TFDS dataset (its train split), packed for BERT pretraining."""

  code_path = base.module_path(__file__)

  def _source(self):
    builder = open_prepared(self.builder_config.source, str(self.data_dir_root))
    return builder.as_data_source("train")

  def _num_documents(self) -> int:
    n = len(self._source())
    return min(n, self.builder_config.max_documents or n)

  def _documents(self, quiet: bool = False) -> Iterator[str]:
    del quiet
    source, key = self._source(), self.builder_config.text_key
    for start in range(0, len(source), 1024):
      for record in source.__getitems__(range(start, min(start + 1024, len(source)))):
        text = record[key]
        yield text.decode("utf-8") if isinstance(text, bytes) else str(text)
