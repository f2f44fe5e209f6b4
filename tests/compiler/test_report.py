import json

import pytest

from flowrl.compiler import Schedule, check_residency
from flowrl.ir import Op
from flowrl.compiler.lower import lower
from flowrl.report.text import fmt_devices
from flowrl.report.trace import chrome_trace
from flowrl.errors import CompileError

from compiler_helpers import SYNC, compile_ppo, ppo_graphs


def test_json_round_trip_for_every_strategy():
    for strategy in ("colocate", "disaggregate", "search"):
        s = compile_ppo(strategy=strategy)
        data = s.to_json()
        assert json.loads(json.dumps(data)) == data
        back = Schedule.from_json(data)
        assert back.to_json() == data
        assert back.placement == s.placement and back.cluster == s.cluster
        assert [o.label() for o in back.ops["train"]] == [o.label() for o in s.ops["train"]]
        assert [c.id for c in back.graphs["rollout"].calls()] == \
            [c.id for c in s.graphs["rollout"].calls()]


def test_lowered_schedule_renders_and_round_trips():
    s = lower(ppo_graphs(), SYNC)
    assert "ops: rollout" in s.explain()
    assert Schedule.from_json(s.to_json()).to_json() == s.to_json()
    check_residency(s)
    with pytest.raises(ValueError, match="not a flowrl.schedule/1"):
        Schedule.from_json({"schema": "other"})


def test_chrome_trace_lanes_and_runs():
    s = compile_ppo(strategy="disaggregate")
    trace = chrome_trace(s)
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    runs = {e["args"]["run"] for e in spans if e["args"]["role"] == "rollout"}
    assert runs == set(range(1, s.estimates.repeats["rollout"] + 1))
    end = max(e["ts"] + e["dur"] for e in spans) / 1e6
    assert end == pytest.approx(s.estimates.iteration_time)
    for lane in {e["tid"] for e in spans}:  # one device never runs two ops at once
        mine = sorted((e["ts"], e["ts"] + e["dur"]) for e in spans if e["tid"] == lane)
        assert all(a[1] <= b[0] + 1e-3 for a, b in zip(mine, mine[1:]))


def test_check_residency_catches_a_missing_onload():
    s = compile_ppo(strategy="colocate")
    check_residency(s)
    train = s.ops["train"]
    i = next(i for i, o in enumerate(train) if o.node == "ppo_policy.train_step")
    train.insert(i, Op("offload", "ppo_policy", what=("optimizer",), devices=train[i].devices))
    with pytest.raises(CompileError, match=r"train op \d+ 'ppo_policy.train_step' .* needs "
                                           r"ppo_policy's optimizer on the device"):
        check_residency(s)


def test_fmt_devices():
    assert fmt_devices((0, 1, 2, 3, 6)) == "0-3,6"
    assert fmt_devices(()) == "-"
