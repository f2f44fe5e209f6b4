"""Issue 14 follow-up: the planner only chooses tensor/pipeline sizes a module can run.

A module class declares ``parallelism`` (``BaseModule``: none; ``MegatronModule``: tp and
pp; ``VLLMModule``: tp); the engine passes it per model like ``methods``; ``search`` and
:func:`layout_options` enumerate only those dimensions (dp always), and the plan's notes say
nothing about sharding a module cannot do.
"""

from __future__ import annotations

import flowrl
from flowrl.compiler import compile_schedule
from flowrl.compiler.parallelism import layout_options
from flowrl.compiler.resources import free_dims, model_resources
from flowrl.models.base import BaseModule
from flowrl.ir import parse_cluster

from compiler_helpers import ARGS, METHODS, PPO_NAMES, SYNC, ppo_graphs, ppo_models, tiny_config
from fixtures.tiny_ppo import (PolicyInference, PolicyReference, PolicyTrainer, RewardInference,
                               ValueInference, ValueTrainer, make_prompts)

K1 = ARGS.model_copy(update={"max_staleness": 1})
NONE = {n: {"tp": False, "pp": False} for n in PPO_NAMES}


def plan(capabilities, cluster="8xH100-80GB", models=None):
    return compile_schedule(ppo_graphs(), models or ppo_models(7), SYNC, cluster, "search",
                            METHODS, 0, runtime_args=K1, capabilities=capabilities).layout


def test_module_classes_declare_what_they_shard():
    from flowrl.models.megatron_module import MegatronModule
    from flowrl.models.vllm_module import VLLMModule

    assert BaseModule.parallelism == {"tp": False, "pp": False}
    assert MegatronModule.parallelism == {"tp": True, "pp": True}
    assert VLLMModule.parallelism == {"tp": True, "pp": False}
    assert PolicyTrainer.parallelism == {"tp": False, "pp": False}  # inherited: unsharded


def test_free_dims_reads_the_declaration_and_defaults_to_the_config():
    caps = {"policy": {"tp": True, "pp": False}}
    assert free_dims("policy", caps) == frozenset({"tp"})
    assert free_dims("reward", caps) == frozenset()  # undeclared: config's tp/pp only
    assert free_dims("reward", None) == frozenset({"tp", "pp"})  # configs alone: all


def test_layout_options_keep_a_dimension_the_module_cannot_run():
    cluster = parse_cluster("2x8xH100-80GB")
    res = model_resources(ppo_models(7), ppo_graphs(), SYNC,
                          {"policy": {"tp": True}, "ppo_policy": {"pp": True}})
    assert {tp for tp, _ in layout_options(res["policy"], 16, cluster)} == {1, 2, 4, 8}
    assert all(pp == 1 for _, pp in layout_options(res["policy"], 16, cluster))
    # pp only: tensor parallelism stays at the config's 1, stages are free
    assert layout_options(res["ppo_policy"], 16, cluster) == [(1, 1), (1, 2), (1, 4), (1, 8),
                                                              (1, 16)]
    assert layout_options(res["value"], 16, cluster) == [(1, 1)]  # neither: data parallel
    pinned = model_resources(ppo_models(7, parallel={"tp": 2}), ppo_graphs(), SYNC, {})
    assert layout_options(pinned["value"], 8, cluster) == [(2, 1)]  # the config's tp2


def test_search_without_sharding_modules_plans_dp_only_and_notes_nothing():
    lay = plan(NONE)
    assert all((m.tp, m.pp) == (1, 1) and m.from_config for m in lay.models)
    assert not any("parallel.tp" in n for n in lay.notes)
    assert lay.reshards == () or all("TP1xDP" in r.dst_layout for r in lay.reshards)


def test_search_shards_only_the_module_that_can():
    caps = {**NONE, "policy": {"tp": True, "pp": False}}
    free = plan(None)  # configs alone: the planner shards trainers and generator freely
    assert any(m.tp > 1 for m in free.models if m.model != "policy")
    lay = plan(caps)
    assert all(m.tp == 1 and m.pp == 1 for m in lay.models if m.model != "policy")
    assert lay.model("policy").pp == 1
    for note in lay.notes:  # a note may only name the model that can shard
        assert "parallel.tp" not in note or "model 'policy'" in note


def test_engine_passes_its_modules_capabilities_and_runtime():
    cfg = tiny_config()
    cfg["runtime"] = "ray"  # compile only: no Ray is started
    flowrl.init(cfg)
    engine = flowrl.RLHFEngine(PolicyInference("policy"), PolicyReference("reference"),
                               RewardInference("reward"), ValueInference("value"),
                               PolicyTrainer("ppo_policy"), ValueTrainer("ppo_value"))
    engine.set_dataset(make_prompts(64))
    s = engine.compile(cluster="local:2", strategy="search")
    assert all((m.tp, m.pp) == (1, 1) for m in s.layout.models)
    assert not any("parallel.tp" in n for n in s.layout.notes)
    assert s.cluster.runtime == "ray" and s.cluster.call_overhead > 0
