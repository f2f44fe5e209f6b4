"""Issue 14 item 3: ``flowrl explain`` for a real decision: a throughput headline, the chosen
plan against its runner-ups and why it wins, host-memory warnings, transfer rows that move
bytes, and a memory PNG per device group with the models stacked."""

import json
import re

import pytest

import flowrl.report  # noqa: F401  (registers the renderers)
from flowrl.compiler import compile_schedule
from flowrl.compiler.summary import summarize, why_better
from flowrl.ir import Schedule
from flowrl.ir.cluster import parse_cluster
from flowrl.report.plot import device_groups, samples, stacked
from flowrl.report.text import explain_text

from compiler_helpers import ARGS, METHODS, SYNC, ppo_graphs, ppo_models

H100 = parse_cluster("8xH100-80GB")
GEN32 = ARGS.model_copy(update={"generation_batch_size": 32})


def compiled(strategy: str = "colocate", cluster=H100, args=GEN32) -> Schedule:
    return compile_schedule(ppo_graphs(), ppo_models(7), SYNC, cluster, strategy,
                            methods=METHODS, runtime_args=args)


@pytest.fixture(scope="module")
def colocated() -> Schedule:
    return compiled()


@pytest.fixture(scope="module")
def disaggregated() -> Schedule:
    return compiled("disaggregate")


def test_estimates_count_the_work_of_an_episode(colocated):
    est = colocated.estimates
    p, s = 7e9, 2048
    k, m = est.repeats["rollout"], est.repeats["train"]
    # 4 rollout calls (policy generates, 3 score) of 32 sequences; 2 trainers of 128
    assert est.model_flops == pytest.approx(k * 4 * 2 * p * 32 * s + m * 2 * 6 * p * 128 * s)
    assert est.generated_tokens == k * 32 * 1024 and est.samples == 1024
    assert 0 < est.busy_device_s <= 8 * est.iteration_time + 1e-6


def test_headline_in_samples_tokens_and_mfu(colocated):
    me = summarize(colocated)
    t = colocated.estimates.iteration_time
    assert me.samples_per_s == pytest.approx(1024 / t)
    assert me.tokens_per_s == pytest.approx(colocated.estimates.generated_tokens / t)
    assert me.mfu == pytest.approx(colocated.estimates.model_flops / (t * 8 * 989e12))
    assert 0 < me.mfu < 0.5  # below the cost model's flops_efficiency
    text = explain_text(colocated, width=300)
    head = re.search(r"estimated throughput: ([\d.]+) samples/s, ([\d,]+) generated tokens/s, "
                     r"MFU ([\d.]+)%", text)
    assert head, text[:500]
    assert float(head[1]) == pytest.approx(me.samples_per_s, rel=1e-2)
    assert float(head[3]) == pytest.approx(100 * me.mfu, abs=0.06)
    assert text.index("estimated throughput") < text.index("estimated iteration time")


def test_runner_ups_and_why_the_winner_wins(colocated, disaggregated):
    win, other = summarize(colocated), summarize(disaggregated, "disaggregate (6 blocks)")
    assert win.time < other.time
    assert other.idle_device_s > win.idle_device_s  # disjoint blocks wait on each other
    reason = why_better(win, other)
    assert reason.startswith(f"{other.time / win.time:.2f}x faster than disaggregate "
                             f"(6 blocks): ")
    assert "device-s less idle device time" in reason and "offload traffic" in reason
    colocated.estimates.candidates = [other]
    try:
        text = explain_text(colocated, width=300)
        back = Schedule.from_json(json.loads(json.dumps(colocated.to_json())))
    finally:
        colocated.estimates.candidates = []
    assert "chosen plan and runner-ups" in text and "* colocate" in text
    assert f"why colocate wins: {reason}" in text
    assert "disaggregate (6 blocks) differs in: policy devices 0-1 TP1xDP2" in text
    assert back.estimates.candidates == [other]


def test_transfer_rows_name_what_moves_and_never_move_nothing(colocated):
    text = explain_text(colocated, width=300)
    rows = [line for line in text.splitlines() if re.search(r"│ (offload|onload) ", line)]
    assert rows, "a 7B PPO on 8 devices offloads"
    for line in rows:
        assert re.search(r"(offload|onload) \w+ \((weights|grads|optimizer)[+\w]*\)", line)
        assert not line.rstrip(" │").endswith("-"), line  # every listed transfer moves bytes
    hidden = sum(1 for ops in colocated.ops.values() for op in ops
                 if op.kind in ("offload", "onload") and not op.bytes)
    if hidden:
        assert f"({hidden} such transfer(s) that move nothing" in text


def test_host_memory_table_and_warnings():
    plan = compiled()
    peak = max(plan.memory.host_peak)
    assert peak > 0
    text = explain_text(plan, width=300)
    assert "host memory per node" in text and "warning: host memory" not in text
    # a host just big enough: the plan fits but explain warns it is nearly full
    tight = H100.model_copy(update={"host_memory_gb": peak / 0.8 / 0.95 / 1e9})
    text = explain_text(compiled(cluster=tight), width=300)
    assert re.search(r"warning: host memory of node 0 is 9\d% full", text)
    unknown = H100.model_copy(update={"host_memory_gb": None})
    text = explain_text(compiled(cluster=unknown), width=300)
    assert "warning: host memory is not checked (the cluster gives no host_memory_gb)" in text


def test_memory_png_groups_devices_and_stacks_models(disaggregated, colocated, tmp_path):
    groups = device_groups(disaggregated)
    assert sorted(d for g in groups for d in g) == list(range(8))
    assert len(groups) < 8 and groups[0] == (0, 1)  # the policy's two replicas: one line
    assert device_groups(colocated) == [tuple(range(8))]
    for devs in groups:
        times, layers = stacked(disaggregated, devs[0])
        after = [a / 1e9 for _, a, _, _ in samples(disaggregated, devs[0])]
        assert [pytest.approx(sum(v[i] for v in layers.values())) for i in range(len(times))] \
            == after
    times, layers = stacked(colocated, 0)
    assert {"policy", "ppo_policy", "working memory"} <= set(layers)
    path = colocated.plot_memory(str(tmp_path / "mem.png"))
    assert (tmp_path / "mem.png").stat().st_size > 10_000 and path.endswith("mem.png")


def test_a_search_candidate_is_summarised_without_a_schedule(disaggregated):
    from flowrl.compiler.summary import summarize_plan

    s = disaggregated
    got = summarize_plan("candidate 3", s.estimates, s.pipeline, s.placement, s.cluster,
                         max(s.memory.peak_after))
    assert got == summarize(s, "candidate 3")


def test_search_keeps_its_runner_ups_for_explain():
    args = GEN32.model_copy(update={"max_staleness": 1})
    s = compile_schedule(ppo_graphs(), ppo_models(7), SYNC, "16xH100-80GB", "search",
                         methods=METHODS, runtime_args=args)
    cands = s.estimates.candidates
    assert 1 <= len(cands) <= 3 and len({c.strategy for c in cands}) == len(cands)
    me = summarize(s)
    assert all(me.time <= c.time for c in cands)  # the winner is never slower
    assert [c.time for c in cands] == sorted(c.time for c in cands)
    text = explain_text(s, width=400)
    for c in cands:
        assert f"why search: {s.layout.family} {s.layout.split} wins: " \
               f"{why_better(summarize(s, 'x'), c)[:4]}" in text
    assert Schedule.from_json(s.to_json()).estimates.candidates == cands
    # other strategies compare nothing
    assert compiled().estimates.candidates == []
