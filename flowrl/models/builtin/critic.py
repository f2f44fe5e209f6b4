"""``Critic``: the frozen value model of a PPO rollout (a base transformer with a scalar head,
:class:`~flowrl.models.hf.HFValueModel`: ``flowrl_value_head.pt`` beside the weights, or a
fresh head seeded by ``args.head_seed`` on a causal-LM directory)."""

from __future__ import annotations

import torch

from flowrl.models.base import outputs
from flowrl.models.builtin.inference import FrozenHFModule, full_sequence, in_chunks, require_keys
from flowrl.models.builtin.reference import ROLLOUT_INPUTS
from flowrl.models.hf import HFValueModel, response_values


class Critic(FrozenHFModule):
    """``forward_step`` -> ``values`` ``[B, N]``: V(s_t) for each response token (the head's
    output at the token before it), 0 after EOS. The critic trainer syncs into it."""

    def build_model(self) -> torch.nn.Module:
        return HFValueModel.from_pretrained(self.model_path, self.dtype,
                                            self.typed_args.head_seed, self.device)

    @outputs("values")
    def forward_step(self, batch: dict, iteration: int = 0) -> dict:
        require_keys(self.name, "forward_step", batch, ROLLOUT_INPUTS)
        tokens, mask, p = full_sequence(batch)
        with torch.no_grad():
            v = in_chunks(lambda t, m: response_values(self.model, t, m, p),
                          self.typed_args.forward_batch_size, tokens.to(self.device),
                          mask.to(self.device))
        return {"values": (v * batch["response_mask"].to(v.device)).cpu()}
