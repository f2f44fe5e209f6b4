"""``Reference``: the frozen reference policy of a KL term (a local Hugging Face causal LM,
usually the policy's starting checkpoint)."""

from __future__ import annotations

import torch

from flowrl.models.base import outputs
from flowrl.models.builtin.inference import FrozenHFModule, full_sequence, in_chunks, require_keys
from flowrl.models.builtin.policy import logprob_temperature
from flowrl.models.hf import load_causal_lm, response_logprobs

ROLLOUT_INPUTS = ("prompt", "prompt_mask", "response", "response_mask")


class Reference(FrozenHFModule):
    """``forward_step`` -> ``ref_logprobs`` ``[B, N]``: the log-probs of the rollout's response
    tokens under ``models.<name>.model_path``, at ``models.<name>.generation.temperature``
    (set it to the policy's, as the trainer's), 0 after EOS."""

    def build_model(self) -> torch.nn.Module:
        return load_causal_lm(self.model_path, self.dtype, self.device)

    @outputs("ref_logprobs")
    def forward_step(self, batch: dict, iteration: int = 0) -> dict:
        require_keys(self.name, "forward_step", batch, ROLLOUT_INPUTS)
        tokens, mask, p = full_sequence(batch)
        temperature = logprob_temperature(float(self.model_config.generation.temperature))
        with torch.no_grad():
            lp = in_chunks(lambda t, m: response_logprobs(self.model, t, m, p, temperature),
                           self.typed_args.forward_batch_size, tokens.to(self.device),
                           mask.to(self.device))
        return {"ref_logprobs": (lp * batch["response_mask"].to(lp.device)).cpu()}
