"""Logging users expect: every metric on the console (grouped, one block per episode), where
outputs go, and Weights & Biases (offline mode, no network) beside JSONL and TensorBoard."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from rich.console import Console

from flowrl.config import load_config
from flowrl.errors import ConfigError, MissingExtraError
from flowrl.config.tracking import WandbArgs
from flowrl.runtime.loggers import format_episode
from flowrl.runtime.loggers.wandb import WandbError, WandbSink
from flowrl.runtime.metrics import MetricsLogger
from tiny_engines import TINY_GRPO, build_grpo, config, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def _wandb_files(root: Path) -> list[Path]:
    """The binary run files of the offline W&B runs under ``root``."""
    return sorted(root.glob("wandb/offline-run-*/run-*.wandb"))


def test_console_block_shows_every_metric_grouped_by_prefix():
    row = {"episode": 3, "samples": 32.0, "reward/score": 0.5, "policy/generated_tokens": 64.0,
           "grpo_policy/kl": 0.0123456, "grpo_policy/nonfinite/skipped_batches": 1.0,
           "time/train_s": 1.5, "eval/score": None}
    text = format_episode(row)
    lines = text.splitlines()
    assert lines[0] == "episode 3 samples=32"
    groups = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert groups == {"reward": ["score=0.5"], "eval": ["score=nan"],
                      "grpo_policy": ["kl=0.01235", "nonfinite/skipped_batches=1"],
                      "policy": ["generated_tokens=64"], "time": ["train_s=1.5"]}
    # well-known groups first, time last
    assert [line.split()[0] for line in lines[1:]][:2] == ["reward", "eval"]
    assert lines[-1].split()[0] == "time"


def test_a_run_prints_every_logged_metric_once_per_episode(capsys):
    rows = build_grpo(config(TINY_GRPO, num_episode=2), False).learn()
    out = capsys.readouterr().out
    assert out.count("episode 1") == 1 and out.count("episode 2") == 1
    block = out[out.index("episode 2"):]
    for key in rows[-1]:  # module-logged ones too (grad_norm, pg_loss, ...)
        if key != "episode":
            assert f" {key.partition('/')[2] or key}=" in block, key
    assert "grad_norm=" in block and "pg_loss=" in block and "clipfrac=" in block


def test_the_console_can_be_swapped_after_setup():
    log = MetricsLogger(None)
    out = io.StringIO()
    log.console = Console(file=out, width=200)
    log.log(1, {"loss": 2.0, "actor/kl": float("nan")})
    assert out.getvalue().splitlines() == ["episode 1 loss=2", "  actor  kl=nan"]
    assert log.history == [{"episode": 1, "actor/kl": None, "loss": 2.0}]


def test_wandb_offline_writes_the_run_files_without_a_network(tmp_path, capsys):
    pytest.importorskip("wandb")
    cfg = config(TINY_GRPO, num_episode=2, output_dir=str(tmp_path), save_episode_interval=2,
                 wandb={"project": "flowrl-test", "name": "tiny-run", "mode": "offline",
                        "tags": ["tag-one", "ci"]})
    engine = build_grpo(cfg, False)
    rows = engine.learn()
    out = capsys.readouterr().out
    files = _wandb_files(tmp_path)
    assert len(files) == 1
    run_id = (tmp_path / "wandb_run_id").read_text().strip()
    assert files[0].name == f"run-{run_id}.wandb"
    data = files[0].read_bytes()
    for key in ("reward/score", "grpo_policy/loss", "grpo_policy/grad_norm", "time/episode_s"):
        assert key.encode() in data, key
    assert b"flowrl-test" in data and b"tag-one" in data and b"tiny-run" in data
    # the start line says where every output goes
    line = next(x for x in out.splitlines() if x.startswith("run dir:"))
    assert f"run dir: {tmp_path} |" in line and f"metrics: {tmp_path}/metrics.jsonl" in line
    assert f"TensorBoard: {tmp_path}/tb" in line and f"checkpoints: {tmp_path}/checkpoints" in line
    assert f"W&B: {files[0].parent} (offline)" in line
    # JSONL keeps working beside it
    assert [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == rows
    # a later learn() continues the same W&B run
    engine.learn(num_episode=3)
    again = _wandb_files(tmp_path)
    assert len(again) == 2 and all(f.name == f"run-{run_id}.wandb" for f in again)


def test_wandb_disabled_logs_nothing_and_says_so(tmp_path, capsys):
    cfg = config(TINY_GRPO, num_episode=1, output_dir=str(tmp_path),
                 wandb={"project": "p", "mode": "disabled"})
    build_grpo(cfg, False).learn()
    assert "| W&B: disabled" in capsys.readouterr().out
    assert not (tmp_path / "wandb").exists() and not (tmp_path / "wandb_run_id").exists()


def test_wandb_off_by_default(capsys):
    assert load_config({}).runtime_args.wandb is None
    build_grpo(config(TINY_GRPO, num_episode=1), False).learn()
    assert "run dir: none (no output_dir)" in capsys.readouterr().out


def test_wandb_missing_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now fails
    with pytest.raises(MissingExtraError,
                       match=r"runtime_args.wandb needs 'wandb', which is not installed: "
                             r"pip install 'flowrl\[wandb\]'"):
        MetricsLogger(str(tmp_path), wandb=WandbArgs(project="p", mode="offline"))


def test_wandb_that_cannot_start_names_the_section(tmp_path):
    pytest.importorskip("wandb")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(WandbError, match=r"runtime_args.wandb: could not start the W&B run "
                                         r"\(project 'p', mode offline\)"):
        WandbSink(WandbArgs(project="p", mode="offline", dir=str(blocker / "sub")), None)


@pytest.mark.parametrize("section, message", [
    ({"project": "p", "mode": "online-ish"},
     "runtime_args.wandb.mode: Input should be 'online', 'offline' or 'disabled'"),
    ({"projct": "p"}, "runtime_args.wandb.projct: unknown field; did you mean 'project'?"),
    ({"mode": "offline"}, "runtime_args.wandb.project: Field required"),
    ({"project": "p", "tags": "a,b"}, "runtime_args.wandb.tags: Input should be a valid list"),
])
def test_bad_wandb_sections_name_the_field(section, message):
    with pytest.raises(ConfigError) as err:
        load_config({"runtime_args": {"wandb": section}})
    assert message in str(err.value)
