"""Fixtures of the recipe tests: one tiny Llama for the session, and train configs on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CHARS = "0123456789abcdef+= "

REWARDS = '''
def digits(prompts, completions, **columns):
    """The share of digits in each completion: an easy signal for a tiny model."""
    return [sum(c.isdigit() for c in text) / max(len(text), 1) for text in completions]
'''


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random-init Llama written once (through model.init, as a user would)."""
    from flowrl.models.hf import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("recipes") / "tiny_llama", seed=0,
                           chars=CHARS, hidden_size=32, intermediate_size=64)


def write_data(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def train_yaml(tmp_path, tiny_model):
    """``train_yaml(name, **sections)`` -> the path of a small config for ``name``."""

    def make(name: str, **sections) -> Path:
        (tmp_path / "rewards.py").write_text(REWARDS)
        prompts = [f"{a}+{b}=" for a in range(4) for b in range(4)]
        write_data(tmp_path / "rl.jsonl", [{"prompt": p, "answer": "0"} for p in prompts])
        write_data(tmp_path / "pairs.jsonl", [{"prompt": p, "chosen": "12", "rejected": "ab"}
                                              for p in prompts])
        write_data(tmp_path / "sft.jsonl", [{"prompt": p, "completion": "42"} for p in prompts])
        data = {"dpo": "pairs.jsonl", "sft": "sft.jsonl"}.get(name, "rl.jsonl")
        cfg = {
            "algorithm": {"name": name},
            "model": {"path": str(tiny_model), "dtype": "fp32"},
            "data": {"path": data},
            "runtime_args": {"num_episode": 1, "sample_per_episode": 16,
                             "num_inference_per_prompt": 4, "generation_batch_size": 16,
                             "train_global_batch_size": 16, "train_micro_batch_size": 8,
                             "progress": False, "seed": 1,
                             "output_dir": str(tmp_path / "out"), "new_run_dir": True},
            "models": {"policy": {"generation": {"max_new_tokens": 4},
                                  "args": {"generator": "hf", "max_prompt_len": 8}},
                       "actor": {"optim": {"lr": 0.01}}},
        }
        if name not in ("dpo", "sft"):
            cfg["reward"] = {"function": "rewards.py:digits", "mode": "inline"}
        else:
            del cfg["models"]["policy"]
        for key, value in sections.items():
            cfg[key] = value
        path = tmp_path / f"{name}.yaml"
        path.write_text(json.dumps(cfg))
        return path

    return make
