"""Profile-guided costs: a real short run's op profile replaces the analytic cost model."""

from __future__ import annotations

import copy
import json
import statistics

import pytest
import yaml

from flowrl.cli import main
from flowrl.compiler import compile_schedule
from flowrl.compiler.profile import ProfileCosts, aggregate, load_profile
from flowrl.ir import Op
from flowrl.errors import FlowRLError

from compiler_helpers import ARGS, METHODS, SYNC, ppo_graphs, ppo_models
from ppo_setup import TINY_PPO, build_ppo

# TINY_PPO's models (TinyGPT, 2 layers, 32 wide, 47-token vocabulary), fp32.
SIZE = dict(num_params=30_000, num_layers=2, hidden_size=32, vocab_size=47, dtype="fp32",
            max_seq_len=16, max_new_tokens=8)


def sized_config(output_dir=None) -> dict:
    cfg = copy.deepcopy(TINY_PPO)
    cfg["runtime_args"]["output_dir"] = str(output_dir) if output_dir else None
    cfg["runtime_args"]["tensorboard"] = False
    for name, section in cfg["models"].items():
        section.update(SIZE if name != "reward" else
                       dict(num_params=1, num_layers=1, hidden_size=1, vocab_size=1))
    return cfg


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real 2-episode tiny PPO run on a compiled colocate schedule (local:1)."""
    out = tmp_path_factory.mktemp("run")
    engine, _ = build_ppo(sized_config(out))
    engine.schedule = engine.compile(cluster="local:1", strategy="colocate")
    history = engine.learn()  # writes op_profile.jsonl, metrics.jsonl and schedule.json
    assert len(history) == 2
    assert (out / "schedule.json").is_file()
    return out


def test_a_run_writes_a_profile_of_every_op(run_dir):
    p = load_profile(run_dir)
    assert len(p.episode_times) == 2 and p.schedule is not None
    runs = TINY_PPO["runtime_args"]
    rollouts = runs["num_episode"] * runs["sample_per_episode"] // runs["generation_batch_size"]
    for node in ("policy.forward_step", "reference.forward_step", "value.forward_step",
                 "reward.forward_step"):
        stat = p.ops[("rollout", node)]
        assert stat.count == rollouts and stat.median_s > 0
    assert p.ops[("train", "ppo_policy.train_step")].count == 4
    assert p.ops[("sync", "sync ppo_policy -> policy")].count == 2


def test_explain_profile_recompiles_with_measured_costs(run_dir, tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(sized_config()))
    # cluster and strategy come from the run's schedule.json
    assert main(["explain", str(cfg), "--profile", str(run_dir)]) == 0
    out = capsys.readouterr().out
    for needle in ("predicted (analytic) vs measured per op", "policy.forward_step",
                   "ppo_value.train_step", "sync ppo_policy -> policy", "iteration time: analytic",
                   "profile-guided", "measured", "=== profile-guided schedule ===",
                   "strategy colocate"):
        assert needle in out, needle

    assert main(["explain", str(cfg), "--profile", str(run_dir), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    prof = doc["profiles"][0]
    rows = {(r["role"], r["op"]): r for r in prof["rows"]}
    p = load_profile(run_dir)
    for key, stat in p.ops.items():
        if key[1].startswith(("offload", "onload")):
            continue
        row = rows[key]
        assert row["measured_s"] == pytest.approx(stat.median_s)
        assert row["used_s"] == pytest.approx(stat.median_s)  # same placement: no rescaling
        assert row["predicted_s"] > 0 and row["count"] == stat.count
    # One device, everything colocated: a rollout run is its calls one after another, so the
    # profile-guided estimate of a run is the sum of the measured medians.
    est = doc["schedules"][0]["estimates"]
    want = sum(p.ops[("rollout", n)].median_s for n in
               ("policy.forward_step", "reference.forward_step", "value.forward_step",
                "reward.forward_step"))
    assert est["role_repeat_time"]["rollout"] == pytest.approx(want)
    it = prof["iteration"]
    assert it["profile_guided_s"] == pytest.approx(est["iteration_time"])
    assert it["measured_s"] == pytest.approx(statistics.median(p.episode_times))
    assert it["analytic_s"] < it["profile_guided_s"]  # the formulas ignore Python overhead


def test_profile_without_schedule_needs_a_cluster(run_dir, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "op_profile.jsonl").write_text((run_dir / "op_profile.jsonl").read_text())
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(sized_config()))
    assert main(["explain", str(cfg), "--profile", str(bare)]) == 1
    assert "pass --cluster" in capsys.readouterr().err
    assert main(["explain", str(cfg), "--profile", str(bare), "--cluster", "local:1"]) == 0
    assert "no schedule.json" in capsys.readouterr().out
    assert main(["explain", str(cfg), "--profile", str(tmp_path / "nothing")]) == 1
    assert "no op profile" in capsys.readouterr().err


def test_malformed_profile_names_the_line(tmp_path):
    (tmp_path / "op_profile.jsonl").write_text('{"role": "rollout", "op": "a", "seconds": 1}\n'
                                               'not json\n')
    with pytest.raises(FlowRLError, match=r"op_profile.jsonl:2"):
        load_profile(tmp_path)


def test_aggregate_takes_medians_and_transfer_rates():
    recs = [{"role": "rollout", "op": "policy.forward_step", "model": "policy", "seconds": s,
             "bytes": 0} for s in (3.0, 1.0, 2.0, 100.0)]
    recs += [{"role": "train", "op": "onload ppo_policy (weights)", "model": "ppo_policy",
              "seconds": s, "bytes": b} for s, b in ((0.0, 0), (1.0, 100), (3.0, 100))]
    agg = aggregate(recs)
    assert agg[("rollout", "policy.forward_step")].median_s == 2.5
    on = agg[("train", "onload ppo_policy (weights)")]
    assert on.count == 3 and on.moves == 2 and on.seconds_per_byte == pytest.approx(0.02)


def test_measured_costs_are_rescaled_to_other_placements():
    # A profile measured on colocate (8 devices) and applied to a disaggregated placement:
    # each measured call keeps its measured/analytic ratio.
    graphs, models = ppo_graphs(), ppo_models(7)
    colo = compile_schedule(graphs, models, SYNC, "8xH100-80GB", "colocate", METHODS,
                            runtime_args=ARGS)
    dis = compile_schedule(graphs, models, SYNC, "8xH100-80GB", "disaggregate", METHODS,
                           runtime_args=ARGS)
    ref = {(r, op.label()): op.duration for r, ops in colo.ops.items() for op in ops
           if op.kind == "call"}
    recs = [{"role": r, "op": o, "model": o.split(".")[0], "seconds": 3 * d, "bytes": 0}
            for (r, o), d in ref.items()]
    from flowrl.compiler.profile import Profile

    costs = ProfileCosts(Profile("test", aggregate(recs)), ref, colo.cluster)
    for role, ops in dis.ops.items():
        for op in ops:
            if op.kind == "call":
                assert costs(role, op, op.duration) == pytest.approx(3 * op.duration)
    assert costs("rollout", Op("call", "x", node="x.forward_step"), 0.5) == 0.5  # not measured


def test_op_costs_drive_the_search():
    """With op_costs the search scores candidates with them: making every call of the policy
    100x dearer changes the estimate (and never breaks the compile)."""
    graphs, models = ppo_graphs(), ppo_models(7)
    plain = compile_schedule(graphs, models, SYNC, "8xH100-80GB", "search", METHODS,
                             runtime_args=ARGS)
    seen = []

    def costs(role, op, analytic):
        seen.append(role)
        return analytic * (100 if op.model == "policy" and op.kind == "call" else 1)

    dear = compile_schedule(graphs, models, SYNC, "8xH100-80GB", "search", METHODS,
                            runtime_args=ARGS, op_costs=costs)
    assert dear.estimates.iteration_time > 10 * plain.estimates.iteration_time
    assert len(seen) > 1000  # every candidate of the search was timed through op_costs
    same = compile_schedule(graphs, models, SYNC, "8xH100-80GB", "search", METHODS,
                            runtime_args=ARGS, op_costs=lambda r, op, a: a)
    assert same.estimates.iteration_time == plain.estimates.iteration_time
    assert same.placement == plain.placement
