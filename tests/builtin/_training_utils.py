"""Shared by the training-module tests of this folder: the tiny Llama fixture, ``init`` (a
config with small batches) and a fixed scored rollout batch. Test files import from it."""

from __future__ import annotations

import pytest
import torch

import flowrl
from flowrl.models.hf import save_tiny_llama

B, P, N = 4, 3, 5


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> str:
    return str(save_tiny_llama(tmp_path_factory.mktemp("builtin") / "llama"))


def init(models: dict, **runtime) -> flowrl.FlowRLConfig:
    ra = {"num_inference_per_prompt": 2, "sample_per_episode": 4, "generation_batch_size": 4,
          "train_global_batch_size": 4, "train_micro_batch_size": 2, **runtime}
    return flowrl.init({"models": models, "runtime_args": ra})


def rollout(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.tensor([[1] * 5, [1] * 3 + [0] * 2, [1] * 4 + [0], [1] * 2 + [0] * 3])
    return {"prompt": torch.randint(0, 20, (B, P), generator=g),
            "prompt_mask": torch.tensor([[1] * 3, [0, 1, 1], [1] * 3, [0, 0, 1]]),
            "response": torch.randint(0, 20, (B, N), generator=g), "response_mask": mask,
            "logprobs": -torch.rand(B, N, generator=g) * mask,
            "ref_logprobs": -torch.rand(B, N, generator=g) * mask,
            "values": torch.randn(B, N, generator=g) * mask,
            "score": torch.tensor([1.0, 0.0, 0.5, 0.25]),
            "baseline_score": torch.tensor([0.5, 0.5, 0.0, 0.0])}
