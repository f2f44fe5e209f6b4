"""The pass interface, the op interpreter base, the episode spec and the strategy registry."""

from __future__ import annotations

from dataclasses import replace

import pytest

from compiler_helpers import ARGS, METHODS, SYNC, compile_ppo, ppo_graphs, ppo_models
from flowrl.compiler import pipeline
from flowrl.compiler.passes import Pass, PlanContext, run_passes
from flowrl.compiler.placement import register_strategy, strategy_names
from flowrl.compiler.placement.registry import _STRATEGIES
from flowrl.errors import CompileError, OutOfMemoryAtCompileError
from flowrl.ir import EpisodeSpec, Op, OpInterpreter, Schedule, parse_cluster


def _ctx(models=None, **kw) -> PlanContext:
    return PlanContext(graphs=ppo_graphs(), models=models or ppo_models(7), sync=SYNC,
                       cluster=parse_cluster("8xH100-80GB"), args=ARGS, methods=METHODS, **kw)


def test_pass_list_builds_the_same_schedule_as_compile_schedule():
    done = run_passes(_ctx(strategy="search"), pipeline.PASSES)
    assert done.schedule.to_json() == compile_ppo(strategy="search").to_json()
    # issue 13 added 'decoupled' (proximal log-probs) and 'pipeline' (max_staleness >= 1).
    assert [p.name for p in pipeline.PASSES] == ["validate", "decoupled", "resources",
                                                "placement", "memory", "offload", "schedule",
                                                "pipeline", "assemble"]
    assert [p.name for p in pipeline.SCORING_PASSES] == ["memory", "offload", "schedule"]


def test_missing_requirement_names_the_pass():
    with pytest.raises(CompileError, match="compiler pass 'memory' requires meshes"):
        run_passes(_ctx(), [pipeline.VALIDATE, pipeline.RESOURCES, pipeline.MEMORY])


def test_unexpected_exception_becomes_compile_error_naming_the_pass():
    def broken(ctx):
        raise KeyError("policy")

    with pytest.raises(CompileError, match="compiler pass 'broken' failed: KeyError: 'policy'"):
        run_passes(_ctx(), [Pass("broken", (), ("validated",), broken)])


def test_flowrl_errors_keep_their_message_and_gain_the_pass_name():
    ctx = replace(_ctx(), models=ppo_models(70, offload="never"))
    with pytest.raises(OutOfMemoryAtCompileError, match="out of memory at compile time") as e:
        run_passes(ctx, pipeline.PASSES)
    assert "in compiler pass 'offload'" in e.value.__notes__


def test_a_pass_may_write_only_what_it_guarantees():
    def greedy(ctx):
        return {"validated": True, "meshes": {}}

    with pytest.raises(CompileError, match="'greedy' wrote meshes, which it does not guarantee"):
        run_passes(_ctx(), [Pass("greedy", (), ("validated",), greedy)])
    with pytest.raises(CompileError, match="'lazy' did not provide validated"):
        run_passes(_ctx(), [Pass("lazy", (), ("validated",), lambda ctx: {})])
    with pytest.raises(CompileError, match="'typo' declares unknown context fields \\['mesh'\\]"):
        run_passes(_ctx(), [Pass("typo", ("mesh",), (), lambda ctx: {})])


def test_schedule_pass_leaves_the_offload_plans_ops_alone():
    done = run_passes(_ctx(models=ppo_models(13)), pipeline.PASSES)
    plan_ops = [op for ops in done.offload_plan.ops.values() for op in ops]
    timed_ops = [op for ops in done.schedule.ops.values() for op in ops]
    assert all(op.start == 0.0 and op.duration == 0.0 for op in plan_ops)
    assert not {id(op) for op in plan_ops} & {id(op) for op in timed_ops}
    assert any(op.duration > 0 for op in timed_ops)
    assert all(op.bytes == 0 for op in plan_ops if op.kind == "sync")


def test_search_scores_candidates_with_the_scoring_passes(monkeypatch):
    calls = []
    original = pipeline.run_passes

    def spy(ctx, passes):
        calls.append([p.name for p in passes])
        return original(ctx, passes)

    monkeypatch.setattr(pipeline, "run_passes", spy)
    pipeline.compile_schedule(ppo_graphs(), ppo_models(7), SYNC, "8xH100-80GB", "search",
                              METHODS, runtime_args=ARGS)
    assert calls[0][0] == "validate" and len(calls) > 10
    assert all(c == ["memory", "offload", "schedule"] for c in calls[1:])


def test_schedule_stores_worker_groups():
    s = compile_ppo(strategy="disaggregate", cluster="2x8xH100-80GB")
    placed = {m for g in s.worker_groups for m in g.models}
    assert placed == set(s.placement)
    for g in s.worker_groups:
        assert g.replicas == max(s.placement[m].dp for m in g.models)
    assert Schedule.from_json(s.to_json()).worker_groups == s.worker_groups


# ---- the placement strategy registry ------------------------------------------------------------
def test_unknown_strategy_lists_the_registered_ones():
    with pytest.raises(CompileError, match="unknown placement strategy 'best'; expected one of "
                                           "colocate, disaggregate, manual, search"):
        compile_ppo(strategy="best")


def test_a_new_strategy_is_one_registration(monkeypatch):
    monkeypatch.setitem(_STRATEGIES, "first_device", None)  # restored after the test
    del _STRATEGIES["first_device"]
    from flowrl.compiler.colocation import unit_meshes

    @register_strategy("first_device")
    def first_device(req):
        out = {}
        for u in req.units:
            out.update(unit_meshes(u, (0,), req.resources))
        return out

    assert "first_device" in strategy_names()
    s = compile_ppo(ppo_models(0.5), strategy="first_device")
    assert {m.devices for m in s.placement.values()} == {(0,)}
    with pytest.raises(CompileError, match="'first_device' is registered twice"):
        register_strategy("first_device")(first_device)


# ---- the op interpreter --------------------------------------------------------------------------
class Recorder(OpInterpreter):
    def begin(self, role, ops):
        self.seen = []

    def end(self, role, ops):
        return self.seen

    def call(self, op, node):
        self.seen.append(("call", node.method if node else None))

    def default(self, op):
        self.seen.append((op.kind, op.model))


def test_interpreter_dispatches_one_method_per_kind():
    s = compile_ppo(ppo_models(13))
    kinds = Recorder(s).run("train")
    assert [k for k, _ in kinds] == [op.kind for op in s.ops["train"]]
    assert ("call", "train_step") in kinds and ("offload", "ppo_policy") in kinds


def test_interpreter_rejects_an_unknown_op_kind():
    with pytest.raises(CompileError, match="train op 1: unknown op kind 'prefetch' \\(known: "
                                           "call, offload, onload, sync\\)"):
        Recorder().run("train", [Op("offload", "a", what=("weights",)), Op("prefetch", "a")])


# ---- the episode spec ----------------------------------------------------------------------------
def test_episode_spec_counts_and_order():
    spec = EpisodeSpec.from_counts(1024, 128, 256, 2, has_eval=True)
    assert spec.roles == ("rollout", "train", "sync", "eval")
    assert spec.repeats == {"rollout": 8, "train": 8, "sync": 1} and spec.syncs == 1
    assert spec.predecessors()["rollout"] == ["sync", "rollout", "<setup>", "eval"]
    assert spec.run_order(episodes=1) == ["rollout", "rollout", "train", "train", "sync", "eval"]
    assert spec.pipelined("rollout") and not spec.pipelined("train")
    assert EpisodeSpec.from_counts(64, 32, 32, 1).roles == ("rollout", "train", "sync")
