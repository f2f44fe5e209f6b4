"""Modules of the tiny DPO examples (offline and online), built on the tiny PPO ones.

Offline: ``DPOTrainer`` (the policy; it builds the preference dataset) and ``DPOReference``.
Online: ``PolicyInference`` samples, ``VowelPairs`` scores each group of samples by the
fraction of vowels (the same rule as the PPO example) and returns its best/worst pair.
"""

from __future__ import annotations

from typing import Literal

import torch

from flowrl import PreferenceDataset, TorchModule, outputs
from flowrl.engines import dpo
from flowrl.models.toy_tokenizer import ToyTokenizer
from tiny_ppo_models import PolicyInference, RewardInference, SeededArgs, _Trainer, build_lm

__all__ = ["DPOTrainer", "DPOReference", "PolicyInference", "VowelPairs", "pair_logps"]


def pair_logps(model, data: dict, average: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence log-probs of the chosen and the rejected response under ``model``."""
    out = []
    for side in dpo.SIDES:
        tokens = data[f"{side}_tokens"]
        logits, _ = model(tokens, data[f"{side}_mask"])
        out.append(dpo.sequence_logprobs(logits, tokens, data[f"{side}_loss_mask"], average))
    return out[0], out[1]


class DPOTrainer(_Trainer):
    """The policy being trained with the DPO (or IPO) loss."""

    class Args(SeededArgs):
        beta: float = 0.1
        loss_type: Literal["sigmoid", "ipo"] = "sigmoid"
        label_smoothing: float = 0.0

    def setup(self) -> None:
        super().setup()
        self.tokenizer = ToyTokenizer()

    def build_dataset(self, records, is_eval=False):
        tok = self.tokenizer
        return PreferenceDataset(records, tok.encode, tok.pad_id, tok.eos_id,
                                 encode_response=lambda s: tok.encode(s, bos=False))

    def _loss_args(self) -> tuple[bool, dict]:
        a = self.typed_args
        return a.loss_type == "ipo", {"beta": a.beta, "loss_type": a.loss_type,
                                      "label_smoothing": a.label_smoothing}

    def train_step(self, data, iteration):
        average, kwargs = self._loss_args()

        def loss_fn(mb):
            chosen, rejected = pair_logps(self.model, mb, average)
            return dpo.dpo_loss(chosen, rejected, mb["ref_chosen_logps"], mb["ref_rejected_logps"],
                                weights=mb.get("pair_weight"), **kwargs)

        return self.train_micro_batches(data, loss_fn, self.model_config.optim.grad_clip)

    @outputs("margin", "correct")
    def eval_step(self, data, iteration=0):
        """Per pair: the implicit-reward margin and whether chosen beats rejected."""
        average, kwargs = self._loss_args()
        with torch.no_grad():
            chosen, rejected = pair_logps(self.model, data, average)
        margin = kwargs["beta"] * ((chosen - data["ref_chosen_logps"]) -
                                   (rejected - data["ref_rejected_logps"]))
        return {"margin": margin, "correct": (margin > 0).float()}


class DPOReference(TorchModule):
    """Frozen reference: log-probs of both responses, computed once per sample per episode."""

    class Args(SeededArgs):
        loss_type: Literal["sigmoid", "ipo"] = "sigmoid"  # ipo: length-averaged log-probs

    def setup(self) -> None:
        self.model = build_lm(self.name, self.model_config, self.typed_args.init_seed).eval()

    @outputs("ref_chosen_logps", "ref_rejected_logps")
    def forward_step(self, data, iteration=0):
        average = self.typed_args.loss_type == "ipo"
        with torch.no_grad():
            chosen, rejected = pair_logps(self.model, data, average)
        return {"ref_chosen_logps": chosen, "ref_rejected_logps": rejected}


class VowelPairs(RewardInference):
    """Online DPO's reward: score every sample, return each prompt's best/worst pair."""

    @outputs(*dpo.PAIR_KEYS)
    def forward_step(self, data, iteration=0):
        score = self.score(data["response"], data["response_mask"])
        self.log("reward", score.mean().item())
        pairs = dpo.preference_pairs(data, score, self.runtime_args.num_inference_per_prompt)
        self.log("pair_gap", (pairs["chosen_score"] - pairs["rejected_score"]).mean().item())
        return pairs
