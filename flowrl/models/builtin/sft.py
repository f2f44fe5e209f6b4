"""``SFTTrainer``: supervised fine-tuning on prompt/completion records (hf backend, or
DeepSpeed / Megatron through ``args.backend``).

``build_dataset`` tokenises each record with the model directory's tokenizer: the prompt as
the tokenizer encodes it (its BOS included), the completion without special tokens plus EOS.
Batches use the rollout layout (``prompt``/``prompt_mask`` left-padded, ``response``/
``response_mask`` right-padded), so the loss reads the completion tokens only::

    nll = -token-mean over response_mask of log p(completion_t | prompt, completion_<t)

at temperature 1, whatever ``generation.temperature`` says; one token mean per micro-batch,
the step averages micro-batches. Metrics: ``loss`` (= ``nll``), ``ppl`` (``exp(nll)``),
``tokens``, ``grad_norm``, ``lr``. ``eval_step`` gives each sample's mean NLL.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from flowrl.algorithms import masked_mean
from flowrl.errors import DatasetError
from flowrl.models.base import outputs
from flowrl.models.builtin.trainer_backends import (BACKENDS, BackendArgs, HFBackend,
                                                    full_sequence, hf_args, new_trainer)
from flowrl.models.hf import load_tokenizer

Tensor = torch.Tensor


class SFTOptions(BackendArgs):
    """``models.<name>.args`` of an :class:`SFTTrainer` (joined with its backend's)."""

    max_prompt_len: int | None = None  # keep the prompt's last tokens (None: all)
    max_response_len: int | None = None  # keep the completion's first tokens (None: all)


def record_text(records: list[dict], i: int, column: str, owner: str) -> str:
    """``records[i][column]`` as a string, or a :class:`DatasetError` naming both."""
    r = records[i]
    if not isinstance(r, dict) or not isinstance(r.get(column), str):
        got = type(r.get(column)).__name__ if isinstance(r, dict) and column in r else "nothing"
        raise DatasetError(f"{owner}: record {i} needs a string column {column!r}, got {got}")
    return r[column]


def left_pad(rows: list[list[int]], pad: int) -> tuple[Tensor, Tensor]:
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):], mask[i, width - len(r):] = torch.tensor(r), 1
    return ids, mask


def right_pad(rows: list[list[int]], pad: int) -> tuple[Tensor, Tensor]:
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
    return ids, mask


class CompletionDataset(Dataset):
    """Prompt/completion records tokenised once; ``collate_fn`` gives the rollout layout."""

    def __init__(self, records: list[dict], tokenizer: Any, owner: str,
                 max_prompt_len: int | None = None, max_response_len: int | None = None) -> None:
        self.pad = tokenizer.pad_token_id
        eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
        self.items = []
        for i in range(len(records)):
            prompt = tokenizer(record_text(records, i, "prompt", owner)).input_ids
            completion = tokenizer(record_text(records, i, "completion", owner),
                                   add_special_tokens=False).input_ids + eos
            if max_prompt_len is not None:
                prompt = prompt[-max_prompt_len:]
            if max_response_len is not None:
                completion = completion[:max_response_len]
            self.items.append((list(prompt), list(completion)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> tuple[list[int], list[int]]:
        return self.items[idx]

    def collate_fn(self, samples: list[tuple[list[int], list[int]]]) -> dict[str, Tensor]:
        prompt, prompt_mask = left_pad([p for p, _ in samples], self.pad)
        response, response_mask = right_pad([c for _, c in samples], self.pad)
        return {"prompt": prompt, "prompt_mask": prompt_mask, "response": response,
                "response_mask": response_mask}


def completion_nll(lp: Tensor, mask: Tensor) -> Tensor:
    """``-token-mean(lp)`` over the completion tokens."""
    return -masked_mean(lp, mask.to(lp.dtype))


class SFTLoss:
    """Dataset and NLL of :class:`SFTTrainer`, on any trainer backend."""

    def build_dataset(self, records: list[dict], is_eval: bool = False) -> CompletionDataset:
        """Tokenise prompt/completion ``records`` (see the module docstring)."""
        tok = getattr(self, "tokenizer", None) or load_tokenizer(self.model_config.model_path)
        a = self.typed_args
        return CompletionDataset(list(records), tok, self.name, a.max_prompt_len,
                                 a.max_response_len)

    def micro_batch_loss(self, model: Any, mb: dict) -> tuple[Tensor, dict]:
        tokens, attn, p = full_sequence(mb)
        lp = self.token_logprobs(model, tokens, attn, p, temperature=1.0)  # the model's own
        mask = mb["response_mask"].to(lp.device)
        nll = completion_nll(lp, mask)
        return nll, {"ppl": torch.exp(nll.detach()), "tokens": mask.sum()}

    def train_step(self, data: list[dict], iteration: int) -> dict[str, float]:
        """One optimizer step over the micro-batches ``data``."""
        return self.run_micro_batches(data, self.micro_batch_loss)

    @outputs("nll")
    @torch.no_grad()
    def eval_step(self, data: dict, iteration: int = 0) -> dict[str, Tensor]:
        """Each sample's mean NLL over its completion tokens, ``[B]``."""
        lp = self.token_logprobs(self.forward_model, *full_sequence(data), temperature=1.0)
        mask = data["response_mask"].to(lp.device).to(lp.dtype)
        return {"nll": (-(lp * mask).sum(1) / mask.sum(1).clamp_min(1.0)).cpu()}


class SFTTrainer(SFTLoss, HFBackend):
    """The SFT trainer; ``SFTTrainer(name)`` gives the DeepSpeed / Megatron one when
    ``models.<name>.args.backend`` says so (they share :class:`SFTLoss`)."""

    Args = hf_args(SFTOptions)

    def __new__(cls, *args: Any, **kwargs: Any):
        return new_trainer(cls, SFTTrainer, SFTLoss, SFTOptions, BACKENDS, "SFT trainer",
                           args, kwargs)
