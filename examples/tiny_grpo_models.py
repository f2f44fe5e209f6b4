"""Modules of the tiny GRPO example: a policy that answers "3+4=" with "7", its reference and
trainer. The reward is :class:`flowrl.RuleReward` (exact match of the answer): no reward model.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from flowrl import outputs
from flowrl.algorithms import off_policy
from flowrl.engines import grpo
from flowrl.models.toy_tokenizer import ToyTokenizer
from tiny_ppo_models import (PolicyInference, PolicyReference, SeededArgs, _PolicyTrainer,
                             full_sequence)

__all__ = ["MathPolicy", "PolicyReference", "GRPOTrainer", "MathDataset", "make_problems",
           "accuracy_by_split"]


def make_problems(max_operand: int = 9, max_sum: int = 9) -> list[dict]:
    """Every ``a+b=`` with ``0 <= a, b <= max_operand`` and ``a + b <= max_sum``, as
    ``{"prompt": "3+4=", "answer": "7"}``."""
    return [{"prompt": f"{a}+{b}=", "answer": str(a + b)}
            for a in range(max_operand + 1) for b in range(max_operand + 1) if a + b <= max_sum]


class MathDataset(Dataset):
    """Problems tokenized and left-padded to ``width``; the answer and the problem's ``split``
    (``"train"`` unless the record says otherwise) ride along as strings."""

    def __init__(self, problems: list[dict], tokenizer: ToyTokenizer, width: int) -> None:
        self.tokenizer, self.width = tokenizer, width
        self.data = [(tokenizer.encode(p["prompt"]), p["answer"], p.get("split", "train"))
                     for p in problems]
        too_long = [p["prompt"] for p, (ids, *_) in zip(problems, self.data) if len(ids) > width]
        if too_long:
            raise ValueError(f"prompts longer than max_prompt_len={width}: {too_long[:3]}")

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx: int):
        return self.data[idx]

    def collate_fn(self, samples) -> dict:
        ids, mask = self.tokenizer.pad_left([s for s, _, _ in samples])
        pad = self.width - ids.shape[1]
        ids = torch.nn.functional.pad(ids, (pad, 0), value=self.tokenizer.pad_id)
        mask = torch.nn.functional.pad(mask, (pad, 0), value=0)
        return {"prompt": ids, "prompt_mask": mask, "answer": [a for _, a, _ in samples],
                "split": [s for _, _, s in samples]}


class MathPolicy(PolicyInference):
    """Samples answers (``generation``); ``eval_step`` samples at ``args.eval_temperature``
    (near-greedy)."""

    class Args(SeededArgs):
        max_prompt_len: int = 6
        eval_temperature: float = 0.05

    def build_dataset(self, prompts, is_eval=False):
        return MathDataset(prompts, self.tokenizer, self.typed_args.max_prompt_len)

    @outputs("prompt", "prompt_mask", "response", "response_mask", "logprobs", "answer")
    def forward_step(self, data, iteration=0):
        return {**super().forward_step(data, iteration), "answer": data["answer"]}

    @outputs("prompt", "prompt_mask", "response", "response_mask", "answer", "split")
    def eval_step(self, data, iteration=0):
        gen = self.model.generate(data["prompt"], data["prompt_mask"],
                                  self.model_config.generation.max_new_tokens or 3,
                                  self.tokenizer.eos_id, self.tokenizer.pad_id,
                                  self.typed_args.eval_temperature)
        p = data["prompt"].shape[1]
        return {"prompt": data["prompt"], "prompt_mask": data["prompt_mask"],
                "response": gen["tokens"][:, p:], "response_mask": gen["response_mask"],
                "answer": data["answer"], "split": data["split"]}


def accuracy_by_split(outputs: list[dict]) -> dict[str, float]:
    """Evaluator post-processing: accuracy per ``split`` (e.g. train vs held-out problems)."""
    scores: dict[str, list[float]] = {}
    for out in outputs:
        for split, score in zip(out["split"], out["score"].tolist()):
            scores.setdefault(split, []).append(score)
    return {f"accuracy_{s}": sum(v) / len(v) for s, v in sorted(scores.items())}


class GRPOTrainer(_PolicyTrainer):
    class Args(_PolicyTrainer.Args):
        kl_coef: float = 0.04
        loss_agg: str = "seq-mean-token-mean"

    def train_step(self, data, iteration):
        a, temperature = self.typed_args, self.model_config.generation.temperature
        version = off_policy.trainer_version(self, iteration, data)  # corrects stale samples

        def loss_fn(mb):
            tokens, mask, p = full_sequence(mb)
            lp = self.model.response_logprobs(tokens, mask, p, temperature)
            resp = mb["response_mask"].to(lp.dtype)
            ratio = off_policy.policy_ratio(lp, mb, resp, self.runtime_args.off_policy, version)
            return grpo.grpo_loss(lp, mb["logprobs"], mb.get("ref_logprobs"), mb["advantages"],
                                  resp, a.clip_eps, a.kl_coef, loss_agg=a.loss_agg, ratio=ratio)

        return self.train_micro_batches(data, loss_fn, self.model_config.optim.grad_clip)
