"""RewardPool: success, exceptions, timeouts, hung and dead workers, wrong returns, metrics,
in process, thread and inline mode. A failure scores error_score for its call's samples only."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time

import pytest
from pydantic import ValidationError

from flowrl.rewards import RewardConfig, RewardFunctionError, RewardInputError, RewardPool
from rewards.reward_files import write_rewards

METRIC_KEYS = {"reward/calls", "reward/errors", "reward/timeouts", "reward/failed_samples",
               "reward/mean", "time/reward_s"}


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("conf")
    write_rewards(d)
    return d


@pytest.fixture(scope="module")
def procs(reward_dir):
    # One pool for the module: each spawned worker imports flowrl (seconds on a busy machine).
    cfg = RewardConfig(function="rewards.py:score", timeout_s=1.5, error_score=-1.0,
                       num_workers=2, call_batch_size=2)
    with RewardPool(cfg, base_dir=reward_dir) as pool:
        yield pool


def _batch(*completions):
    return ["p"] * len(completions), list(completions), ["6"] * len(completions)


def test_success_scores_every_sample_in_order(procs):
    prompts, comps, answers = _batch("6", "7", "6", "6", "x")
    res = procs.score(prompts, comps, answer=answers)
    assert res.scores == [1.0, 0.0, 1.0, 1.0, 0.0]
    assert set(res.metrics) == METRIC_KEYS
    assert res.metrics["reward/calls"] == 3 and res.metrics["reward/errors"] == 0
    assert res.metrics["reward/mean"] == pytest.approx(0.6)
    assert res.metrics["time/reward_s"] > 0 and res.failures == []


def test_exception_scores_that_call_error_score_and_is_counted(procs, caplog):
    prompts, comps, answers = _batch("boom", "6", "6", "6")
    with caplog.at_level(logging.WARNING, logger="flowrl.rewards"):
        res = procs.score(prompts, comps, answer=answers)
    assert res.scores == [-1.0, -1.0, 1.0, 1.0]
    assert res.metrics["reward/errors"] == 1 and res.metrics["reward/failed_samples"] == 2
    msg = res.failures[0]
    assert "reward function 'rewards.py:score' raised ValueError: no score for boom" in msg
    assert "rewards.py" in msg and "samples 0..1 score -1.0 (process mode)" in msg
    assert "no score for boom" in caplog.text


@pytest.mark.parametrize("first,expected", [
    ("short", "returned 1 scores for 2 completions"),
    ("text", "returned a str; expected a list of 2 floats"),
    ("nan", "returned nan at position 0"),
])
def test_wrong_return_is_a_counted_error_naming_the_function(procs, first, expected):
    prompts, comps, answers = _batch("6", "6", first, "6")
    res = procs.score(prompts, comps, answer=answers)
    assert res.scores == [1.0, 1.0, -1.0, -1.0]
    assert res.metrics["reward/errors"] == 1
    assert f"reward function 'rewards.py:score' {expected}" in res.failures[0]


def test_hung_call_times_out_its_worker_is_replaced_and_the_pool_goes_on(procs):
    before, replaced = set(procs._procs.pids), procs.replaced_workers
    prompts, comps, answers = _batch("6", "6", "hang", "6")
    t0 = time.monotonic()
    res = procs.score(prompts, comps, answer=answers)
    assert time.monotonic() - t0 < 10  # the 60 s sleep was cut at the 1.5 s timeout
    assert res.scores == [1.0, 1.0, -1.0, -1.0]
    assert res.metrics["reward/timeouts"] == 1 and res.metrics["reward/errors"] == 0
    assert "took longer than 1.5s; its worker process was killed and replaced" in res.failures[0]
    assert procs.replaced_workers == replaced + 1
    assert len(set(procs._procs.pids) - before) == 1  # one new process
    again = procs.score(*_batch("6", "7", "6", "6")[:2], answer=["6"] * 4)
    assert again.scores == [1.0, 0.0, 1.0, 1.0]
    assert procs.totals["timeouts"] >= 1


def test_a_worker_that_dies_mid_call_is_replaced(procs):
    replaced = procs.replaced_workers
    res = procs.score(*_batch("die", "6", "6", "6")[:2], answer=["6"] * 4)
    assert res.scores == [-1.0, -1.0, 1.0, 1.0]
    assert "its worker process died during the call (exit code 3)" in res.failures[0]
    assert procs.replaced_workers == replaced + 1
    assert procs.score(["p"], ["6"], answer=["6"]).scores == [1.0]


def test_inconsistent_columns_are_refused_naming_the_column(procs):
    with pytest.raises(RewardInputError, match="reward column 'answer' has 1 values for 2 "
                                               "completions"):
        procs.score(["p", "p"], ["6", "6"], answer=["6"])


def test_calls_run_in_worker_processes(reward_dir):
    cfg = RewardConfig(function="rewards.py:pid", num_workers=1)
    with RewardPool(cfg, base_dir=reward_dir) as pool:
        pids = set(pool.score(["p"] * 3, ["a"] * 3).scores)
        assert pids == {float(pool._procs.pids[0])} and os.getpid() not in pids


def test_module_function_in_workers_gets_only_the_columns_it_takes(tmp_path, monkeypatch):
    write_rewards(tmp_path / "m_pkg", "scoring.py")
    (tmp_path / "m_pkg" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers inherit sys.path
    cfg = RewardConfig(function="m_pkg.scoring:only_answer", num_workers=1)
    with RewardPool(cfg) as pool:
        res = pool.score(["p", "p"], ["c", "c"], answer=["ab", "abcd"], level=[1, 2])
    assert res.scores == [2.0, 4.0] and res.failures == []


def test_thread_mode_times_out_without_waiting_for_the_hung_call(reward_dir):
    cfg = RewardConfig(function="rewards.py:score", mode="thread", timeout_s=0.5,
                       num_workers=2, call_batch_size=1, error_score=0.5)
    with RewardPool(cfg, base_dir=reward_dir) as pool:
        t0 = time.monotonic()
        res = pool.score(["p"] * 4, ["hang", "6", "boom", "6"], answer=["6"] * 4)
    assert time.monotonic() - t0 < 5
    assert res.scores == [0.5, 1.0, 0.5, 1.0]
    assert res.metrics["reward/timeouts"] == 1 and res.metrics["reward/errors"] == 1
    assert "its thread was left running" in "\n".join(res.failures)


def test_inline_mode(reward_dir):
    cfg = RewardConfig(function="rewards.py:score", mode="inline", call_batch_size=2)
    pool = RewardPool(cfg, base_dir=reward_dir)
    res = pool.score(["p"] * 4, ["6", "6", "short", "6"], answer=["6"] * 4)
    assert res.scores == [1.0, 1.0, 0.0, 0.0] and res.metrics["reward/errors"] == 1
    assert "(inline mode)" in res.failures[0]
    pool.close()


def test_config_is_typed():
    with pytest.raises(ValidationError, match="timeout_s"):
        RewardConfig(function="r.py:f", timeout_s=0)
    with pytest.raises(ValidationError, match="mode"):
        RewardConfig(function="r.py:f", mode="fork")
    with pytest.raises(ValidationError, match="num_wokers"):
        RewardConfig(function="r.py:f", num_wokers=2)


def test_a_function_that_loads_here_but_not_in_a_worker_fails_at_construction(tmp_path):
    (tmp_path / "parent_only.py").write_text(
        "import multiprocessing\n"
        "if multiprocessing.parent_process() is not None:\n"
        "    raise RuntimeError('needs the training process')\n"
        "def score(prompts, completions, **kw):\n    return [0.0] * len(completions)\n")
    cfg = RewardConfig(function="parent_only.py:score", num_workers=1)
    before = set(multiprocessing.active_children())
    with pytest.raises(RewardFunctionError) as err:
        RewardPool(cfg, base_dir=tmp_path)
    msg = str(err.value)
    assert "reward function 'parent_only.py:score': loading it in a worker process failed" in msg
    assert "RuntimeError: needs the training process" in msg
    assert set(multiprocessing.active_children()) <= before  # nothing left running
