"""An agent rollout on a local Hugging Face causal LM (extra ``flowrl[hf]``).

:class:`HFAgent` is an :class:`~flowrl.models.hf.HFModule` (``model_path``, ``dtype``,
``generation`` as usual) and an :class:`~flowrl.agents.AgentRollout`: subclass it and give
``make_environment``. A turn is sampled with ``model.generate`` over the left-padded
contexts of every ready episode; each row keeps its sampled ids up to EOS, the first stop
string (a tool call's closing tag) or its token budget. Observations are encoded once with
``tokenizer.encode(text, add_special_tokens=False)``; nothing is re-tokenised.
"""

from __future__ import annotations

import torch

from flowrl.agents.rollout import AgentArgs, AgentDataset, AgentRollout
from flowrl.agents.trajectory import full_sequence
from flowrl.models.hf import HFArgs, HFModule, response_logprobs, transformers


class HFAgentArgs(HFArgs, AgentArgs):
    """``models.<name>.args`` of an :class:`HFAgent`: HF and agent settings together."""


def cut_turn(ids: list[int], budget: int, eos_id: int | None, stop_strings: tuple[str, ...],
             decode) -> list[int]:
    """The sampled ``ids`` up to and including EOS or the token that completes a stop
    string, at most ``budget`` of them (the rest of a row's batch-generated ids)."""
    ids = ids[:budget]
    if eos_id is not None and eos_id in ids:
        ids = ids[:ids.index(eos_id) + 1]
    if stop_strings:
        for k in range(1, len(ids) + 1):
            if any(s in decode(ids[:k]) for s in stop_strings):
                return ids[:k]
    return ids


class HFAgent(HFModule, AgentRollout):
    """A Hugging Face policy that plays multi-turn episodes (subclasses: ``make_environment``)."""

    Args = HFAgentArgs

    def setup(self) -> None:
        super().setup()
        a = self.typed_args
        self.eos_id = self.tokenizer.eos_token_id if a.eos_id is None else a.eos_id
        self.pad_id = self.tokenizer.pad_token_id if a.pad_id is None else a.pad_id

    def build_dataset(self, records, is_eval=False):
        return AgentDataset(records, self.tokenizer.encode, self.pad_id,
                            self.typed_args.max_prompt_len, self.name)

    @torch.no_grad()
    def sample_turn(self, contexts, max_new_tokens, stop_strings):
        g, a = self.model_config.generation, self.typed_args
        width = max(len(c) for c in contexts)
        ids = torch.tensor([[self.pad_id] * (width - len(c)) + c for c in contexts])
        mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts])
        # one-token turns need no stop criterion (cut_turn still applies); transformers' one
        # cannot be built for every vocabulary (a character tokenizer without "a")
        stops = list(stop_strings) if max(max_new_tokens) > 1 else []
        cfg = transformers().GenerationConfig(
            max_new_tokens=max(max_new_tokens), min_new_tokens=0, do_sample=a.do_sample,
            temperature=g.temperature if a.do_sample else None,
            top_p=g.top_p if a.do_sample else None, top_k=g.top_k if a.do_sample else None,
            eos_token_id=self.eos_id, pad_token_id=self.pad_id, bos_token_id=None,
            stop_strings=stops or None, use_cache=True)
        out = self.model.generate(input_ids=ids.to(self.device),
                                  attention_mask=mask.to(self.device), generation_config=cfg,
                                  tokenizer=self.tokenizer)
        new = out[:, width:].tolist()
        return [cut_turn(row, budget, self.eos_id, stop_strings, self.decode)
                for row, budget in zip(new, max_new_tokens)]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def behaviour_logprobs(self, batch):
        tokens, mask, p = full_sequence(batch)
        return response_logprobs(self.model, tokens.to(self.device), mask.to(self.device), p,
                                 self.model_config.generation.temperature).cpu()
