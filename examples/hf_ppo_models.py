"""PPO modules over a local Hugging Face Llama: the policy generates with vLLM or HF
``generate``, the trainers run on plain HF/torch, DeepSpeed or Megatron -- each chosen per
model by ``args.backend`` in the YAML (:func:`make_policy`, :func:`make_trainer`). The PPO
losses are written once and shared by every trainer backend.

Task as in ``tiny_ppo_models``: reward = fraction of response characters that are vowels.
Every model reads its typed settings (``model_path``, ``dtype``, ``generation``, ``optim``)
from its YAML section; what is particular to these modules is declared in their ``Args``.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

import flowrl
from flowrl import BaseModule, outputs
from flowrl.engines import ppo
from flowrl.errors import ConfigError
from flowrl.models import hf
from flowrl.models._extras import available
from flowrl.models.args import ModuleArgs
from flowrl.models.hf import HFArgs, HFModule, load_tokenizer

VOWELS = set("aeiou")


class PromptDataset(Dataset):
    def __init__(self, prompts, tokenizer, width):
        self.tokenizer, self.width = tokenizer, width
        self.data = [tokenizer(p).input_ids[-width:] for p in prompts]

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i]

    def collate_fn(self, samples):
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (self.width - len(s)) + s for s in samples])
        mask = torch.tensor([[0] * (self.width - len(s)) + [1] * len(s) for s in samples])
        return {"prompt": ids, "prompt_mask": mask}


def full_sequence(data):
    return (torch.cat([data["prompt"], data["response"]], 1),
            torch.cat([data["prompt_mask"], data["response_mask"]], 1), data["prompt"].shape[1])


class PolicyArgs(ModuleArgs):
    """The policy's own args, whichever backend generates (one YAML for both)."""

    backend: str = "auto"  # auto | vllm | hf
    max_prompt_len: int = 8
    max_model_len: int = 512  # vLLM only
    max_num_seqs: int | None = None  # vLLM only


class _PolicyMixin:
    def build_dataset(self, prompts, is_eval=False):
        return PromptDataset(prompts, self.tokenizer, self.typed_args.max_prompt_len)

    @outputs("prompt", "prompt_mask", "response", "response_mask", "logprobs")
    def forward_step(self, data, iteration=0):
        gen = self.generate(data["prompt"], data["prompt_mask"])
        p = data["prompt"].shape[1]
        with torch.no_grad():
            lp = self.logprob_model.response_logprobs(gen["tokens"], gen["attention_mask"], p)
        mask = gen["response_mask"]
        self.log("generated_tokens", mask.sum().item(), reduce="sum")
        return {"prompt": data["prompt"], "prompt_mask": data["prompt_mask"],
                "response": gen["tokens"][:, p:], "response_mask": mask, "logprobs": lp * mask}


class HFPolicy(_PolicyMixin, HFModule):
    """Generation with Hugging Face ``generate``."""

    class Args(PolicyArgs, HFArgs):
        pass

    @property
    def logprob_model(self):
        return self


def make_vllm_policy_class():
    from flowrl.models.vllm_module import VLLMArgs, VLLMModule

    class VLLMPolicy(_PolicyMixin, VLLMModule):
        """Generation with vLLM; log-probs of the sampled tokens from an HF copy of the same
        weights (kept in sync with the engine through the staging tensors)."""

        class Args(PolicyArgs, VLLMArgs):
            pass

        def setup(self):
            super().setup()
            self._hf = _LogprobHelper(self)

        @property
        def logprob_model(self):
            return self._hf

    return VLLMPolicy


class _LogprobHelper:
    """An HF model that reads the vLLM module's staging weights (the same tensors)."""

    def __init__(self, owner):
        from flowrl.models.hf import load_causal_lm

        self.owner = owner
        self.model = load_causal_lm(owner.model_path, owner.model_config.weights_dtype).eval()
        params = dict(self.model.named_parameters())
        for n, t in owner._staging.items():  # share storage: a sync updates both at once
            params[n].data = t

    def response_logprobs(self, tokens, mask, prompt_len):
        from flowrl.models.hf import response_logprobs

        return response_logprobs(self.model, tokens, mask, prompt_len,
                                 self.owner.model_config.generation.temperature)


