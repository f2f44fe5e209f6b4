"""Datasets from local files: JSONL, Parquet and `datasets` save_to_disk directories.

:func:`load_dataset_spec` reads a :class:`DataConfig`: columns renamed to flowrl's names
(``prompt``, ``answer``, ``chosen``, ``rejected``, ``completion``), required columns checked
(errors name the file, the row and the column), message-list prompts rendered with the
tokenizer's chat template, and an eval split (a file, a split, or a seeded fraction).
"""

from flowrl.data.config import CANONICAL, REQUIRED, DataConfig, parse_data_config
from flowrl.data.formats import DataFileError, read_rows
from flowrl.data.load import DataSplits, load_dataset_spec, split_eval
from flowrl.data.records import apply_chat_template

__all__ = ["DataConfig", "DataSplits", "DataFileError", "CANONICAL", "REQUIRED",
           "load_dataset_spec", "read_rows", "split_eval", "apply_chat_template",
           "parse_data_config"]
