"""Reading rows (one dict per example) from JSONL, Parquet and `datasets` directories.

pyarrow and datasets are optional (``pip install 'flowrl[data]'``) and imported only when a
file of theirs is read.
"""

from __future__ import annotations

import json
from pathlib import Path

from flowrl.errors import ConfigError
from flowrl.models._extras import require


class DataFileError(ConfigError):
    """A data file is missing, unreadable or malformed; names the file and the row or line."""


def detect_format(path: Path, fmt: str) -> str:
    """The reader for ``path``: ``fmt`` itself, or guessed from the suffix / directory."""
    if not path.exists():
        raise DataFileError(f"data file {path} does not exist")
    if fmt != "auto":
        return fmt
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return "hf_disk"
        raise DataFileError(f"data directory {path} is not a `datasets` save_to_disk directory "
                            f"(no dataset_info.json or dataset_dict.json)")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise DataFileError(f"data file {path}: cannot tell its format from the suffix "
                        f"'{suffix}'; set data.format to jsonl, parquet or hf_disk")


def read_jsonl(path: Path) -> list[dict]:
    """One JSON object per line (blank lines skipped); a ``.json`` file may be one array."""
    text = path.read_text()
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataFileError(f"data file {path} line {err.lineno}: not valid JSON "
                                f"({err.msg})") from None
        for i, row in enumerate(rows):
            _check_object(row, path, f"row {i}")
        return rows
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFileError(f"data file {path} line {n}: not valid JSON ({err.msg})") from None
        _check_object(row, path, f"line {n}")
        rows.append(row)
    return rows


def _check_object(row: object, path: Path, where: str) -> None:
    if not isinstance(row, dict):
        raise DataFileError(f"data file {path} {where}: a {type(row).__name__}, expected a "
                            f"JSON object with named columns")


def read_parquet(path: Path) -> list[dict]:
    """All rows of a Parquet file (pyarrow)."""
    pq = require("pyarrow.parquet", "data", "reading Parquet data")
    try:
        return pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises its own ArrowInvalid / OSError kinds
        raise DataFileError(f"data file {path}: not a readable Parquet file ({err})") from err


def read_hf_disk(path: Path, split: str) -> list[dict]:
    """Rows of a ``Dataset.save_to_disk`` directory, or of ``split`` of a ``DatasetDict``."""
    datasets = require("datasets", "data", "reading a `datasets` directory")
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as err:
        raise DataFileError(f"data directory {path}: `datasets` cannot load it ({err})") from err
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataFileError(f"data directory {path} has no split '{split}' (splits: "
                                f"{', '.join(ds)}); set data.split")
        ds = ds[split]
    return ds.to_list()


def read_rows(path: Path, fmt: str, split: str = "train") -> list[dict]:
    """Rows of ``path`` in format ``fmt`` (``auto`` guesses); an empty source is an error."""
    kind = detect_format(path, fmt)
    readers = {"jsonl": read_jsonl, "parquet": read_parquet,
               "hf_disk": lambda p: read_hf_disk(p, split)}
    try:
        rows = readers[kind](path)
    except OSError as err:  # a directory given as a file, no permission, ...
        raise DataFileError(f"data file {path}: cannot be read as {kind} ({err})") from err
    if not rows:
        raise DataFileError(f"data file {path} has no rows")
    return rows
