"""The six PPO modules of the tiny CPU example, written the way a ChatLearn user would.

Task: continue a short prompt; the reward is the fraction of response characters that are
vowels (a rule on generated tokens, so it can be learned from scratch in minutes on a CPU).

Settings every model has are typed fields of its YAML section, read here and by the planner
alike: ``shape`` (layers, width, heads, vocabulary) builds the network, ``dtype`` its
weights, ``generation`` the sampling, ``optim`` the optimizer. What is particular to these
modules is declared in their ``Args`` (unknown keys are errors naming model and key).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from flowrl import BaseModule, ConfigError, ModelConfig, TorchModule, outputs
from flowrl.algorithms import off_policy
from flowrl.engines import ppo
from flowrl.models.args import ModuleArgs
from flowrl.models.hf import torch_dtype
from flowrl.models.tiny_gpt import TinyGPT, TinyGPTConfig
from flowrl.models.toy_tokenizer import ToyTokenizer

VOWELS = set("aeiou")


class PromptDataset(Dataset):
    """Prompts tokenized and left-padded to a fixed width, so every batch lines up."""

    def __init__(self, prompts: list[str], tokenizer: ToyTokenizer, width: int) -> None:
        self.tokenizer, self.width = tokenizer, width
        self.data = []
        for p in prompts:
            ids = tokenizer.encode(p)
            if len(ids) > width:
                raise ValueError(f"prompt {p!r} is longer than max_prompt_len={width}")
            self.data.append(ids)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx: int) -> list[int]:
        return self.data[idx]

    def collate_fn(self, samples: list[list[int]]) -> dict:
        padded = [[self.tokenizer.pad_id] * (self.width - len(s)) + s for s in samples]
        ids = torch.tensor(padded)
        return {"prompt": ids, "prompt_mask": (torch.arange(self.width) >=
                                               (self.width - torch.tensor([len(s) for s in samples]))[:, None]).long()}


class SeededArgs(ModuleArgs):
    init_seed: int = 0  # same seed -> same initial weights (policy, reference, trainer)


def build_lm(name: str, cfg: ModelConfig, init_seed: int, value_head: bool = False) -> TinyGPT:
    """A TinyGPT of ``cfg.shape`` (default 2 layers, 64 wide, 4 heads) in ``cfg.dtype``."""
    vocab = ToyTokenizer().vocab_size
    s = cfg.shape
    if s.vocab_size not in (None, vocab):
        raise ConfigError(f"models.{name}.shape.vocab_size={s.vocab_size}, but the toy "
                          f"tokenizer has {vocab} tokens")
    with torch.random.fork_rng():
        torch.manual_seed(init_seed + (1 if value_head else 0))
        model = TinyGPT(TinyGPTConfig(vocab, d_model=s.hidden_size or 64,
                                      n_layers=s.num_layers or 2, n_heads=s.num_heads or 4,
                                      value_head=value_head))
    return model.to(torch_dtype(cfg.weights_dtype))


def full_sequence(data: dict) -> tuple[torch.Tensor, torch.Tensor, int]:
    tokens = torch.cat([data["prompt"], data["response"]], 1)
    mask = torch.cat([data["prompt_mask"], data["response_mask"]], 1)
    return tokens, mask, data["prompt"].shape[1]


class PolicyInference(TorchModule):
    class Args(SeededArgs):
        max_prompt_len: int = 8

    def setup(self) -> None:
        self.tokenizer = ToyTokenizer()
        self.model = build_lm(self.name, self.model_config, self.typed_args.init_seed).eval()

    def build_dataset(self, prompts, is_eval=False):
        return PromptDataset(prompts, self.tokenizer, self.typed_args.max_prompt_len)

    @outputs("prompt", "prompt_mask", "response", "response_mask", "logprobs")
    def forward_step(self, data, iteration=0):
        g = self.model_config.generation
        temperature = g.temperature
        gen = self.model.generate(data["prompt"], data["prompt_mask"], g.max_new_tokens or 16,
                                  self.tokenizer.eos_id, self.tokenizer.pad_id, temperature)
        prompt_len = data["prompt"].shape[1]
        with torch.no_grad():
            logprobs = self.model.response_logprobs(gen["tokens"], gen["attention_mask"],
                                                    prompt_len, temperature)
        resp_mask = gen["response_mask"]
        self.log("generated_tokens", resp_mask.sum().item(), reduce="sum")
        return {"prompt": data["prompt"], "prompt_mask": data["prompt_mask"],
                "response": gen["tokens"][:, prompt_len:], "response_mask": resp_mask,
                "logprobs": logprobs * resp_mask}


class PolicyReference(TorchModule):
    Args = SeededArgs

    def setup(self) -> None:
        self.model = build_lm(self.name, self.model_config, self.typed_args.init_seed).eval()

    @outputs("ref_logprobs")
    def forward_step(self, data, iteration=0):
        tokens, mask, p = full_sequence(data)
        with torch.no_grad():
            lp = self.model.response_logprobs(tokens, mask, p,
                                              self.model_config.generation.temperature)
        return {"ref_logprobs": lp * data["response_mask"]}


class ValueInference(TorchModule):
    Args = SeededArgs

    def setup(self) -> None:
        self.model = build_lm(self.name, self.model_config, self.typed_args.init_seed,
                              value_head=True).eval()

    @outputs("values")
    def forward_step(self, data, iteration=0):
        tokens, mask, p = full_sequence(data)
        with torch.no_grad():
            values = self.model.response_values(tokens, mask, p)
        return {"values": values * data["response_mask"]}


class RewardInference(BaseModule):
    """Rule-based score, then KL-penalised per-token rewards and GAE advantages."""

    class Args(ModuleArgs):
        kl_coef: float = 0.05
        gamma: float = 1.0
        lam: float = 0.95

    def setup(self) -> None:
        self.tokenizer = ToyTokenizer()
        self.kl = ppo.KLController(self.typed_args.kl_coef)

    def score(self, response: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n_new = response.shape[1]
        scores = []
        for row, m in zip(response.tolist(), mask.tolist()):
            text = "".join(self.tokenizer.id_to_token[t] for t, keep in zip(row, m) if keep)
            scores.append(sum(c in VOWELS for c in text) / n_new)
        return torch.tensor(scores)

    @outputs("score", "advantages", "returns")
    def forward_step(self, data, iteration=0):
        a = self.typed_args
        mask = data["response_mask"]
        score = self.score(data["response"], mask)
        out = ppo.ppo_advantages(score, data["logprobs"], data["ref_logprobs"], data["values"],
                                 mask, self.kl.kl_coef, a.gamma, a.lam)
        kl_per_seq = out["kl"].sum(1).mean().item()
        self.log("reward", score.mean().item())
        self.log("kl", kl_per_seq)
        self.log("kl_coef", self.kl.kl_coef)
        self.kl.update(kl_per_seq, len(score))
        return {"score": score, "advantages": out["advantages"], "returns": out["returns"]}

    def state_dict_for_checkpoint(self) -> dict:
        return {"kl": self.kl.state_dict()}

    def load_checkpoint_state(self, state: dict) -> None:
        self.kl.load_state_dict(state["kl"])


class _Trainer(TorchModule):
    """Adam with ``models.<name>.optim`` (lr, betas, eps, weight decay; grad_clip)."""

    value_head = False

    class Args(SeededArgs):
        clip_eps: float = 0.2

    def setup(self) -> None:
        self.model = build_lm(self.name, self.model_config, self.typed_args.init_seed,
                              value_head=self.value_head).train()
        self.optimizer = self.optimizer_from_config(torch.optim.Adam)


class _PolicyTrainer(_Trainer):
    """A trainer of the policy: also gives decoupled PPO its proximal log-probs."""

    @outputs("proximal_logprobs")
    def proximal_logprobs(self, data, iteration=0):
        """Log-probs of the responses under the current weights, before this step's update
        (decoupled PPO's proximal policy; the compiler calls it before ``train_step``).
        ``data``: a batch, or the train step's micro-batches (then one tensor per micro-batch)."""
        temperature = self.model_config.generation.temperature
        with torch.no_grad():
            lps = [self.model.response_logprobs(*full_sequence(mb), temperature) *
                   mb["response_mask"] for mb in (data if isinstance(data, list) else [data])]
        return {"proximal_logprobs": lps if isinstance(data, list) else lps[0]}


class PolicyTrainer(_PolicyTrainer):
    def train_step(self, data, iteration):
        # Whiten advantages over the whole global batch, then split back into micro-batches.
        adv = ppo.whiten_advantages(torch.cat([mb["advantages"] for mb in data]),
                                    torch.cat([mb["response_mask"] for mb in data]))
        sizes = [mb["advantages"].shape[0] for mb in data]
        for mb, a in zip(data, adv.split(sizes)):
            mb["whitened_advantages"] = a
        temperature = self.model_config.generation.temperature
        # Stale samples (runtime_args.max_staleness >= 1) get runtime_args.off_policy's
        # correction; fresh ones the plain PPO loss, bit for bit.
        version = off_policy.trainer_version(self, iteration, data)

        def loss_fn(mb):
            tokens, mask, p = full_sequence(mb)
            lp = self.model.response_logprobs(tokens, mask, p, temperature)
            return off_policy.correct_policy_loss(
                lp, mb, mb["whitened_advantages"], mb["response_mask"].float(),
                self.typed_args.clip_eps, self.runtime_args.off_policy, version)

        return self.train_micro_batches(data, loss_fn, self.model_config.optim.grad_clip)


class ValueTrainer(_Trainer):
    value_head = True

    def train_step(self, data, iteration):
        def loss_fn(mb):
            tokens, mask, p = full_sequence(mb)
            values = self.model.response_values(tokens, mask, p)
            return ppo.value_loss(values, mb["values"], mb["returns"],
                                  mb["response_mask"].float(), self.typed_args.clip_eps)

        return self.train_micro_batches(data, loss_fn, self.model_config.optim.grad_clip)
