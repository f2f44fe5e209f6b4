"""Small configs and builders for tiny DPO / online-DPO / GRPO engines, sized for fast tests
(the modules live in ``tests/fixtures``)."""

from __future__ import annotations

import copy

import pytest
import torch

TINY_GRPO = {
    "runtime_args": {
        "num_episode": 3, "num_inference_per_prompt": 4, "sample_per_episode": 32,
        "generation_batch_size": 16, "train_global_batch_size": 16, "train_micro_batch_size": 8,
        "num_training_epoch": 1, "seed": 5, "progress": False,
    },
    "models": {
        "policy": {"args": {"d_model": 32, "max_prompt_len": 6, "max_new_tokens": 2}},
        "reference": {"args": {"d_model": 32}},
        "reward": {},
        "grpo_policy": {"args": {"d_model": 32, "lr": 0.002, "kl_coef": 0.01}},
    },
}

TINY_DPO = {
    "runtime_args": {
        "num_episode": 3, "sample_per_episode": 32, "generation_batch_size": 16,
        "train_global_batch_size": 16, "train_micro_batch_size": 8, "seed": 5,
        "progress": False,
    },
    "models": {
        "policy": {"args": {"d_model": 32, "lr": 0.001, "beta": 0.1}},
        "reference": {"args": {"d_model": 32}},
    },
}

TINY_ONLINE_DPO = {
    "runtime_args": {
        "num_episode": 3, "num_inference_per_prompt": 4, "sample_per_episode": 32,
        "generation_batch_size": 16, "train_global_batch_size": 4, "train_micro_batch_size": 4,
        "seed": 5, "progress": False,
    },
    "models": {
        "policy": {"args": {"d_model": 32, "max_prompt_len": 8, "max_new_tokens": 8}},
        "reward": {},
        "reference": {"args": {"d_model": 32}},
        "dpo_policy": {"args": {"d_model": 32, "lr": 0.001, "beta": 0.1}},
    },
}


def config(base: dict, **runtime_args) -> dict:
    cfg = copy.deepcopy(base)
    cfg["runtime_args"].update(runtime_args)
    return cfg


def build_grpo(cfg: dict, with_evaluator: bool = True):
    """The tiny GRPO engine (evaluator over train + held-out problems)."""
    from fixtures import tiny_grpo

    return tiny_grpo.build(cfg, with_evaluator)


def build_dpo(cfg: dict, with_evaluator: bool = True):
    from fixtures import tiny_dpo

    return tiny_dpo.build(cfg, with_evaluator)


def build_online_dpo(cfg: dict):
    from fixtures import tiny_dpo

    return tiny_dpo.build_online(cfg)


def comparable(rows: list[dict]) -> list[dict]:
    """Metrics rows without the wall-clock-dependent entries."""
    return [{k: v for k, v in r.items()
             if not (k.startswith("time/") or k.endswith("_per_s") or k == "sync/gbps")}
            for r in rows]


def module_tensors(engine) -> dict[str, dict]:
    """Every module's checkpoint state (weights, optimizer, ...), for exact comparisons."""
    return {n: m.state_dict_for_checkpoint() for n, m in engine.modules.items()}


@pytest.fixture
def one_thread():
    """Tiny models run several times faster on one thread of a small, shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
