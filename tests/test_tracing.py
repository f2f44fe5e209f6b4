"""Tracing @flow functions into graphs, and the errors tracing must raise."""

from __future__ import annotations

import pytest
import torch

import flowrl
from flowrl import BaseModule, Engine, flow, outputs
from flowrl.dsl import find_modules
from flowrl.errors import KeyCollisionError, TraceError, UnknownMethodError
from flowrl.ir import FLOW_INPUT
from flowrl.models.base import flow_methods, is_lifecycle
from ppo_setup import build_ppo


class Gen(BaseModule):
    @outputs("tokens")
    def generate(self, data, iteration=0):
        return {"tokens": data["x"] * 2}

    def forward_step(self, data, iteration=0):
        return {"tokens": data["x"]}

    def build_dataset(self, prompts, is_eval=False):
        return None


class Scorer(BaseModule):
    @outputs("score")
    def eval_step(self, data, iteration=0):
        return {"score": data["tokens"].float()}


class Trainer(BaseModule):
    def train_step(self, data, iteration):
        return {"loss": 0.0}


class Dup(BaseModule):
    @outputs("tokens", "extra")
    def forward_step(self, data, iteration=0):
        return {"tokens": data["x"], "extra": data["x"]}


@pytest.fixture(autouse=True)
def _init():
    flowrl.init({"models": {n: {} for n in ("gen", "scorer", "trainer", "dup")}})


def test_ppo_flows_have_the_expected_shape(tiny_ppo_config):
    engine, _ = build_ppo(tiny_ppo_config)
    g = engine.graphs["rollout"]
    assert [c.id for c in g.calls()] == [
        "policy.forward_step", "reference.forward_step", "value.forward_step",
        "reward.forward_step"]
    assert set(g.graph.edges) == {
        ("policy.forward_step", "reference.forward_step"),
        ("policy.forward_step", "value.forward_step"),
        ("policy.forward_step", "reward.forward_step"),
        ("reference.forward_step", "reward.forward_step"),
        ("value.forward_step", "reward.forward_step")}
    assert g.call("reward.forward_step").inputs == (
        "policy.forward_step", "reference.forward_step", "value.forward_step")
    assert g.outputs == ("policy.forward_step", "reference.forward_step",
                         "value.forward_step", "reward.forward_step")
    t = engine.graphs["train"]
    assert [c.id for c in t.calls()] == ["ppo_policy.train_step", "ppo_value.train_step"]
    assert t.graph.number_of_edges() == 0
    assert all(c.inputs == (FLOW_INPUT,) and c.is_train for c in t.calls())
    assert engine.sync_pairs == [("ppo_policy", "policy"), ("ppo_value", "value")]


def test_custom_flow_with_other_method_names_and_repeat_calls():
    gen, scorer = Gen("gen"), Scorer("scorer")

    @flow
    def rollout(batch):
        a = gen.generate(batch)
        b = gen.generate(batch)
        return scorer.eval_step(a), b

    g = rollout.trace()
    assert [c.id for c in g.calls()] == ["gen.generate", "gen.generate#2", "scorer.eval_step"]
    assert g.call("scorer.eval_step").inputs == ("gen.generate",)
    assert g.call("gen.generate").outputs == frozenset({"tokens"})
    assert g.outputs == ("scorer.eval_step", "gen.generate#2")
    assert "generate" not in gen.__dict__  # recorders are removed after tracing
    assert gen.generate({"x": torch.tensor([1])}) == {"tokens": torch.tensor([2])}


def test_nested_flow_is_inlined():
    gen, scorer = Gen("gen"), Scorer("scorer")

    @flow
    def inner(batch):
        return gen.generate(batch)

    @flow
    def outer(batch):
        return scorer.eval_step(inner(batch))

    assert [c.id for c in outer.trace().calls()] == ["gen.generate", "scorer.eval_step"]
    with pytest.raises(TraceError, match="not called directly"):
        inner({"x": 1})


@pytest.mark.parametrize("body, what", [
    ("if out:\n        pass", "truth test"),
    ("for _ in out:\n        pass", "iteration"),
    ("len(out)", "len"),
    ("out['tokens']", "indexing"),
])
def test_data_dependent_control_flow_names_the_line(body, what):
    gen = Gen("gen")
    src = f"def f(batch):\n    out = gen.generate(batch)\n    {body}\n    return out\n"
    ns = {"gen": gen}
    exec(compile(src, "user_flow.py", "exec"), ns)
    with pytest.raises(TraceError, match=rf"{what}.*gen\.generate at user_flow\.py:3"):
        flow(ns["f"]).trace()


def test_unknown_method_error_lists_methods():
    gen = Gen("gen")

    @flow
    def f(batch):
        return gen.sample(batch)

    with pytest.raises(UnknownMethodError, match=r"'gen' \(Gen\) has no attribute or method "
                                                 r"'sample'.*forward_step, generate"):
        f.trace()


def test_lifecycle_method_cannot_be_called_in_a_flow():
    gen = Gen("gen")

    @flow
    def f(batch):
        return gen.setup(batch)

    with pytest.raises(TraceError, match="'gen.setup' is part of the module's life cycle"):
        f.trace()


def test_key_collision_names_key_and_both_producers():
    gen, dup, scorer = Gen("gen"), Dup("dup"), Scorer("scorer")

    @flow
    def f(batch):
        return scorer.eval_step(gen.generate(batch), dup.forward_step(batch))

    with pytest.raises(KeyCollisionError,
                       match="key 'tokens' is produced by both gen.generate and "
                             "dup.forward_step.*inputs of scorer.eval_step"):
        f.trace()


