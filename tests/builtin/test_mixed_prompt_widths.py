"""A replay buffer collates rollouts of different prompt widths by right-padding the prompt
block; every built-in module (trainers included) must score ``prompt ++ response`` with each
row's prompt ending right before its response."""

from __future__ import annotations

import torch

from flowrl.agents import trajectory
from flowrl.models.builtin import inference, trainer_backends


def test_trainers_left_align_a_right_padded_prompt_block():
    left = {"prompt": torch.tensor([[7, 8, 9], [0, 5, 6]]),
            "prompt_mask": torch.tensor([[1, 1, 1], [0, 1, 1]]),
            "response": torch.tensor([[3, 4], [2, 1]]),
            "response_mask": torch.tensor([[1, 1], [1, 0]])}
    # the same rows as Batch.collate leaves them after concatenating wider and narrower prompts
    right = {**left, "prompt": torch.tensor([[7, 8, 9], [5, 6, 0]]),
             "prompt_mask": torch.tensor([[1, 1, 1], [1, 1, 0]])}
    want = inference.full_sequence(left)
    for fn in (trainer_backends.full_sequence, inference.full_sequence,
               trajectory.full_sequence):  # one function: agents score the same way
        tokens, mask, p = fn(right)
        assert p == want[2] == 3
        assert torch.equal(mask, want[1])
        assert torch.equal(tokens * mask, want[0] * want[1])
        # the response's first token directly follows the prompt's last real token
        assert tokens[1, 2].item() == 6 and tokens[1, 3].item() == 2
