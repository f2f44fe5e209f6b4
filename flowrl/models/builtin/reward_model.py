"""``RewardModel``: a learned reward, one score per (prompt, response), from a local directory
holding either a sequence classifier (``AutoModelForSequenceClassification`` with one label,
e.g. a saved ``LlamaForSequenceClassification``) or an :class:`~flowrl.models.hf.HFValueModel`
(``flowrl_value_head.pt`` beside the weights)."""

from __future__ import annotations

import json

import torch
from torch import nn

from flowrl.errors import ConfigError
from flowrl.models.base import outputs
from flowrl.models.builtin.inference import FrozenHFModule, full_sequence, in_chunks, require_keys
from flowrl.models.hf import (
    VALUE_HEAD_FILE, HFValueModel, position_ids_from_mask, sequence_scores, torch_dtype,
    transformers)


def last_token_scores(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values[b, t]`` at each row's last real token (``mask`` 1), ``[B]``."""
    t = torch.arange(mask.shape[1], device=mask.device)
    last = (mask.long() * (t + 1)).argmax(1)
    return values[torch.arange(values.shape[0], device=values.device), last]


class RewardModel(FrozenHFModule):
    """``forward_step`` -> ``score`` ``[B]`` of ``prompt ++ response`` at the last real token
    (the response's EOS, or its last token when cut at ``max_new_tokens``);
    ``baseline_step`` -> ``baseline_score`` of ``prompt ++ baseline_response`` (ReMax)."""

    kind: str | None = None  # "classifier" or "value_head", set in setup

    def build_model(self) -> nn.Module:
        path = self._model_dir()
        if (path / VALUE_HEAD_FILE).is_file():
            self.kind = "value_head"
            return HFValueModel.from_pretrained(path, self.dtype, device=self.device)
        config = json.loads((path / "config.json").read_text())
        archs = config.get("architectures") or []
        if not any(a.endswith("ForSequenceClassification") for a in archs):
            raise ConfigError(
                f"models.{self.name}.model_path: {path} is not a reward model: its config.json "
                f"architectures are {archs or 'not set'} (expected a *ForSequenceClassification) "
                f"and it has no {VALUE_HEAD_FILE} (an HFValueModel)")
        labels = len(config.get("id2label") or {}) or config.get("num_labels", 1)
        if labels != 1:
            raise ConfigError(f"models.{self.name}.model_path: the classifier in {path} has "
                              f"{labels} labels; a reward model has one (a scalar score)")
        self.kind = "classifier"
        model = transformers().AutoModelForSequenceClassification.from_pretrained(
            str(path), num_labels=1, local_files_only=True, dtype=torch_dtype(self.dtype))
        if not isinstance(getattr(model, "score", None), nn.Module):
            raise ConfigError(f"models.{self.name}.model_path: {type(model).__name__} in {path} "
                              f"has no 'score' head to read per-token rewards from")
        return model.to(self.device)

    def scores(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One score per row of ``tokens`` (any padding), read at the last real token."""
        with torch.no_grad():
            return in_chunks(self._scores, self.typed_args.forward_batch_size,
                             tokens.to(self.device), mask.to(self.device).long()).cpu()

    def _scores(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.kind == "value_head":
            return sequence_scores(self.model, tokens, mask).float()
        backbone = getattr(self.model, self.model.base_model_prefix)
        hidden = backbone(input_ids=tokens, attention_mask=mask,
                          position_ids=position_ids_from_mask(mask),
                          use_cache=False).last_hidden_state
        return last_token_scores(self.model.score(hidden)[..., 0].float(), mask)

    def _score(self, batch: dict, method: str, response: str) -> torch.Tensor:
        require_keys(self.name, method, batch, ("prompt", "prompt_mask", response,
                                                f"{response}_mask"))
        tokens, mask, _ = full_sequence({**batch, "response": batch[response],
                                         "response_mask": batch[f"{response}_mask"]})
        return self.scores(tokens, mask)

    @outputs("score")
    def forward_step(self, batch: dict, iteration: int = 0) -> dict:
        score = self._score(batch, "forward_step", "response")
        self.log("reward/mean", score.mean().item())
        return {"score": score}

    @outputs("baseline_score")
    def baseline_step(self, batch: dict, iteration: int = 0) -> dict:
        return {"baseline_score": self._score(batch, "baseline_step", "baseline_response")}
