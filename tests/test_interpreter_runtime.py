"""The runtimes as op interpreters, and the one call protocol shared by the local executor
and the Ray worker (the worker runs in this process here: no Ray cluster is started)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from ray import cloudpickle

import flowrl
from flowrl import BaseModule
from flowrl.compiler.lower import lower
from flowrl.errors import CompileError, StageError
from flowrl.ir import FLOW_INPUT, CallNode, FlowGraph, Op
from flowrl.runtime.executor import LocalExecutor
from flowrl.runtime.guards import NonFiniteError
from flowrl.runtime.protocol import Executor
from flowrl.runtime.ray_executor import RaySubmission
from flowrl.runtime.ray_worker import Skipped, Worker


class Noisy(BaseModule):
    """Adds seeded noise (so equal outputs mean equal seeding); fails or emits NaN on cue."""

    def forward_step(self, data, iteration=0):
        if data.get("fail"):
            raise ValueError("bad row")
        y = data["x"] * 2 + torch.rand(data["x"].shape)
        if data.get("nan"):
            y[0] = float("nan")
        self.log("calls", 1.0, "sum")
        return {"y": y}


def _setup(policy: str = "raise"):
    cfg = flowrl.init({"models": {"m": {}}, "runtime_args": {"on_nonfinite": policy}})
    graph = FlowGraph("rollout", outputs=("m.forward_step",))
    graph.add_call(CallNode("m.forward_step", "m", "forward_step", (FLOW_INPUT,),
                            source="flow.py:3"))
    schedule = lower({"rollout": graph}, [], {"m": cfg.model("m")})
    local = LocalExecutor(schedule, {"m": Noisy("m").bind(cfg)}, seed=11, on_nonfinite=policy)
    worker = InProcessWorker(cfg.model_dump(exclude={"source"}), [],
                             {"m": cloudpickle.dumps(Noisy("m"))}, 0, 1, {"m": 1}, 11, 1)
    return schedule, local, worker


class InProcessWorker(Worker):
    """The Ray worker class itself, with its inputs handed over directly (no object store)."""

    def fetch(self, refs: list) -> list:
        return refs


def _on_worker(worker: Worker, schedule, data, iteration: int = 4, episode: int = 1):
    op = schedule.ops_for("rollout")[0]
    node = schedule.graphs["rollout"].call(op.node)
    return worker.execute(op, node, "rollout", 0, episode, iteration, [(FLOW_INPUT, [data])])


def test_local_and_worker_run_a_call_identically():
    schedule, local, worker = _setup()
    data = {"x": torch.ones(3)}
    res = local.run("rollout", data, 4)
    out, meta = _on_worker(worker, schedule, data)
    assert torch.equal(res.output["y"], out["y"])  # same seed for the same call/iteration
    assert res.metrics == meta["metrics"] == [("m/calls", 1.0, "sum")]
    assert isinstance(local, Executor)  # the protocol callers use, no probing


def test_a_failing_call_names_the_same_details_in_both_runtimes():
    schedule, local, worker = _setup()
    data = {"x": torch.ones(3), "fail": True}
    with pytest.raises(StageError) as a:
        local.run("rollout", data, 4)
    with pytest.raises(StageError) as b:
        _on_worker(worker, schedule, data)
    assert str(a.value) == str(b.value)
    assert re.search(r"m.forward_step failed \(model 'm', Noisy.forward_step, episode 1, "
                     r"iteration 4, called at flow.py:3\) on input \{x:\(3,\), fail:bool\}: "
                     r"ValueError: bad row", str(a.value))


def test_nonfinite_outputs_raise_or_drop_the_batch_alike():
    schedule, local, worker = _setup("raise")
    data = {"x": torch.ones(3), "nan": True}
    with pytest.raises(NonFiniteError) as a:
        local.run("rollout", data, 4)
    with pytest.raises(NonFiniteError) as b:
        _on_worker(worker, schedule, data)
    assert str(a.value) == str(b.value)
    assert "model 'm' (method forward_step, episode 1, iteration 4): key 'y'" in str(a.value)

    schedule, local, worker = _setup("skip_batch")
    res = local.run("rollout", data, 4)
    out, meta = _on_worker(worker, schedule, data)
    assert isinstance(out, Skipped) and str(out) == res.skipped == "m.forward_step key 'y'"
    assert res.output is None and res.metrics == meta["metrics"]
    assert ("m/nonfinite/skipped_batches", 1.0, "sum") in res.metrics


def test_an_unknown_op_kind_names_role_index_and_kind_in_every_runtime():
    schedule, local, _ = _setup()
    schedule.ops["rollout"].append(Op("prefetch", "m"))  # type: ignore[arg-type]
    message = r"rollout op 1: unknown op kind 'prefetch' \(known: call, offload, onload, sync\)"
    with pytest.raises(CompileError, match=message):
        local.run("rollout", {"x": torch.ones(2)}, 0)
    driver = SimpleNamespace(schedule=schedule, episode=0, ray=SimpleNamespace(put=lambda v: v),
                             replicas=lambda model: [])  # a driver with no workers to call
    with pytest.raises(CompileError, match=message):
        RaySubmission(driver, {"x": torch.ones(2)}, 0).run("rollout")


def test_local_executor_offloads_syncs_and_records_every_op(tmp_path):
    schedule, local, _ = _setup()
    schedule.ops["rollout"] += [Op("offload", "m", what=("weights",)),
                                Op("onload", "m", what=("weights",))]
    local.run("rollout", {"x": torch.ones(2)}, 0)
    assert [r.op for r in local.records] == ["m.forward_step", "offload m (weights)",
                                             "onload m (weights)"]
    assert local.offload_ops == local.onload_ops == 1
    trace = local.write_trace(tmp_path / "t.json").read_text()
    assert '"name": "offload m (weights)"' in trace


def test_lower_fills_worker_groups_from_the_config():
    cfg = flowrl.init({"models": {"a": {"colocation_group": "g"}, "b": {"num_devices": 2},
                                  "c": {"colocation_group": "g", "num_devices": 3}}})
    schedule = lower({}, [], {m: cfg.model(m) for m in ("a", "b", "c")})
    groups = {g.name: (g.models, g.devices, g.replicas) for g in schedule.worker_groups}
    # replicas: the largest data-parallel size (num_devices without model parallelism)
    assert groups == {"a+c": (["a", "c"], [0, 1, 2], 3), "b": (["b"], [3, 4], 2)}


def test_ray_layout_reads_the_schedules_groups_and_names_models_left_out():
    from flowrl.errors import ConfigError
    from flowrl.runtime.layout import worker_groups

    cfg = flowrl.init({"models": {"a": {"ray_node_resource": "node_a"}, "b": {}}})
    configs = {m: cfg.model(m) for m in ("a", "b")}
    groups = worker_groups(lower({}, [], configs).worker_groups, configs)
    assert [(g.name, g.node_resource) for g in groups] == [("a", "node_a"), ("b", None)]
    with pytest.raises(ConfigError, match="the schedule has no worker group for models a, b"):
        worker_groups([], configs)