def make_policy(name: str, backend: str):
    """``backend``: ``vllm``, ``hf`` or ``auto`` (vLLM when installed)."""
    if backend == "auto":
        backend = "vllm" if available("vllm") else "hf"
    if backend == "vllm":
        return make_vllm_policy_class()(name)
    if backend == "hf":
        return HFPolicy(name)
    raise ValueError(f"models.{name}.args.backend must be auto, vllm or hf; got {backend!r}")


class Reference(HFModule):
    @outputs("ref_logprobs")
    def forward_step(self, data, iteration=0):
        tokens, mask, p = full_sequence(data)
        with torch.no_grad():
            lp = self.response_logprobs(tokens, mask, p)
        return {"ref_logprobs": lp * data["response_mask"]}


class Value(HFModule):
    @outputs("values")
    def forward_step(self, data, iteration=0):
        tokens, mask, p = full_sequence(data)
        with torch.no_grad():
            v = self.response_values(tokens, mask, p)
        return {"values": v * data["response_mask"]}


class Reward(BaseModule):
    """Rule-based score (on text decoded with ``args.tokenizer_path``), KL penalty and GAE."""

    class Args(ModuleArgs):
        tokenizer_path: str
        kl_coef: float = 0.05
        gamma: float = 1.0
        lam: float = 0.95

    def setup(self):
        self.tokenizer = load_tokenizer(self.typed_args.tokenizer_path)
        self.kl = ppo.KLController(self.typed_args.kl_coef)

    @outputs("score", "advantages", "returns")
    def forward_step(self, data, iteration=0):
        a, mask = self.typed_args, data["response_mask"]
        n = mask.shape[1]
        scores = []
        for row, m in zip(data["response"].tolist(), mask.tolist()):
            text = self.tokenizer.decode([t for t, k in zip(row, m) if k], skip_special_tokens=True)
            scores.append(sum(c in VOWELS for c in text) / n)
        score = torch.tensor(scores)
        out = ppo.ppo_advantages(score, data["logprobs"], data["ref_logprobs"], data["values"],
                                 mask, self.kl.kl_coef, a.gamma, a.lam)
        kl = out["kl"].sum(1).mean().item()
        self.log("reward", score.mean().item())
        self.log("kl", kl)
        self.kl.update(kl, len(score))
        return {"score": score, "advantages": out["advantages"], "returns": out["returns"]}


# ---------------------------------------------------------------------------- trainers
# The PPO losses are written once (the two mixins below). A trainer backend only says how
# to run a forward pass and an optimizer step over the micro-batches:
#   run_micro_batches(data, loss_fn)   -- loss_fn(model, mb) -> (loss, stats); ``model`` is
#                                         what the forward must go through (the HF module,
#                                         the DeepSpeed engine, the Megatron GPT model)
#   token_logprobs(model, tokens, mask, prompt_len) / token_values(...)
# ``make_trainer`` picks the backend from ``models.<name>.args.backend``.

TRAINER_BACKENDS = {"policy": ("hf", "deepspeed", "megatron"), "value": ("hf", "deepspeed")}


class PPOArgs(ModuleArgs):
    """A trainer's own args on every backend (joined with the backend's ``Args``)."""

    backend: str = "hf"  # hf | deepspeed | megatron
    clip_eps: float = 0.2


class PolicyLoss:
    """PPO clipped policy loss on whitened advantages (any trainer backend)."""

    def train_step(self, data, iteration):
        adv = ppo.whiten_advantages(torch.cat([mb["advantages"] for mb in data]),
                                    torch.cat([mb["response_mask"] for mb in data]))
        for mb, a in zip(data, adv.split([mb["advantages"].shape[0] for mb in data])):
            mb["whitened_advantages"] = a

        def loss_fn(model, mb):
            tokens, mask, p = full_sequence(mb)
            lp = self.token_logprobs(model, tokens, mask, p)
            return ppo.policy_loss(lp, mb["logprobs"].to(lp.device),
                                   mb["whitened_advantages"].to(lp.device),
                                   mb["response_mask"].to(lp.device).float(),
                                   self.typed_args.clip_eps)

        return self.run_micro_batches(data, loss_fn)


