"""``flowrl bench placement`` (benchmarks/placement.py) and the cost-model check script."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

from flowrl.cli import main
from flowrl.compiler import parse_cluster

ROOT = Path(__file__).resolve().parents[2]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" /
                                                  f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_placement_quick_writes_table_csv_and_plot(tmp_path, capsys):
    assert main(["bench", "placement", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for needle in ("colocate", "disaggregate", "search", "best", "PPO", "GRPO", "8xH100-80GB",
                   "does not fit", "strategy fails", "needs 27 devices"):
        assert needle in out, needle
    assert (tmp_path / "placement.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(tmp_path / "placement.csv")))
    # 2 flows x 2 size pairs x 1 cluster x 3 strategies
    assert len(rows) == 12
    cases: dict[tuple, list[dict]] = {}
    for r in rows:
        cases.setdefault((r["flow"], r["policy_params_b"], r["cluster"]), []).append(r)
        if r["fits"] == "1":
            assert float(r["iteration_s"]) > 0
            assert float(r["peak_memory_gb_per_device"]) <= float(r["capacity_gb_per_device"])
            assert r["placement"]
        else:
            assert r["reason"] and not r["iteration_s"]
    for rs in cases.values():
        by = {r["strategy"]: r for r in rs}
        assert sum(r["best"] == "1" for r in rs) == (1 if any(r["fits"] == "1" for r in rs)
                                                     else 0)
        if by["search"]["fits"] == "1":  # search starts from both: never worse than either
            for seed in ("colocate", "disaggregate"):
                if by[seed]["fits"] == "1":
                    assert float(by["search"]["iteration_s"]) <= \
                        float(by[seed]["iteration_s"]) * (1 + 1e-9)
    # GRPO has no critic
    assert all(r["critic_params_b"] == "" for r in rows if r["flow"] == "grpo")


def test_bench_unknown_benchmark_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "nonsense"])


def test_grpo_flow_shape_and_parallel_sizes():
    bench = load("placement")
    graphs, sync, _ = bench.traced_flows("grpo")
    assert [c.id for c in graphs["rollout"].calls()] == [
        "policy.forward_step", "reference.forward_step", "reward.forward_step"]
    assert [c.id for c in graphs["train"].calls()] == ["grpo_policy.train_step"]
    assert sync == [("grpo_policy", "policy")]
    assert bench.parallel_sizes(1.3, parse_cluster("8xH100-80GB")) == (1, 1)
    assert bench.parallel_sizes(70, parse_cluster("8xH100-80GB")) == (8, 1)
    assert bench.parallel_sizes(70, parse_cluster("4x8xA100-40GB")) == (8, 2)
    rule = bench.model_sections("grpo", 7, 0, parse_cluster("8xH100-80GB"))["reward"]
    assert rule.num_params == 1 and rule.vocab_size == 1  # no weights, no logits


@pytest.mark.slow
def test_cost_model_check_runs_two_local_placements(tmp_path):
    check = load("cost_model_check")
    assert check.main(["--rounds", "1", "--out", str(tmp_path), "--no-plot", "--placements",
                       "colocate-1/local", "colocate-1/local/offload"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "cost_model_check.csv")))
    assert [r["placement"] for r in rows] == ["colocate-1/local", "colocate-1/local/offload"]
    for r in rows:
        assert float(r["predicted_s"]) > 0 and float(r["measured_s"]) > 0
        assert float(r["profile_guided_own_s"]) > 0
    assert int(rows[1]["offload_bytes"]) > 0 and int(rows[0]["offload_bytes"]) == 0
    assert check.agreement([1, 2, 3], [1, 3, 2]) == {"agree": 2, "disagree": 1,
                                                     "predicted tie": 0, "within noise": 0}
