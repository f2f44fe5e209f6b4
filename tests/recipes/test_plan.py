"""Every algorithm name builds its engine and traces its flows without reading weights
(the model directory does not even exist), and ``flowrl explain`` plans a train config."""

from __future__ import annotations

import copy
import json

import pytest

from flowrl import cli
from flowrl.recipes import ALGORITHMS, plan

#: the calls each family's flows make, as model.method
CALLS = {
    "grpo": {"rollout": ["policy.forward_step", "reward.forward_step", "advantage.forward_step"],
             "train": ["actor.train_step"]},
    "remax": {"rollout": ["policy.forward_step", "policy.greedy_step", "reward.forward_step",
                          "reward.baseline_step", "advantage.forward_step"],
              "train": ["actor.train_step"]},
    "ppo": {"rollout": ["policy.forward_step", "critic.forward_step", "reward.forward_step",
                        "advantage.forward_step"],
            "train": ["actor.train_step", "critic_trainer.train_step"]},
    "online_dpo": {"rollout": ["policy.forward_step", "reward.forward_step",
                               "reference.forward_step"], "train": ["actor.train_step"]},
    "dpo": {"rollout": ["feed.forward_step"], "train": ["actor.train_step"]},
    "sft": {"rollout": ["feed.forward_step"], "train": ["actor.train_step"]},
}
FAMILY = {"dapo": "grpo", "dr_grpo": "grpo", "gspo": "grpo", "rloo": "grpo",
          "reinforce_pp": "grpo"}


def train_config(tmp_path, name: str) -> dict:
    (tmp_path / "rewards.py").write_text("def score(prompts, completions, **kw):\n"
                                         "    return [0.0] * len(completions)\n")
    data = {
        "algorithm": {"name": name},
        "model": {"path": str(tmp_path / "not_written_yet")},
        "data": {"path": "data.jsonl"},
        "reward": {"function": "rewards.py:score", "mode": "inline"},
        "runtime_args": {"num_inference_per_prompt": 4, "generation_batch_size": 16,
                         "train_micro_batch_size": 8},
        "models": {"policy": {"generation": {"max_new_tokens": 8}}},
        "source": str(tmp_path / "train.yaml"),  # reward paths are relative to it
    }
    if name in ("dpo", "sft"):
        del data["reward"], data["models"]
    return data


@pytest.mark.parametrize("name", ALGORITHMS)
def test_every_algorithm_builds_and_traces_without_weights(tmp_path, name):
    engine = plan(train_config(tmp_path, name))
    calls = {role: sorted(f"{c.model}.{c.method}" for c in g.calls())
             for role, g in engine.graphs.items()}
    expected = copy.deepcopy(CALLS[FAMILY.get(name, name)])
    kl = engine.config.models.get("reference") is not None
    if kl and name != "online_dpo":  # the preset's KL term runs the reference
        expected["rollout"].append("reference.forward_step")
    assert calls == {role: sorted(c) for role, c in expected.items()}
    schedule = engine.compile()
    assert schedule.ops["train"] and not (tmp_path / "not_written_yet").exists()
    trainers = {"actor": "policy", "critic_trainer": "critic"}
    assert engine.sync_pairs == [(t, p) for t, p in trainers.items() if p in engine.modules]


def test_grpo_without_kl_runs_no_reference(tmp_path):
    engine = plan(train_config(tmp_path, "grpo"), ["algorithm.kl.coef=0"])
    assert "reference" not in engine.modules and "reference" not in engine.config.models


def test_explain_plans_a_train_config_with_overrides(tmp_path, capsys):
    data = train_config(tmp_path, "grpo")
    data.pop("source")
    path = tmp_path / "train.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    assert cli.main(["explain", str(path), "algorithm.kl.coef=0"]) == 0
    out = capsys.readouterr().out
    assert "policy.forward_step" in out and "actor.train_step" in out
    assert "reference" not in out
    assert cli.main(["explain", str(path), "algorithm.kl.coeff=0"]) == 1
    assert "algorithm.kl.coeff: unknown field; did you mean 'coef'?" in capsys.readouterr().err


def test_explain_the_grpo_hf_example(capsys):
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "grpo_hf.yaml"
    assert cli.main(["explain", str(example)]) == 0
    out = capsys.readouterr().out
    for call in ("policy.forward_step", "reward.forward_step", "advantage.forward_step",
                 "actor.train_step"):
        assert call in out
    assert "reference" not in out  # the example trains without a KL term
