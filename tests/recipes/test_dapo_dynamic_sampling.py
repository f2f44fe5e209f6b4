"""``flowrl train`` with dapo: the built-in modules' rollout feeds dynamic sampling (groups of
equal rewards never train; refills come from the prompt stream; the row counts them)."""

from __future__ import annotations

import json

from flowrl import cli

#: 1 for every completion of a prompt "0+b=" or "1+b=" (a group that never varies), else
#: 0, 1, 0, 1 in batch order (the group of 4 consecutive completions varies)
HALF_CONSTANT = '''
def half_constant(prompts, completions, **columns):
    return [1.0 if p.lstrip()[0] in "01" else float(i % 2) for i, p in enumerate(prompts)]
'''


def test_flowrl_train_dapo_drops_groups_of_equal_rewards_and_refills(train_yaml, capsys):
    path = train_yaml("dapo")
    (path.parent / "rewards.py").write_text(HALF_CONSTANT)
    rc = cli.main(["train", str(path), "runtime_args.num_episode=3",
                   "reward.function=rewards.py:half_constant"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    rows = [json.loads(line) for line in
            (path.parent / "out" / "run-1" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:  # 16 prompts, 4 a batch: never exhausted within one pass
        assert row["samples"] == 16 and row["dynamic_sampling/kept_groups"] == 4
        assert row["dynamic_sampling/exhausted"] == 0.0
        # every batch's 4 groups were kept, dropped or cut as surplus
        assert row["dynamic_sampling/kept_groups"] + row["dynamic_sampling/dropped_groups"] \
            + row["dynamic_sampling/surplus_groups"] == 4 * row["dynamic_sampling/batches"]
    assert sum(r["dynamic_sampling/dropped_groups"] for r in rows) > 0
    assert max(r["dynamic_sampling/batches"] for r in rows) > 1  # refilled