def test_key_collision_in_flow_result():
    gen, dup = Gen("gen"), Dup("dup")

    @flow
    def f(batch):
        return gen.generate(batch), dup.forward_step(batch)

    with pytest.raises(KeyCollisionError, match="result of flow 'f'"):
        f.trace()


def test_non_flow_arguments_and_results_are_rejected():
    gen = Gen("gen")

    @flow
    def bad_arg(batch):
        return gen.generate(batch, 3)

    @flow
    def bad_kw(batch):
        return gen.generate(batch, iteration=1)

    @flow
    def bad_ret(batch):
        gen.generate(batch)
        return {"a": 1}

    @flow
    def empty(batch):
        return None

    with pytest.raises(TraceError, match="got a int"):
        bad_arg.trace()
    with pytest.raises(TraceError, match="keyword arguments"):
        bad_kw.trace()
    with pytest.raises(TraceError, match="returned a dict"):
        bad_ret.trace()
    with pytest.raises(TraceError, match="calls no module methods"):
        empty.trace()


def test_custom_engine_validates_sync_pairs():
    gen, trainer = Gen("gen"), Trainer("trainer")

    @flow
    def rollout(batch):
        return gen.forward_step(batch)

    @flow
    def train(batch):
        trainer.train_step(batch)

    engine = Engine(rollout, train, sync={trainer: gen})
    assert engine.sync_pairs == [("trainer", "gen")]
    with pytest.raises(flowrl.ConfigError, match="sync source 'gen' does not call train_step"):
        Engine(rollout, train, sync={gen: trainer})
    with pytest.raises(TypeError, match="rollout must be a @flow function"):
        Engine(lambda b: b, train)


def test_duplicate_model_name_is_rejected():
    gen, other = Gen("gen"), Scorer("gen")  # no registry: the flow that uses both refuses

    @flow
    def f(batch):
        return other.eval_step(gen.generate(batch))

    with pytest.raises(flowrl.ConfigError, match="model_name 'gen' is already used by a Gen"):
        f.trace()


# ---- which modules a flow uses: found in the flow itself -----------------------------------
GLOBAL_GEN = Gen("gen")  # created at import time, before any flowrl.init()


def _helper(batch):
    return GLOBAL_GEN.generate(batch)


def test_modules_are_found_in_globals_closures_defaults_and_helpers():
    scorer, trainer = Scorer("scorer"), Trainer("trainer")

    class Holder:
        def __init__(self):
            self.models = {"scorer": scorer}

    holder = Holder()

    @flow
    def inner(batch, t=trainer):  # a sub-flow's default argument
        t.train_step(batch)
        return _helper(batch)  # a plain helper function reaching a global module

    @flow
    def outer(batch):
        out = inner(batch)  # a sub-flow
        return holder.models["scorer"].eval_step(out)  # an attribute of a closure variable

    assert {m.name for m in find_modules(outer.fn)} == {"gen", "trainer", "scorer"}
    graph, called = outer.capture()
    assert [c.id for c in graph.calls()] == ["trainer.train_step", "gen.generate",
                                              "scorer.eval_step"]
    assert called == {"gen": GLOBAL_GEN, "trainer": trainer, "scorer": scorer}


def test_only_the_flows_modules_are_shadowed():
    gen, scorer = Gen("gen"), Scorer("scorer")
    box = {"a": {"b": {"c": Gen("other")}}}  # deeper than the search looks: not the flow's
    seen = {}

    @flow
    def f(batch):
        seen["other"] = sorted(box["a"]["b"]["c"].__dict__)
        seen["gen"] = type(gen.__dict__["generate"]).__name__
        return scorer.eval_step(gen.generate(batch))

    f.trace()
    assert seen == {"other": ["_config", "_is_setup", "_logged", "name"], "gen": "_Recorder"}
    assert "generate" not in gen.__dict__


def test_a_module_the_flow_cannot_reach_names_the_module_and_line():
    box = {"a": {"b": {"c": Gen("hidden")}}}  # deeper than the search looks

    @flow
    def f(batch):
        return box["a"]["b"]["c"].generate(batch)

    with pytest.raises(TraceError, match=r"flow 'f' calls hidden\.generate at .*test_tracing"
                                         r"\.py:\d+, but module 'hidden' \(Gen\) is not among"):
        f.trace()
    assert box["a"]["b"]["c"].generate({"x": torch.tensor([2])}) == {"tokens": torch.tensor([4])}


def test_extra_modules_handed_to_the_trace_are_shadowed_too():
    box = {"a": {"b": {"c": Gen("gen")}}}

    @flow
    def f(batch):
        return box["a"]["b"]["c"].generate(batch)

    graph, called = f.capture([box["a"]["b"]["c"]])
    assert [c.id for c in graph.calls()] == ["gen.generate"] and list(called) == ["gen"]


def test_one_rule_decides_the_methods_a_flow_may_call():
    assert flow_methods(Gen) == {"forward_step", "generate"}  # build_dataset: life cycle
    assert flow_methods(Trainer) == {"train_step"}  # BaseModule's placeholder forward_step
    assert flow_methods(flowrl.TorchModule) >= {"train_micro_batches"}
    for name in ("setup", "build_dataset", "offload", "log", "bind", "reset", "ensure_setup"):
        assert is_lifecycle(name), name
    assert not is_lifecycle("forward_step") and not is_lifecycle("generate")


def test_other_threads_run_real_methods_while_a_flow_is_traced():
    import threading

    gen, box, results = Gen("gen"), {"a": {"b": {"c": Gen("other")}}}, []

    def run_other():
        results.append(box["a"]["b"]["c"].generate({"x": torch.tensor([3])}))

    @flow
    def f(batch):
        worker = threading.Thread(target=run_other)
        worker.start()
        worker.join()
        return gen.generate(batch)

    f.trace()
    assert results == [{"tokens": torch.tensor([6])}]
