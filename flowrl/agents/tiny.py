"""A tiny agent on :class:`flowrl.models.tiny_gpt.TinyGPT` (char-level, random init): the
model side of the CPU examples and tests of multi-turn rollouts.

:class:`TinyAgent` (an :class:`~flowrl.agents.AgentRollout`; subclasses give
``make_environment``), :class:`TinyReference`, :class:`GroupAdvantage` (GRPO advantages of
the episode return ``score``) and :class:`AgentTrainer` (the GRPO loss of the algorithm
library, attending to every token and training on ``response_mask`` only); for PPO also
:class:`TinyCritic`, :class:`MultiTurnGAE` and :class:`CriticTrainer`.

The policy may only emit its *action vocabulary* (``args.actions`` plus EOS): every other
logit is pushed to -1e6 by the model itself, so sampling, the reference and the trainer all
see the same distribution, and random initialisation already spreads the mass evenly over
the few actions.
"""

from __future__ import annotations

from typing import Literal

import torch

from flowrl import algorithms as algo
from flowrl.agents.rollout import AgentArgs, AgentDataset, AgentRollout
from flowrl.agents.trajectory import full_sequence, multi_turn_gae
from flowrl.config import ModelConfig
from flowrl.errors import ConfigError
from flowrl.models.args import ModuleArgs
from flowrl.models.base import BaseModule, outputs
from flowrl.models.hf import torch_dtype
from flowrl.models.tiny_gpt import TinyGPT, TinyGPTConfig
from flowrl.models.toy_tokenizer import ToyTokenizer
from flowrl.models.torch_module import TorchModule

ACTIONS = "0123456789!"  # what the policy may say (plus EOS)
AGG = "seq-mean-token-mean"  # GRPO's aggregation: tokens per episode, then episodes


class ActionGPT(TinyGPT):
    """A TinyGPT whose logits outside ``allowed`` ids are -1e6 (finite: masked log-probs of
    environment tokens stay finite, and times a 0 mask give 0)."""

    def __init__(self, config: TinyGPTConfig, allowed: list[int]) -> None:
        super().__init__(config)
        bias = torch.full((config.vocab_size,), -1e6)
        bias[allowed] = 0.0
        self.register_buffer("action_bias", bias, persistent=False)

    def forward(self, tokens, attention_mask=None, cache=None, key_mask=None):
        logits, cache = super().forward(tokens, attention_mask, cache, key_mask)
        return logits + self.action_bias.to(logits.dtype), cache


class TinyArgs(ModuleArgs):
    init_seed: int = 0  # same seed -> same initial weights (policy, reference, trainer)
    actions: str = ACTIONS


def build_lm(name: str, cfg: ModelConfig, args: TinyArgs) -> ActionGPT:
    tok = ToyTokenizer()
    s = cfg.shape
    if s.vocab_size not in (None, tok.vocab_size):
        raise ConfigError(f"models.{name}.shape.vocab_size={s.vocab_size}, but the toy "
                          f"tokenizer has {tok.vocab_size} tokens")
    allowed = tok.encode(args.actions, bos=False) + [tok.eos_id]
    with torch.random.fork_rng():
        torch.manual_seed(args.init_seed)
        model = ActionGPT(TinyGPTConfig(tok.vocab_size, d_model=s.hidden_size or 64,
                                        n_layers=s.num_layers or 2, n_heads=s.num_heads or 4),
                           allowed)  # 128 positions for every model, so weights sync 1:1
    return model.to(torch_dtype(cfg.weights_dtype))


@torch.no_grad()
def sample_turn(model: TinyGPT, contexts: list[list[int]], budgets: list[int],
                stop_ids: set[int], pad_id: int, temperature: float) -> list[list[int]]:
    """One turn per context, batched with a KV cache: ids as sampled, each row ending at a
    stop id (EOS, a tool-call marker) or its budget."""
    width = max(len(c) for c in contexts)
    ids = torch.tensor([[pad_id] * (width - len(c)) + c for c in contexts])
    keys = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts])
    logits, cache = model(ids, keys)
    out: list[list[int]] = [[] for _ in contexts]
    active = torch.tensor([b > 0 for b in budgets])
    for _ in range(max(budgets)):
        probs = torch.softmax(logits[:, -1].float() / temperature, -1)
        nxt = torch.multinomial(probs, 1).squeeze(1)
        fed = active.clone()
        for i in torch.nonzero(active).flatten().tolist():
            out[i].append(int(nxt[i]))
            if int(nxt[i]) in stop_ids or len(out[i]) >= budgets[i]:
                active[i] = False
        if not bool(active.any()):
            break
        keys = torch.cat([keys, fed.long()[:, None]], 1)
        logits, cache = model(torch.where(fed, nxt, pad_id)[:, None], cache=cache,
                              key_mask=keys)
    return out


class TinyAgent(AgentRollout):
    """The model side of an agent on a TinyGPT; subclasses give ``make_environment``."""

    class Args(AgentArgs, TinyArgs):
        pass

    def setup(self) -> None:
        self.tokenizer = ToyTokenizer()
        self.pad_id = self.tokenizer.pad_id
        self.model = build_lm(self.name, self.model_config, self.typed_args).eval()

    def build_dataset(self, records, is_eval=False):
        return AgentDataset(records, self.tokenizer.encode, self.pad_id,
                            self.typed_args.max_prompt_len, self.name)

    def sample_turn(self, contexts, max_new_tokens, stop_strings):
        stops = {self.tokenizer.eos_id} | {self.tokenizer.token_to_id[s] for s in stop_strings}
        return sample_turn(self.model, contexts, max_new_tokens, stops, self.pad_id,
                           self.model_config.generation.temperature)

    def encode(self, text: str) -> list[int]:
        # Observations may hold any text (error messages); the toy vocabulary is lower-case
        # letters, digits and a little punctuation, so other characters become "?".
        vocab = self.tokenizer.token_to_id
        return [vocab.get(c, vocab["?"]) for c in text.lower()]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def behaviour_logprobs(self, batch):
        return self.model.response_logprobs(*full_sequence(batch),
                                            self.model_config.generation.temperature)


