"""load_dataset_spec over each format (files written in tmp_path), eval sources and the
typed section. Column mapping and chat templates: test_data_columns.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from flowrl.data import DataConfig, DataFileError, load_dataset_spec, parse_data_config
from flowrl.errors import ConfigError, MissingExtraError

ROWS = [{"question": f"{i}+1=", "solution": str(i + 1), "level": i % 3} for i in range(10)]
MAP = {"question": "prompt", "solution": "answer"}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def expected(rows=ROWS):
    return [{"prompt": r["question"], "answer": r["solution"], "level": r["level"]} for r in rows]


def test_jsonl_relative_to_the_config_directory(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ROWS)
    splits = load_dataset_spec(DataConfig(path="train.jsonl", columns=MAP), base_dir=tmp_path)
    assert splits.train == expected() and splits.eval is None
    assert splits.column("prompt")[:2] == ["0+1=", "1+1="]


def test_json_array_file(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps(ROWS))
    assert load_dataset_spec(DataConfig(path="train.json", columns=MAP),
                             tmp_path).train == expected()


def test_parquet(tmp_path):
    write_parquet(tmp_path / "train.parquet", ROWS)
    assert load_dataset_spec(DataConfig(path="train.parquet", columns=MAP),
                             tmp_path).train == expected()


def test_datasets_directory_and_datasetdict_splits(tmp_path):
    import datasets  # the test extra installs it (flowrl[data])

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "flat"))
    assert load_dataset_spec(DataConfig(path="flat", columns=MAP), tmp_path).train == expected()
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:7]),
                               "test": datasets.Dataset.from_list(ROWS[7:])})
    dd.save_to_disk(str(tmp_path / "dict"))
    splits = load_dataset_spec(DataConfig(path="dict", columns=MAP, eval_split="test"), tmp_path)
    assert splits.train == expected(ROWS[:7]) and splits.eval == expected(ROWS[7:])
    with pytest.raises(DataFileError, match=r"dict has no split 'validation' \(splits: train, "
                                            r"test\); set data.split"):
        load_dataset_spec(DataConfig(path="dict", columns=MAP, split="validation"), tmp_path)


def test_eval_file(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ROWS[:8])
    write_parquet(tmp_path / "eval.parquet", ROWS[8:])
    cfg = DataConfig(path="train.jsonl", eval_path="eval.parquet", columns=MAP, format="auto")
    splits = load_dataset_spec(cfg, tmp_path)
    assert splits.train == expected(ROWS[:8]) and splits.eval == expected(ROWS[8:])


def test_eval_fraction_is_deterministic_disjoint_and_seeded(tmp_path):
    rows = [{"prompt": str(i)} for i in range(100)]
    write_jsonl(tmp_path / "d.jsonl", rows)
    a = load_dataset_spec(DataConfig(path="d.jsonl", eval_fraction=0.1, seed=3), tmp_path)
    b = load_dataset_spec(DataConfig(path="d.jsonl", eval_fraction=0.1, seed=3), tmp_path)
    c = load_dataset_spec(DataConfig(path="d.jsonl", eval_fraction=0.1, seed=4), tmp_path)
    assert a.eval == b.eval and a.train == b.train
    assert len(a.eval) == 10 and len(a.train) == 90
    assert sorted(a.column("prompt") + a.column("prompt", "eval"), key=int) == \
        [str(i) for i in range(100)]
    assert a.eval != c.eval
    # both parts keep the file's order
    assert a.column("prompt", "eval") == sorted(a.column("prompt", "eval"), key=int)


def test_eval_fraction_leaving_nothing_to_train_on(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a"}])
    with pytest.raises(DataFileError, match="d.jsonl: eval_fraction=0.5 of 1 rows leaves "
                                            "nothing to train on"):
        load_dataset_spec(DataConfig(path="d.jsonl", eval_fraction=0.5), tmp_path)


def test_missing_file_unknown_suffix_and_plain_directory(tmp_path):
    with pytest.raises(DataFileError, match=f"data file {tmp_path / 'no.jsonl'} does not exist"):
        load_dataset_spec(DataConfig(path="no.jsonl"), tmp_path)
    (tmp_path / "d.csv").write_text("prompt\na\n")
    with pytest.raises(DataFileError, match="d.csv: cannot tell its format from the suffix "
                                            "'.csv'; set data.format"):
        load_dataset_spec(DataConfig(path="d.csv"), tmp_path)
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataFileError, match="plain is not a `datasets` save_to_disk directory"):
        load_dataset_spec(DataConfig(path="plain"), tmp_path)


def test_bad_jsonl_lines_name_file_and_line(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"prompt": "x"}\n\n{"prompt": \n')
    with pytest.raises(DataFileError, match=r"a.jsonl line 3: not valid JSON"):
        load_dataset_spec(DataConfig(path="a.jsonl"), tmp_path)
    (tmp_path / "b.jsonl").write_text('{"prompt": "x"}\n["x"]\n')
    with pytest.raises(DataFileError, match=r"b.jsonl line 2: a list, expected a JSON object"):
        load_dataset_spec(DataConfig(path="b.jsonl"), tmp_path)
    (tmp_path / "d.json").write_text('[{"prompt": "x"},\n {"prompt": }]')
    with pytest.raises(DataFileError, match=r"d.json line 2: not valid JSON"):
        load_dataset_spec(DataConfig(path="d.json"), tmp_path)
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(DataFileError, match=r"dir.jsonl: cannot be read as jsonl"):
        load_dataset_spec(DataConfig(path="dir.jsonl", format="jsonl"), tmp_path)
    (tmp_path / "c.jsonl").write_text("\n")
    with pytest.raises(DataFileError, match=r"c.jsonl has no rows"):
        load_dataset_spec(DataConfig(path="c.jsonl"), tmp_path)


def test_not_a_parquet_file(tmp_path):
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(DataFileError, match=r"x.parquet: not a readable Parquet file"):
        load_dataset_spec(DataConfig(path="x.parquet"), tmp_path)


def test_section_errors_name_the_field():
    with pytest.raises(ConfigError, match="data.eval_fractoin: unknown field; did you mean "
                                          "'eval_fraction'"):
        parse_data_config({"path": "d.jsonl", "eval_fractoin": 0.1})
    with pytest.raises(ConfigError, match="give at most one eval source; got eval_path and "
                                          "eval_fraction"):
        parse_data_config({"path": "d.jsonl", "eval_path": "e.jsonl", "eval_fraction": 0.1})
    with pytest.raises(ConfigError, match="data.eval_fraction: Input should be less than 1"):
        parse_data_config({"path": "d.jsonl", "eval_fraction": 1.5})
    with pytest.raises(ConfigError, match="data: expected a mapping, got a str"):
        parse_data_config("d.jsonl")


def test_without_pyarrow_the_error_names_the_extra(tmp_path, monkeypatch):
    write_parquet(tmp_path / "t.parquet", ROWS)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MissingExtraError, match="reading Parquet data needs 'pyarrow', which is "
                                                "not installed: pip install 'flowrl\\[data\\]'"):
        load_dataset_spec(DataConfig(path="t.parquet"), tmp_path)


def test_importing_data_and_rewards_loads_no_optional_library():
    code = ("import sys, flowrl.data, flowrl.rewards; print([m for m in ('datasets', 'pyarrow', "
            "'transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
