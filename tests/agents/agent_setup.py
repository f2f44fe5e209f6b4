"""Tiny agent engines for the agent tests: a lookup tool the policy calls with ``!`` and a
final answer in digits; tools that fail or hang on purpose; a recorder of sampled ids.
(A uniquely named module: pytest puts tests/agents on sys.path, Ray workers get it too.)"""

from __future__ import annotations

import copy
import time

import flowrl
from flowrl import GRPOEngine
from flowrl.agents import MarkerToolCallParser, Tool, ToolEnvironment
from flowrl.agents.tiny import AgentTrainer, GroupAdvantage, TinyAgent, TinyReference


def lookup(key: str) -> str:
    """The answer of a problem key: its digit sum mod 10 (deterministic, fast)."""
    if key == "boom":
        raise ValueError("lookup exploded")
    if key == "slow":
        time.sleep(30)
    return str(sum(int(c) for c in key if c.isdigit()) % 10)


LOOKUP = Tool("lookup", lookup, {"type": "object", "properties": {"key": {"type": "string"}},
                                 "required": ["key"]})


class LookupEnv(ToolEnvironment):
    """``!`` looks the problem's ``key`` up; a digit is the final answer (reward 1 if right);
    each successful call earns 0.25 (a per-turn reward)."""

    def __init__(self, tool_timeout_s: float) -> None:
        super().__init__([LOOKUP], MarkerToolCallParser("lookup", "key", "!"), tool_timeout_s)

    def prepare_arguments(self, tool, arguments):
        return {"key": arguments["key"] or self.sample["key"]}

    def final_reward(self, answer: str) -> float:
        return float(answer.strip() == self.sample["answer"])

    def step(self, action):
        res = super().step(action)
        if res.info.get("tool_calls") and len(res.info) == 1:
            res.reward = 0.25
        return res


class LookupAgent(TinyAgent):
    """Records every turn it samples: ``(context ids, sampled ids)``."""

    class Args(TinyAgent.Args):
        tool_timeout_s: float = 5.0

    recorded: list = []

    def make_environment(self, sample):
        return LookupEnv(self.typed_args.tool_timeout_s)

    def sample_turn(self, contexts, max_new_tokens, stop_strings):
        out = super().sample_turn(contexts, max_new_tokens, stop_strings)
        type(self).recorded += [(tuple(c), tuple(o)) for c, o in zip(contexts, out)]
        return out


class RecordingTrainer(AgentTrainer):
    """Keeps the micro-batches it trains on."""

    seen: list = []

    def train_step(self, data, iteration):
        type(self).seen += [{k: v.clone() if hasattr(v, "clone") else v for k, v in mb.items()}
                            for mb in data]
        return super().train_step(data, iteration)


TINY_AGENT = {
    "runtime_args": {
        "num_episode": 2, "num_inference_per_prompt": 4, "sample_per_episode": 16,
        "generation_batch_size": 8, "train_global_batch_size": 8, "train_micro_batch_size": 4,
        "num_training_epoch": 1, "seed": 5, "progress": False,
    },
    "models": {
        "policy": {"dtype": "fp32",
                   "shape": {"num_layers": 1, "hidden_size": 32, "num_heads": 2,
                             "vocab_size": 47, "max_seq_len": 12},
                   "generation": {"max_new_tokens": 2, "temperature": 1.0},
                   "args": {"max_turns": 3, "max_response_tokens": 9, "max_prompt_len": 6}},
        "reference": {"dtype": "fp32", "shape": {"num_layers": 1, "hidden_size": 32,
                                                 "num_heads": 2, "vocab_size": 47}},
        "advantage": {},
        "trainer": {"dtype": "fp32", "shape": {"num_layers": 1, "hidden_size": 32,
                                               "num_heads": 2, "vocab_size": 47},
                    "optim": {"lr": 0.01, "grad_clip": 1.0}, "args": {"kl_coef": 0.05}},
    },
}


def agent_config(**runtime_args) -> dict:
    cfg = copy.deepcopy(TINY_AGENT)
    cfg["runtime_args"].update(runtime_args)
    return cfg


def problems(keys=("12", "345", "7", "99", "boom", "2468", "31", "5")) -> list[dict]:
    return [{"prompt": f"{k}=", "key": k,
             "answer": lookup(k) if k not in ("boom", "slow") else "0"} for k in keys]


def build_agent(cfg: dict, with_reference: bool = True):
    """flowrl.init + LookupAgent (+ reference) + group advantages + trainer, data set."""
    flowrl.init(cfg)
    LookupAgent.recorded, RecordingTrainer.seen = [], []
    engine = GRPOEngine(LookupAgent("policy"),
                        TinyReference("reference") if with_reference else None,
                        GroupAdvantage("advantage"), RecordingTrainer("trainer"))
    engine.set_dataset(problems())
    return engine


def spin(x: str) -> str:
    """A tool that never returns and holds the GIL between switches (a thread cannot stop it)."""
    while x == "forever":
        pass
    return x.upper()


def build_agent_ppo(cfg: dict):
    """The same task under PPO (RLHFEngine): critic, multi-turn GAE, policy and value
    trainers."""
    from flowrl import RLHFEngine
    from flowrl.agents.tiny import CriticTrainer, MultiTurnGAE, TinyCritic

    tiny = cfg["models"]["reference"]
    cfg["models"].update(value=dict(tiny), critic_trainer={**tiny, "optim": {"lr": 0.01}},
                         gae={"args": {"gamma": 1.0, "lam": 1.0}})
    cfg["models"].pop("advantage", None)
    flowrl.init(cfg)
    LookupAgent.recorded, RecordingTrainer.seen = [], []
    engine = RLHFEngine(LookupAgent("policy"), TinyReference("reference"), MultiTurnGAE("gae"),
                        TinyCritic("value"), RecordingTrainer("trainer"),
                        CriticTrainer("critic_trainer"))
    engine.set_dataset(problems())
    return engine
