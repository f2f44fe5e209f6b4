"""Issue 14 item 6 on a subset of ``flowrl bench placement``: ``search`` is never slower than
``colocate`` (estimated seconds per episode, asynchronous plans allowed) and at least 1.2x
faster on at least half of the cases."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bench():
    spec = importlib.util.spec_from_file_location("bench_placement_wins",
                                                  ROOT / "benchmarks" / "placement.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_search_beats_colocate_on_half_the_cases_and_never_loses():
    b = bench()
    results = b.run(flows=("ppo", "grpo"), sizes=((7, 7), (70, 7)),
                    clusters=("8xH100-80GB", "8x8xH100-80GB"),
                    strategies=("colocate", "search"))
    pairs = b.speedups(results)
    assert len(pairs) == 8  # both fit in every case
    assert all(x >= 1 - 1e-9 for _, _, x in pairs), [(s.case, x) for s, _, x in pairs]
    assert sum(x >= 1.2 for _, _, x in pairs) >= len(pairs) / 2
    verdict = b.verdict(results)
    assert "slower on 0" in verdict and "of 8 cases" in verdict
    for srch, colo, _ in pairs:  # the table names the plan: family, split, layouts
        assert srch.family in ("colocated", "disaggregated", "hybrid", "custom")
        assert srch.split and "policy:TP" in srch.layouts
        assert colo.family == "colocated"


def test_an_asynchronous_split_plan_overlaps_rollout_and_training():
    from flowrl.compiler import compile_schedule, parse_cluster

    b = bench()
    graphs, sync, methods = b.traced_flows("grpo")
    cluster = parse_cluster("8x8xH100-80GB")
    models = b.model_sections("grpo", 7, 7, cluster)
    s = compile_schedule(graphs, models, sync, cluster, "search", methods, 0,
                         runtime_args=b.runtime_args("grpo"))
    colo = compile_schedule(graphs, models, sync, cluster, "colocate", methods, 0,
                            runtime_args=b.runtime_args("grpo"))
    assert s.pipeline.steady_state_time <= colo.pipeline.steady_state_time
    if s.layout.staleness == 1:  # the planner took the async split: stages are disjoint
        assert s.pipeline.overlap and s.pipeline.speedup > 1
        assert not set(s.layout.rollout_devices) & set(s.layout.train_devices)
