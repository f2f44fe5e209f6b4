"""``prompt ++ response`` of a rollout batch as a model scores it, shared by every module
that recomputes log-probs, values or scores (built-in modules, agents).

A replay buffer collating rollouts of different prompt widths right-pads the prompt block;
:func:`left_align` restores the left-padded layout, so the logits at column ``prompt_len - 1``
are the last prompt token's (the ones that predict the first response token).
"""

from __future__ import annotations

import torch


def left_align(prompt: torch.Tensor, prompt_mask: torch.Tensor, pad_id: int = 0,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real prompt tokens to the right end of the block (pads on the left).

    A batch collated from rollouts of different prompt widths is right-padded with 0 by
    :meth:`flowrl.runtime.batch.Batch.collate`; a model must see the prompt end right before
    the response, so re-align before computing log-probs on ``prompt ++ response``.
    """
    keep = prompt_mask.bool()
    # stable sort: pads (key 0) first, real tokens (key 1) after, each in their own order
    order = torch.sort(keep.long(), dim=1, stable=True).indices
    aligned = torch.gather(prompt, 1, order)
    mask = torch.gather(prompt_mask, 1, order)
    aligned = torch.where(mask.bool(), aligned, torch.full_like(aligned, pad_id))
    return aligned, mask


def full_sequence(batch: dict) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(tokens, attention_mask, prompt_len)`` of a rollout batch: ``prompt ++ response``.

    The prompt block is left-aligned first (a batch collated from rollouts of different prompt
    widths is right-padded), so the response's first token follows the prompt's last one.
    A multi-turn batch (:mod:`flowrl.agents.trajectory`) is attended by its
    ``response_attention_mask``: the environment's tokens between turns are context the
    policy saw when it sampled, though ``response_mask`` (the loss mask) leaves them out.
    """
    prompt, prompt_mask = left_align(batch["prompt"], batch["prompt_mask"].long())
    response_attn = batch.get("response_attention_mask", batch["response_mask"])
    return (torch.cat([prompt, batch["response"]], 1),
            torch.cat([prompt_mask, response_attn.long()], 1), prompt.shape[1])
