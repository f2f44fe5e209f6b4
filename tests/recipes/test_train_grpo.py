"""``flowrl train`` end to end: GRPO on a tiny Llama learns an easy task (reward rises)."""

from __future__ import annotations

import json

from flowrl import cli


def test_flowrl_train_grpo_reward_rises(train_yaml, capsys):
    path = train_yaml("grpo")
    rc = cli.main(["train", str(path), "algorithm.kl.coef=0", "runtime_args.num_episode=8",
                   "runtime_args.num_training_epoch=2", "models.actor.optim.lr=0.02"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    run_dir = path.parent / "out" / "run-1"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    scores = [r["advantage/score/mean"] for r in rows]
    assert len(scores) == 8
    first, last = sum(scores[:2]) / 2, sum(scores[-2:]) / 2
    assert last > first + 0.15, scores            # the share of digits climbs
    assert f"metrics in {run_dir}/metrics.jsonl" in captured.out
    assert "grpo: 8 episode(s); advantage/score/mean: first" in captured.out
    assert "reference" not in json.dumps(rows[0])  # kl.coef = 0: no reference ran
