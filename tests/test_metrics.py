"""Per-episode metrics: JSONL, TensorBoard scalars, progress bars, and restoring after resume."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from flowrl.errors import MissingExtraError
from flowrl.runtime.loggers import tensorboard as metrics_mod
from flowrl.runtime.metrics import MetricsLogger
from tiny_engines import TINY_DPO, build_dpo, config, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def _scalars(tb_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_jsonl_and_tensorboard_get_every_episode(tmp_path):
    pytest.importorskip("tensorboard")
    cfg = config(TINY_DPO, num_episode=3, output_dir=str(tmp_path), eval_episode_interval=3)
    rows = build_dpo(cfg).learn()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == rows and [r["episode"] for r in lines] == [1, 2, 3]
    scalars = _scalars(tmp_path / "tb")
    assert [s for s, _ in scalars["policy/margin"]] == [1, 2, 3]
    assert scalars["policy/margin"][-1][1] == pytest.approx(rows[-1]["policy/margin"])
    assert [s for s, _ in scalars["eval/margin"]] == [3]
    assert "time/episode_s" in scalars


def test_tensorboard_can_be_turned_off_and_is_off_without_output_dir(tmp_path):
    cfg = config(TINY_DPO, num_episode=1, output_dir=str(tmp_path), tensorboard=False)
    build_dpo(cfg, False).learn()
    assert (tmp_path / "metrics.jsonl").is_file() and not (tmp_path / "tb").exists()
    assert MetricsLogger(None, tensorboard=None).tb_dir is None


def test_tensorboard_requested_but_missing_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingExtraError, match=r"pip install 'flowrl\[tensorboard\]'"):
        MetricsLogger(str(tmp_path), tensorboard=True)
    assert MetricsLogger(str(tmp_path), tensorboard=None).tb_dir is None  # auto: quietly off


def test_restore_rewrites_the_jsonl_and_purges_later_tensorboard_steps(tmp_path):
    pytest.importorskip("tensorboard")
    log = MetricsLogger(str(tmp_path), Console(file=io.StringIO()), tensorboard=True)
    for ep in (1, 2, 3):
        log.log(ep, {"loss": float(ep)})
    log.close()
    resumed = MetricsLogger(str(tmp_path), Console(file=io.StringIO()), tensorboard=True)
    resumed.restore(log.history[:2])  # the checkpoint was taken after episode 2
    resumed.log(3, {"loss": 30.0})
    resumed.close()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["episode"], r["loss"]) for r in lines] == [(1, 1.0), (2, 2.0), (3, 30.0)]
    assert _scalars(tmp_path / "tb")["loss"] == [(1, 1.0), (2, 2.0), (3, 30.0)]


def test_progress_bars_cover_episodes_rollout_and_training(monkeypatch):
    from rich.progress import Progress

    shown = []
    add_task = Progress.add_task

    def spy(self, description, *args, **kwargs):
        shown.append(description.strip())
        return add_task(self, description, *args, **kwargs)

    monkeypatch.setattr(Progress, "add_task", spy)
    engine = build_dpo(config(TINY_DPO, num_episode=2, progress=True), False)
    engine.setup()
    out = io.StringIO()
    engine.runner.logger.console = Console(file=out, force_terminal=True, width=120)
    engine.learn()
    assert shown == ["episodes", "rollout 1", "train 1", "rollout 2", "train 2"]
    assert "episodes" in out.getvalue() and "2/2" in out.getvalue()
