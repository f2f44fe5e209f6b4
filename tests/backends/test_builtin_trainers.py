"""Built-in trainers on DeepSpeed (ZeRO 0, gloo on CPU) and Megatron (TP=1, in process): the
first step's loss equals the hf backend's on the same batch, the weights move, the lr
follows ``optim``'s schedule. Run by hand: ``python -m pytest -q -m backend
tests/backends/test_builtin_trainers.py``."""

from __future__ import annotations

import pytest
import torch

from _backend_utils import need, tiny_llama_dir  # noqa: F401  (fixture)

pytestmark = pytest.mark.backend

B, P, N = 4, 3, 5


def _init(name: str, model_dir, args: dict, optim: dict | None = None):
    import flowrl

    return flowrl.init({
        "runtime_args": {"num_inference_per_prompt": 2, "sample_per_episode": 4,
                         "generation_batch_size": 4, "train_global_batch_size": 4,
                         "train_micro_batch_size": 2, "num_episode": 2},
        "models": {name: {"model_path": str(model_dir), "dtype": "fp32", "args": args,
                          "optim": {"lr": 1e-3, **(optim or {})}}}})


def _rollout(vocab: int) -> dict:
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1] * 5, [1] * 3 + [0] * 2, [1] * 4 + [0], [1] * 2 + [0] * 3])
    return {"prompt": torch.randint(4, vocab, (B, P), generator=g),
            "prompt_mask": torch.ones(B, P, dtype=torch.long),
            "response": torch.randint(4, vocab, (B, N), generator=g), "response_mask": mask,
            "values": torch.randn(B, N, generator=g) * mask,
            "returns": torch.randn(B, N, generator=g) * mask,
            "advantages": torch.tensor([1.0, -1.0, 0.5, -0.5])}


def _micro_batches(model, data: dict) -> list[dict]:
    from flowrl.models.builtin.trainer_backends import full_sequence
    from flowrl.models.hf import response_logprobs

    with torch.no_grad():
        lp = response_logprobs(model, *full_sequence(data)) * data["response_mask"]
    data = {**data, "logprobs": lp - 0.1 * data["response_mask"]}
    return [{k: v[:2] for k, v in data.items()}, {k: v[2:] for k, v in data.items()}]


def _step(cls, name, model_dir, args, optim=None, **kwargs):
    from flowrl.models.hf import load_causal_lm

    cfg = _init(name, model_dir, args, optim)
    trainer = cls(name, **kwargs).bind(cfg)
    trainer.setup()
    ref = load_causal_lm(model_dir, "fp32")
    mbs = _micro_batches(ref, _rollout(ref.config.vocab_size))
    before = {n: p.detach().clone() for n, p in trainer.named_sync_tensors().items()}
    stats = trainer.train_step(mbs, 0)
    after = trainer.named_sync_tensors()
    moved = any(not torch.equal(before[n], after[n]) for n in before)
    return trainer, stats, moved


@pytest.mark.parametrize("backend", ["deepspeed", "megatron"])
def test_actor_backends_match_hf(tiny_llama_dir, backend):
    need("deepspeed" if backend == "deepspeed" else "megatron.core", backend)
    from flowrl.algorithms import AlgorithmSettings
    from flowrl.models.builtin.actor import Actor

    alg = AlgorithmSettings.from_dict({"policy_loss": {"name": "grpo"}})
    _, hf_stats, _ = _step(Actor, "actor", tiny_llama_dir, {}, algorithm=alg)
    trainer, stats, moved = _step(Actor, "actor", tiny_llama_dir, {"backend": backend},
                                  algorithm=alg)
    assert type(trainer).__name__ == f"{backend.capitalize()}Actor"
    assert stats["loss"] == pytest.approx(hf_stats["loss"], rel=1e-4, abs=1e-6)
    assert moved and stats["lr"] == pytest.approx(1e-3)


def test_critic_and_sft_on_deepspeed(tiny_llama_dir):
    need("deepspeed", "deepspeed")
    from flowrl.models.builtin.critic_trainer import CriticTrainer
    from flowrl.models.builtin.sft import SFTTrainer

    _, hf_stats, _ = _step(CriticTrainer, "critic", tiny_llama_dir, {})
    _, stats, moved = _step(CriticTrainer, "critic", tiny_llama_dir, {"backend": "deepspeed"})
    assert stats["value_loss"] == pytest.approx(hf_stats["value_loss"], rel=1e-4)
    assert moved
    _, stats, moved = _step(SFTTrainer, "sft", tiny_llama_dir, {"backend": "deepspeed"})
    assert moved and stats["loss"] > 0


def test_deepspeed_steps_the_schedule(tiny_llama_dir):
    need("deepspeed", "deepspeed")
    from flowrl.algorithms import AlgorithmSettings
    from flowrl.models.builtin.actor import Actor

    # total = 2 episodes x 1 step; warm-up 1 step, then linear decay: factors 1/1, then 1
    optim = {"scheduler": "linear", "warmup_steps": 1, "min_lr_ratio": 0.5}
    trainer, stats, _ = _step(Actor, "actor", tiny_llama_dir, {"backend": "deepspeed"}, optim,
                              algorithm=AlgorithmSettings())
    assert stats["lr"] == pytest.approx(1e-3)
    # after one step the decay starts: factor at step 1 = 0.5 + 0.5 * (1 - 0/1) = 1.0
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    trainer.train_step(_micro_batches(trainer.model, _rollout(trainer.model.config.vocab_size)), 1)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.5e-3)
