"""``flowrl train`` on bad input: exit status 2 for usage errors, 1 for a config a user got
wrong (the message names the field, no traceback), and nothing is trained."""

from __future__ import annotations

import json

import pytest

from flowrl import cli


@pytest.fixture
def config(tmp_path):
    def write(data: dict | str) -> str:
        path = tmp_path / "train.yaml"
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        return str(path)

    return write


GOOD = {"algorithm": {"name": "sft"}, "model": {"path": "no/such/dir"},
        "data": {"path": "sft.jsonl"}}


def run(capsys, *argv: str) -> tuple[int, str]:
    rc = cli.main(["train", *argv])
    return rc, capsys.readouterr().err


def test_missing_file_is_a_usage_error(capsys, tmp_path):
    rc, err = run(capsys, str(tmp_path / "nope.yaml"))
    assert rc == 2 and f"error: no such file: {tmp_path / 'nope.yaml'}" in err


def test_unknown_option_is_a_usage_error(capsys, config):
    rc, err = run(capsys, config(GOOD), "--epochs", "3")
    assert rc == 2 and "unknown option(s) --epochs" in err


@pytest.mark.parametrize("data, overrides, message", [
    ({**GOOD, "algorithm": {"name": "sfft"}}, [],
     "algorithm.name: unknown algorithm 'sfft'; did you mean 'sft'?"),
    (GOOD, ["algorithm.nmae=sft"], "algorithm.nmae: unknown field; did you mean 'name'?"),
    (GOOD, ["runtime_args.num_episode"], "override 'runtime_args.num_episode': expected "
                                         "KEY=VALUE"),
    (GOOD, ["=3"], "override '=3': '' is not a dotted key"),
    (GOOD, ["runtime_args.num_episode=0"],
     "runtime_args.num_episode: Input should be greater than or equal to 1"),
    ({k: v for k, v in GOOD.items() if k != "data"}, [], "data: Field required"),
    ({"runtime_args": {"num_episode": 1}}, [], "has no 'algorithm:' section, so it is not a "
                                               "flowrl train config"),
    ("algorithm: [grpo\n", [], "train.yaml:2:1: YAML syntax error"),
])
def test_bad_config_exits_1_naming_the_field(capsys, config, data, overrides, message):
    rc, err = run(capsys, config(data), *overrides)
    assert rc == 1, err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_missing_data_file_names_it(capsys, config, tmp_path):
    tiny = {"kind": "tiny_llama", "hidden_size": 16}  # written first, then the data is read
    rc, err = run(capsys, config({**GOOD, "model": {"path": str(tmp_path / "m"), "init": tiny}}))
    assert rc == 1 and "sft.jsonl" in err and "Traceback" not in err