class ValueLoss:
    """PPO clipped value loss (any trainer backend)."""

    def train_step(self, data, iteration):
        def loss_fn(model, mb):
            tokens, mask, p = full_sequence(mb)
            v = self.token_values(model, tokens, mask, p)
            return ppo.value_loss(v, mb["values"].to(v.device), mb["returns"].to(v.device),
                                  mb["response_mask"].to(v.device).float(),
                                  self.typed_args.clip_eps)

        return self.run_micro_batches(data, loss_fn)


class _HFTrainer(HFModule):
    """Plain torch on the HF model: TorchModule.train_micro_batches (AdamW, clip, step)."""

    def run_micro_batches(self, data, loss_fn):
        return self.train_micro_batches(data, lambda mb: loss_fn(self.model, mb),
                                        self.model_config.optim.grad_clip)

    def token_logprobs(self, model, tokens, mask, prompt_len):
        return hf.response_logprobs(model, tokens.to(self.device), mask.to(self.device),
                                    prompt_len, self.model_config.generation.temperature)

    def token_values(self, model, tokens, mask, prompt_len):
        return hf.response_values(model, tokens.to(self.device), mask.to(self.device), prompt_len)


def _deepspeed_trainer():
    """The same HF model under ``deepspeed.initialize`` (``args.zero_stage``: 0-3)."""
    from flowrl.models.deepspeed_module import DeepSpeedArgs, DeepSpeedModule

    class _DeepSpeedTrainer(DeepSpeedModule):
        class Args(DeepSpeedArgs):
            head: str = "lm"  # lm | value
            head_seed: int = 0

        def build_model(self):  # the same weights as the inference twin: no name mapping
            a, path = self.typed_args, self.model_config.model_path
            if a.head == "value":
                return hf.HFValueModel.from_pretrained(path, self.compute_dtype, a.head_seed)
            return hf.load_causal_lm(path, self.compute_dtype)

        def run_micro_batches(self, data, loss_fn):
            return self.train_micro_batches(data, loss_fn)  # loss_fn(engine, mb)

        token_logprobs = _HFTrainer.token_logprobs  # the engine is called like the HF model
        token_values = _HFTrainer.token_values

    return _DeepSpeedTrainer


def _megatron_trainer():
    """A megatron-core GPT loaded from the HF dir; syncs under HF names (weight_mapping)."""
    from flowrl.models.megatron_module import MegatronModule

    class _MegatronTrainer(MegatronModule):
        def run_micro_batches(self, data, loss_fn):
            return self.train_micro_batches(data, lambda mb: loss_fn(self.model, mb))

        def token_logprobs(self, model, tokens, mask, prompt_len):
            return self.response_logprobs(tokens, mask, prompt_len)  # through self.model

    return _MegatronTrainer


_TRAINER_BASES = {"hf": lambda: _HFTrainer, "deepspeed": _deepspeed_trainer,
                  "megatron": _megatron_trainer}
_LOSSES = {"policy": PolicyLoss, "value": ValueLoss}


def make_trainer(name: str, role: str):
    """The PPO ``role`` (``policy`` or ``value``) trainer on ``models.<name>.args.backend``."""
    backend = flowrl.get_args().model(name).args.get("backend", "hf")
    allowed = TRAINER_BACKENDS[role]
    if backend not in allowed:
        raise ConfigError(
            f"models.{name}.args.backend: the {role} trainer supports {', '.join(allowed)}; "
            f"got {backend!r}")
    base = _TRAINER_BASES[backend]()
    args = type("Args", (PPOArgs, base.Args), {})  # the PPO args + the backend's own
    cls = type(f"{backend.capitalize()}{role.capitalize()}Trainer", (_LOSSES[role], base),
               {"Args": args})
    return cls(name)


class PolicyTrainer(PolicyLoss, _HFTrainer):
    """The HF policy trainer (what ``make_trainer(name, "policy")`` gives for ``backend: hf``)."""

    class Args(PPOArgs, HFArgs):
        pass


class ValueTrainer(ValueLoss, _HFTrainer):
    """The HF value trainer."""

    Args = PolicyTrainer.Args
