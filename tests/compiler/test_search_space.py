"""The planner's search space (issue 14 item 1): per-model tp x pp x dp, generation layouts
distinct from the trainer's with a resharding sync, rollout:train splits, families,
staleness; deterministic and fast; recorded in the Schedule."""

from __future__ import annotations

import json
import time

import pytest

from flowrl.compiler import compile_schedule
from flowrl.compiler.colocation import colocation_units
from flowrl.compiler.parallelism import layout_options, rank_layouts, with_layouts
from flowrl.compiler.pipeline import workload
from flowrl.compiler.placement import placement
from flowrl.compiler.placement.hybrid import device_plans, model_roles, split_sizes, unit_blocks
from flowrl.compiler.resources import model_resources
from flowrl.config import ModelConfig
from flowrl.errors import CompileError
from flowrl.ir import Mesh, Schedule, parse_cluster

from compiler_helpers import ARGS, METHODS, SYNC, ppo_graphs, ppo_models

K1 = ARGS.model_copy(update={"max_staleness": 1})


def resources(billions=7, **overrides):
    return model_resources(ppo_models(billions, **overrides), ppo_graphs(), SYNC)


def test_layouts_are_powers_of_two_within_a_node_and_pipeline_only_past_it():
    res = resources(7)["policy"]
    opts = layout_options(res, 16, parse_cluster("2x8xH100-80GB"))
    assert {tp for tp, _ in opts} == {1, 2, 4, 8}  # never 16: tp stays inside a node
    assert all(pp == 1 or tp == 8 for tp, pp in opts)  # stages only once tp fills a node
    assert (8, 2) in opts
    assert layout_options(res, 12, parse_cluster("2x8xH100-80GB")) == [(1, 1), (2, 1), (4, 1)]


def test_pinned_and_weightless_models_keep_their_layouts():
    pinned = resources(7, num_devices=2, tensor_model_parallel_size=2)["policy"]
    cluster = parse_cluster("8xH100-80GB")
    assert layout_options(pinned, 8, cluster) == [(2, 1)]
    assert layout_options(pinned, 3, cluster) == []
    rule = model_resources({**ppo_models(7), "reward": ModelConfig(num_params=1, num_layers=1,
                                                                   hidden_size=1, vocab_size=1)},
                           ppo_graphs(), SYNC)["reward"]
    assert layout_options(rule, 8, cluster) == [(1, 1)]


def test_ranking_puts_layouts_that_fit_first():
    # A 70B trainer does not fit one 40 GB device at tp1: the ranking starts where it fits.
    res = resources(70)
    graphs = ppo_graphs()
    wl = workload(graphs, ARGS, res)
    ranked = rank_layouts(res["ppo_policy"], 8, wl["ppo_policy"], ARGS,
                          parse_cluster("8xA100-40GB"))
    assert ranked[0][0] >= 4 and ranked[-1] == (1, 1)


def test_splits_and_families():
    assert 4 in split_sizes(16) and 64 in split_sizes(128)  # veRL's 4:12 and 64:64
    assert split_sizes(8) == list(range(1, 8))
    plans = device_plans(16)
    assert plans[0] == ("colocated", 16) and ("disaggregated", 4) in plans
    assert ("hybrid", 4) in plans
    res = resources(7)
    units = colocation_units(res)
    roles = model_roles(workload(ppo_graphs(), ARGS, res))
    assert roles == {"policy": "generate", "reference": "score", "value": "score",
                     "reward": "score", "ppo_policy": "train", "ppo_value": "train"}
    names = [u.models[0] for u in units]
    dis = dict(zip(names, unit_blocks(("disaggregated", 4), units, roles, 16)))
    assert dis["policy"] == dis["reward"] == tuple(range(4))
    assert dis["ppo_policy"] == tuple(range(4, 16))
    hyb = dict(zip(names, unit_blocks(("hybrid", 4), units, roles, 16)))
    assert hyb["policy"] == tuple(range(4)) and hyb["value"] == tuple(range(4, 16))
    assert hyb["ppo_value"] == tuple(range(16))


def test_with_layouts_replans_model_parallel_sizes():
    res = resources(7)
    planned = with_layouts(res, {"policy": Mesh(tuple(range(8)), 4, 1, 2)})
    assert (planned["policy"].tp, planned["policy"].mp) == (4, 4)
    assert planned["reward"] is res["reward"]


