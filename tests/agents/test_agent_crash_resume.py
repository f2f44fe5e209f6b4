"""A crash in the middle of an episode (its second rollout batch) loses nothing: resuming
from the last checkpoint replays the interrupted episode exactly, so the run ends where an
uninterrupted one does (issue 16: resume mid-episode exact)."""

from __future__ import annotations

import pytest
import torch

from agent_setup import LookupAgent, agent_config, build_agent
from tiny_engines import comparable, module_tensors, one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def _same(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in comparable(rows)]


def test_crash_in_the_middle_of_an_episode_resumes_exactly(tmp_path, monkeypatch):
    full = build_agent(agent_config(num_episode=3, output_dir=str(tmp_path / "full")))
    full_rows = full.learn()

    calls = {"n": 0}
    original = LookupAgent.forward_step

    def crash_once(self, data, iteration=0):
        calls["n"] += 1
        if calls["n"] == 4:  # episode 2's second rollout batch (2 batches per episode)
            raise RuntimeError("worker lost")
        return original(self, data, iteration)

    monkeypatch.setattr(LookupAgent, "forward_step", crash_once)
    engine = build_agent(agent_config(num_episode=3, output_dir=str(tmp_path / "crash"),
                                      save_episode_interval=1))
    with pytest.raises(Exception, match="worker lost"):
        engine.learn()
    assert [r["episode"] for r in engine.history] == [1]
    rows = engine.learn(resume=True)  # from the episode-1 checkpoint; episode 2 replayed
    assert [r["episode"] for r in rows] == [2, 3]
    assert _same(engine.history) == _same(full_rows)
    a, b = module_tensors(engine), module_tensors(full)
    for name in ("policy", "trainer"):
        for k, v in a[name].items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, b[name][k]), f"{name}/{k}"
