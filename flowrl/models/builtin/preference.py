"""``DPOTrainer``: offline and online DPO (or IPO) on a Hugging Face causal LM.

* **Offline**: ``build_dataset`` tokenises prompt/chosen/rejected records with the model
  directory's tokenizer (prompt as encoded, each response without special tokens + EOS) into
  preference batches (``<side>_tokens`` / ``_mask`` / ``_loss_mask``, right-padded).
* **Online**: ``train_step`` on a scored rollout (``prompt``, ``response``, their masks and
  ``score``, ``runtime_args.num_inference_per_prompt`` consecutive candidates per prompt)
  pairs the best with the worst candidate of each group
  (:func:`flowrl.algorithms.preference.preference_pairs`; an all-tied group weighs 0). A
  micro-batch must hold whole groups.

**Reference log-probs** (documented choice): a batch may carry them, ``ref_chosen_logps`` /
``ref_rejected_logps`` ``[B]`` for preference batches or ``ref_logprobs`` ``[B, N]`` (the
built-in Reference's output) for rollouts; otherwise the trainer scores the pair with a frozen
copy of the initial weights (``models.<name>.model_path``), loaded on first use and never
trained: the same reference, one model less in the flow. Log-probs use
``generation.temperature`` (1 when greedy), as the Policy and the Reference do.

Loss: :func:`flowrl.algorithms.preference.dpo_loss` (``beta``, ``loss_type`` sigmoid/ipo —
IPO on length-averaged log-probs —, ``label_smoothing``). Metrics: ``loss``,
``chosen_reward``, ``rejected_reward``, ``margin``, ``accuracy``, ``valid_pairs`` (the share
of pairs with a preference), ``grad_norm``, ``lr``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from flowrl.algorithms.preference import (PREFERENCE_LOSSES, SIDES, dpo_loss,
                                          preference_pairs, sequence_logprobs)
from flowrl.errors import AlgorithmError
from flowrl.models.builtin.sft import record_text, right_pad
from flowrl.models.builtin.trainer_backends import (BACKENDS, BackendArgs, HFBackend, hf_args,
                                                    new_trainer)
from flowrl.models.hf import load_causal_lm, load_tokenizer

Tensor = torch.Tensor
ROLLOUT_KEYS = ("prompt", "prompt_mask", "response", "response_mask", "score")


class DPOOptions(BackendArgs):
    """``models.<name>.args`` of a :class:`DPOTrainer` (joined with its backend's)."""

    max_prompt_len: int | None = None  # keep the prompt's last tokens (None: all)
    max_response_len: int | None = None  # keep each response's first tokens (None: all)


class PairDataset(Dataset):
    """Prompt/chosen/rejected records tokenised once; ``collate_fn`` gives preference batches."""

    def __init__(self, records: list[dict], tokenizer: Any, owner: str,
                 max_prompt_len: int | None = None, max_response_len: int | None = None) -> None:
        self.pad = tokenizer.pad_token_id
        eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
        self.items = []
        for i in range(len(records)):
            prompt = list(tokenizer(record_text(records, i, "prompt", owner)).input_ids)
            prompt = prompt[-max_prompt_len:] if max_prompt_len is not None else prompt
            item = {}
            for side in SIDES:
                resp = list(tokenizer(record_text(records, i, side, owner),
                                      add_special_tokens=False).input_ids) + eos
                resp = resp[:max_response_len] if max_response_len is not None else resp
                item[side] = (prompt + resp, len(prompt))
            self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> dict:
        return self.items[idx]

    def collate_fn(self, samples: list[dict]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for side in SIDES:
            tokens, mask = right_pad([s[side][0] for s in samples], self.pad)
            loss_mask = mask.clone()
            for i, s in enumerate(samples):
                loss_mask[i, :s[side][1]] = 0  # the prompt's log-probs do not count
            out.update({f"{side}_tokens": tokens, f"{side}_mask": mask,
                        f"{side}_loss_mask": loss_mask})
        return out


class DPOLoss:
    """Pairs, reference and loss of :class:`DPOTrainer`, on any trainer backend."""

    _reference: Any = None

    def __init__(self, name: str, beta: float = 0.1, loss_type: str = "sigmoid",
                 label_smoothing: float = 0.0) -> None:
        super().__init__(name)
        if not beta > 0:
            raise AlgorithmError(f"DPOTrainer '{name}': beta must be > 0, got {beta}")
        if loss_type not in PREFERENCE_LOSSES:
            raise AlgorithmError(f"DPOTrainer '{name}': unknown loss_type {loss_type!r}; "
                                 f"expected one of {', '.join(PREFERENCE_LOSSES.names())}")
        if not 0 <= label_smoothing < 0.5:
            raise AlgorithmError(f"DPOTrainer '{name}': label_smoothing must be in [0, 0.5), "
                                 f"got {label_smoothing}")
        self.beta, self.loss_type, self.label_smoothing = beta, loss_type, label_smoothing

    def build_dataset(self, records: list[dict], is_eval: bool = False) -> PairDataset:
        """Tokenise prompt/chosen/rejected ``records`` (see the module docstring)."""
        tok = getattr(self, "tokenizer", None) or load_tokenizer(self.model_config.model_path)
        a = self.typed_args
        return PairDataset(list(records), tok, self.name, a.max_prompt_len, a.max_response_len)

    @property
    def average(self) -> bool:
        return self.loss_type == "ipo"  # IPO compares length-averaged log-probs

    def side_logps(self, model: Any, pairs: dict, side: str) -> Tensor:
        """``[B]`` sequence log-probs of one side of ``pairs`` through ``model``."""
        tokens, mask = pairs[f"{side}_tokens"], pairs[f"{side}_mask"]
        logits = self.token_logits(model, tokens, mask)
        return sequence_logprobs(logits, tokens.to(logits.device),
                                 pairs[f"{side}_loss_mask"].to(logits.device), self.average,
                                 self.logprob_temperature)

    def reference_model(self) -> Any:
        """The frozen copy of the initial weights (loaded on first use)."""
        if self._reference is None:
            ref = load_causal_lm(self.model_config.model_path, self.model_config.weights_dtype,
                                 self.device)
            self._reference = ref.eval().requires_grad_(False)
        return self._reference

    def pairs(self, mb: dict) -> dict:
        """A preference batch from ``mb`` (as is, or paired from a scored rollout), with
        ``ref_<side>_logps``."""
        if "chosen_tokens" in mb:
            pairs = dict(mb)
        elif all(k in mb for k in ROLLOUT_KEYS):
            pairs = self._online_pairs(mb)
        else:
            raise AlgorithmError(
                f"DPOTrainer '{self.name}': DPO needs a preference batch (chosen_tokens, ... "
                f"from build_dataset) or a scored rollout (keys {', '.join(ROLLOUT_KEYS)}: the "
                f"Policy's forward_step and a reward); the micro-batch has "
                f"{', '.join(sorted(mb))}")
        if not all(f"ref_{side}_logps" in pairs for side in SIDES):
            with torch.no_grad():
                for side in SIDES:
                    pairs[f"ref_{side}_logps"] = self.side_logps(self.reference_model(),
                                                                 pairs, side)
        return pairs

    def _online_pairs(self, mb: dict) -> dict:
        g = self.runtime_args.num_inference_per_prompt
        rows = mb["score"].shape[0]
        if g < 2 or rows % g:
            raise AlgorithmError(
                f"DPOTrainer '{self.name}': online DPO pairs candidates per prompt: "
                f"runtime_args.num_inference_per_prompt={g} must be >= 2 and divide the "
                f"micro-batch's {rows} rows (runtime_args.train_micro_batch_size)")
        score = mb["score"].float()
        pairs = preference_pairs(mb, score, g)
        if "ref_logprobs" in mb:  # the Reference's per-token log-probs of each candidate
            mask = mb["response_mask"].to(mb["ref_logprobs"].dtype)
            seq = (mb["ref_logprobs"] * mask).sum(1)
            if self.average:
                seq = seq / mask.sum(1).clamp_min(1.0)
            best = score.view(-1, g)
            base = torch.arange(best.shape[0]) * g
            pairs["ref_chosen_logps"] = seq[base + best.argmax(1)]
            pairs["ref_rejected_logps"] = seq[base + best.argmin(1)]
        return pairs

    def micro_batch_loss(self, model: Any, mb: dict) -> tuple[Tensor, dict]:
        pairs = self.pairs(mb)
        chosen = self.side_logps(model, pairs, "chosen")
        rejected = self.side_logps(model, pairs, "rejected")
        weights = pairs.get("pair_weight")
        loss, stats = dpo_loss(chosen, rejected, pairs["ref_chosen_logps"].to(chosen.device),
                               pairs["ref_rejected_logps"].to(chosen.device), self.beta,
                               self.loss_type, self.label_smoothing,
                               None if weights is None else weights.to(chosen.device))
        valid = 1.0 if weights is None else weights.float().mean()
        return loss, {**stats, "valid_pairs": valid}

    def train_step(self, data: list[dict], iteration: int) -> dict[str, float]:
        """One optimizer step over the micro-batches ``data``."""
        return self.run_micro_batches(data, self.micro_batch_loss)


class DPOTrainer(DPOLoss, HFBackend):
    """The DPO trainer; ``DPOTrainer(name, beta=...)`` gives the DeepSpeed / Megatron one
    when ``models.<name>.args.backend`` says so (they share :class:`DPOLoss`)."""

    Args = hf_args(DPOOptions)

    def __new__(cls, *args: Any, **kwargs: Any):
        return new_trainer(cls, DPOTrainer, DPOLoss, DPOOptions, BACKENDS, "DPO trainer",
                           args, kwargs)