def compile_ppo(cluster="8xH100-80GB", billions=7, args=K1, seed=0, strategy="search"):
    return compile_schedule(ppo_graphs(), ppo_models(billions), SYNC, cluster, strategy,
                            METHODS, seed, runtime_args=args)


def test_schedule_records_the_layouts_the_runtime_is_told():
    s = compile_ppo("2x8xH100-80GB")
    lay = s.layout
    assert lay is not None and lay.configured_staleness == 1 and 0 <= lay.staleness <= 1
    for m in lay.models:  # the meshes (what the runtime's worker groups follow) agree
        mesh = s.placement[m.model]
        assert (m.tp, m.pp, m.dp, m.devices) == (mesh.tp, mesh.pp, mesh.dp, mesh.devices)
        assert len(mesh.devices) == mesh.tp * mesh.pp * mesh.dp
    assert {g.name: g.dp for g in s.worker_groups}  # worker groups follow the chosen dp
    back = Schedule.from_json(json.loads(json.dumps(s.to_json())))
    assert back.layout == lay
    # The planner chose tp for some model (the config says tp1): the plan says so.
    changed = [m for m in lay.models if not m.from_config]
    assert changed
    assert any(f"models.{changed[0].model}.parallel.tp={changed[0].tp}" in n for n in lay.notes)


def test_generation_layout_differs_from_the_trainer_and_sync_reshards():
    s = compile_ppo("8xH100-80GB")
    lay = s.layout
    gen, trainer = lay.model("policy"), lay.model("ppo_policy")
    assert gen.role == "generate" and trainer.role == "train"
    if gen.describe() != trainer.describe():
        r = next(r for r in lay.reshards if r.dst == "policy")
        assert (r.src, r.src_layout, r.dst_layout) == ("ppo_policy", trainer.describe(),
                                                        gen.describe())
        assert r.seconds > 0
    # Colocate keeps the config's layouts: nothing to reshard there.
    colo = compile_ppo("8xH100-80GB", strategy="colocate").layout
    assert colo.family == "colocated" and colo.reshards == ()
    assert all(m.from_config for m in colo.models) and colo.split == "shared 8"


def test_staleness_is_searched_up_to_the_configured_bound():
    sync = compile_ppo("8x8xH100-80GB", args=ARGS).layout
    assert sync.staleness == sync.configured_staleness == 0
    two = compile_ppo("8x8xH100-80GB", args=ARGS.model_copy(update={"max_staleness": 2}))
    assert two.layout.configured_staleness == 2
    # A disjoint rollout:train split overlaps at staleness 1 already (larger k: same steady
    # state in the deterministic model), so the plan asks for no more than 1.
    assert two.layout.staleness <= 1
    if two.layout.staleness == 1:
        assert two.pipeline.overlap and two.layout.split.count(":") == 1
        assert any("the plan needs staleness 1" in n for n in two.layout.notes)


def test_six_model_ppo_on_64_devices_plans_in_under_two_seconds_and_is_deterministic():
    compile_ppo("8x8xH100-80GB", seed=5)  # warm imports
    t0 = time.perf_counter()
    a = compile_ppo("8x8xH100-80GB", seed=5)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"planning took {elapsed:.2f} s"
    b = compile_ppo("8x8xH100-80GB", seed=5)
    assert a.placement == b.placement and a.layout == b.layout


def test_hybrid_strategy_and_errors_name_the_strategy_and_cluster():
    s = compile_ppo("2x8xH100-80GB", strategy="hybrid")
    assert s.layout.family in ("disaggregated", "hybrid")
    graphs = ppo_graphs()
    res = model_resources(ppo_models(7), graphs, SYNC)
    wl = workload(graphs, ARGS, res)
    with pytest.raises(CompileError, match="strategy 'hybrid' needs an evaluate function"):
        placement(colocation_units(res), res, parse_cluster("8xH100-80GB"), "hybrid", wl,
                  ARGS)

    def never(meshes):
        raise CompileError("device 0 overflows")

    with pytest.raises(CompileError, match="strategy 'hybrid' found no .* cluster "
                                           "'8xH100-80GB': device 0 overflows"):
        placement(colocation_units(res), res, parse_cluster("8xH100-80GB"), "hybrid", wl,
                  ARGS, 0, never)