class TinyReference(TorchModule):
    Args = TinyArgs

    def setup(self) -> None:
        self.model = build_lm(self.name, self.model_config, self.typed_args).eval()

    @outputs("ref_logprobs")
    def forward_step(self, data, iteration=0):
        with torch.no_grad():
            lp = self.model.response_logprobs(*full_sequence(data),
                                              self.model_config.generation.temperature)
        return {"ref_logprobs": lp * data["response_mask"]}


class GroupAdvantage(BaseModule):
    """Advantages of the episode return ``score`` over each prompt's group of
    ``num_inference_per_prompt`` episodes, by the algorithm library's ``args.estimator``
    (``grpo``, ``dr_grpo`` or ``rloo``), on the loss-mask tokens only."""

    class Args(ModuleArgs):
        estimator: Literal["grpo", "dr_grpo", "rloo"] = "grpo"

    @outputs("advantages")
    def forward_step(self, data, iteration=0):
        out = algo.compute_advantages(self.typed_args.estimator, data["score"].float(),
                                      data["response_mask"],
                                      group_size=self.runtime_args.num_inference_per_prompt)
        return {"advantages": out.advantages}


class AgentTrainer(TorchModule):
    """GRPO on trajectories: attends to every token, trains on ``response_mask`` only."""

    class Args(TinyArgs):
        clip_eps: float = 0.2
        kl_coef: float = 0.0

    def setup(self) -> None:
        self.model = build_lm(self.name, self.model_config, self.typed_args).train()
        self.optimizer = self.optimizer_from_config(torch.optim.Adam)

    def train_step(self, data, iteration):
        a, temperature = self.typed_args, self.model_config.generation.temperature

        def loss_fn(mb):
            lp = self.model.response_logprobs(*full_sequence(mb), temperature)
            mask = mb["response_mask"].to(lp.dtype)
            loss, stats = algo.compute_policy_loss("grpo", lp, mb["logprobs"], mb["advantages"],
                                                   mask, clip_low=a.clip_eps, agg=AGG)
            if a.kl_coef:
                kl, kl_stats = algo.kl_loss(lp, mb["ref_logprobs"], mask, kl_coef=a.kl_coef,
                                            agg=AGG)
                loss, stats = loss + kl, {**stats, "kl": kl_stats["kl"]}
            return loss, {k: stats[k] for k in ("pg_loss", "clipfrac", "kl") if k in stats}

        return self.train_micro_batches(data, loss_fn, self.model_config.optim.grad_clip)


# ---- PPO: a critic, its trainer, and multi-turn GAE -----------------------------------------
def build_critic(name: str, cfg: ModelConfig, args: TinyArgs) -> TinyGPT:
    """A TinyGPT with a scalar value head (no action restriction: it scores every state)."""
    s = cfg.shape
    with torch.random.fork_rng():
        torch.manual_seed(args.init_seed + 1)
        model = TinyGPT(TinyGPTConfig(ToyTokenizer().vocab_size, d_model=s.hidden_size or 64,
                                      n_layers=s.num_layers or 2, n_heads=s.num_heads or 4,
                                      value_head=True))
    return model.to(torch_dtype(cfg.weights_dtype))


class TinyCritic(TorchModule):
    """Values of the states before each policy token (attending to every token)."""

    Args = TinyArgs

    def setup(self) -> None:
        self.model = build_critic(self.name, self.model_config, self.typed_args).eval()

    @outputs("values")
    def forward_step(self, data, iteration=0):
        with torch.no_grad():
            values = self.model.response_values(*full_sequence(data))
        return {"values": values * data["response_mask"]}


class MultiTurnGAE(BaseModule):
    """PPO advantages and returns from ``token_rewards`` and ``values`` with
    :func:`flowrl.agents.multi_turn_gae` (GAE over policy tokens only)."""

    class Args(ModuleArgs):
        gamma: float = 1.0
        lam: float = 0.95

    @outputs("advantages", "returns")
    def forward_step(self, data, iteration=0):
        a = self.typed_args
        out = multi_turn_gae(data["token_rewards"], data["values"], data["response_mask"],
                             a.gamma, a.lam)
        return {"advantages": out.advantages, "returns": out.returns}


class CriticTrainer(TorchModule):
    """The clipped value loss on policy tokens."""

    class Args(TinyArgs):
        clip_eps: float = 0.2

    def setup(self) -> None:
        self.model = build_critic(self.name, self.model_config, self.typed_args).train()
        self.optimizer = self.optimizer_from_config(torch.optim.Adam)

    def train_step(self, data, iteration):
        eps = self.typed_args.clip_eps

        def loss_fn(mb):
            values = self.model.response_values(*full_sequence(mb))
            mask, old, ret = mb["response_mask"].to(values.dtype), mb["values"], mb["returns"]
            clipped = old + torch.clamp(values - old, -eps, eps)
            per_token = torch.maximum((values - ret).square(), (clipped - ret).square())
            return 0.5 * algo.masked_mean(per_token, mask), {}

        return self.train_micro_batches(data, loss_fn, self.model_config.optim.grad_clip)
