"""Helpers for the compiler tests: graphs built by hand (no modules needed) and configs."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from flowrl.ir import FLOW_INPUT, CallNode, FlowGraph
from flowrl.config import ModelConfig, RuntimeArgs

ROOT = Path(__file__).resolve().parents[2]
PPO_NAMES = ("policy", "reference", "reward", "value", "ppo_policy", "ppo_value")
SYNC = [("ppo_policy", "policy"), ("ppo_value", "value")]


def make_graph(name: str, *calls: tuple[str, tuple[str, ...]]) -> FlowGraph:
    """``make_graph("rollout", ("policy.forward_step", (FLOW_INPUT,)), ...)``."""
    g = FlowGraph(name)
    for i, (node_id, inputs) in enumerate(calls):
        model, method = node_id.split(".")
        g.add_call(CallNode(node_id, model, method, tuple(inputs), source=f"test:{i}", order=i))
    g.outputs = (calls[-1][0],)
    return g


def ppo_graphs() -> dict[str, FlowGraph]:
    """The RLHFEngine flows, as the tracer records them."""
    p, r, v = "policy.forward_step", "reference.forward_step", "value.forward_step"
    return {
        "rollout": make_graph("rollout", (p, (FLOW_INPUT,)), (r, (p,)), (v, (p,)),
                              ("reward.forward_step", (p, r, v))),
        "train": make_graph("train", ("ppo_policy.train_step", (FLOW_INPUT,)),
                            ("ppo_value.train_step", (FLOW_INPUT,))),
    }


def shape(billions: float) -> dict:
    """A Llama-like model config section of about ``billions`` parameters."""
    if billions >= 60:
        return dict(num_params=int(billions * 1e9), num_layers=80, hidden_size=8192,
                    vocab_size=128256)
    if billions >= 6:
        return dict(num_params=int(billions * 1e9), num_layers=32, hidden_size=4096,
                    vocab_size=32000)
    return dict(num_params=int(billions * 1e9), num_layers=24, hidden_size=2048,
                vocab_size=32000)


def ppo_models(billions: float = 7, **overrides) -> dict[str, ModelConfig]:
    """Six PPO model sections of one size; ``overrides`` apply to every section."""
    return {n: ModelConfig(**{**shape(billions), **overrides}) for n in PPO_NAMES}


ARGS = RuntimeArgs(sample_per_episode=1024, generation_batch_size=128,
                   train_global_batch_size=128, train_micro_batch_size=4, progress=False)
METHODS = {n: frozenset({"forward_step"} | ({"train_step"} if n.startswith("ppo_") else set()))
           for n in PPO_NAMES}


def compile_ppo(models=None, cluster="8xH100-80GB", strategy="colocate", args=ARGS, **kw):
    """compile_schedule on the PPO flows (runtime_args always explicit: no global config)."""
    from flowrl.compiler import compile_schedule

    return compile_schedule(ppo_graphs(), models or ppo_models(7), SYNC, cluster, strategy,
                            METHODS, runtime_args=args, **kw)


def transfers(ops, start: int = 0):
    """(kind, model, what) of the offload/onload ops from index ``start``."""
    return [(o.kind, o.model, o.what) for o in ops[start:] if o.kind in ("offload", "onload")]


# The tiny models' real shape (TinyGPT: 2 layers, 64 wide, 47-token vocabulary), fp32.
TINY_SHAPE = dict(num_params=115_000, num_layers=2, hidden_size=64, vocab_size=47, dtype="fp32",
                  max_seq_len=16, max_new_tokens=8)


# A frozen copy of the tiny PPO example's YAML (as of issue 11), for the fixture modules.
TINY_EXAMPLE = {
    "runtime": "local",
    "runtime_args": {"num_episode": 40, "sample_per_episode": 64, "generation_batch_size": 32,
                     "train_global_batch_size": 32, "train_micro_batch_size": 16,
                     "num_training_epoch": 2, "seed": 1},
    "models": {
        "policy": {"args": {"init_seed": 0, "max_prompt_len": 8, "max_new_tokens": 16,
                            "temperature": 1.0}},
        "reference": {"args": {"init_seed": 0}},
        "reward": {"args": {"kl_coef": 0.02, "gamma": 1.0, "lam": 0.95}},
        "value": {"args": {"init_seed": 0}},
        "ppo_policy": {"args": {"init_seed": 0, "lr": 0.002, "clip_eps": 0.2}},
        "ppo_value": {"args": {"init_seed": 0, "lr": 0.002, "clip_eps": 0.2}},
    },
}


def tiny_config() -> dict:
    """The tiny PPO fixture's config (``tests/fixtures/tiny_ppo.py``), planned with the
    models' real shape."""
    cfg = copy.deepcopy(TINY_EXAMPLE)
    cfg["runtime_args"].update(num_episode=2, sample_per_episode=16, generation_batch_size=8,
                               train_global_batch_size=8, train_micro_batch_size=4,
                               num_training_epoch=1, output_dir=None, progress=False)
    cfg["models"]["policy"]["args"]["max_new_tokens"] = 8  # short responses: a fast test
    for name, section in cfg["models"].items():
        section.update(TINY_SHAPE)
        if name == "reward":  # rule-based: no weights worth planning for
            section.update(num_params=1, num_layers=1, hidden_size=1)
    return cfg


def tiny_example_config() -> dict:
    """examples/ppo_tiny.yaml shrunk for a fast test (for tests that run the example itself;
    its shape, dtype and generation settings are typed fields the planner reads)."""
    cfg = yaml.safe_load((ROOT / "examples" / "ppo_tiny.yaml").read_text())
    cfg["runtime_args"].update(num_episode=2, sample_per_episode=16, generation_batch_size=8,
                               train_global_batch_size=8, train_micro_batch_size=4,
                               num_training_epoch=1, output_dir=None, progress=False)
    cfg["models"]["policy"]["generation"]["max_new_tokens"] = 8  # short responses
    return cfg
