"""The cases of ``benchmarks/placement.py``: flows, model sizes, clusters, and compiling each
case with each placement strategy into a :class:`Result` (nothing runs, no weights load).

Imported by ``benchmarks/placement.py`` (which prints, writes and plots the results) and by
``benchmarks/published_setups.py`` (the placeholder modules).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

from flowrl.compiler import compile_schedule, parse_cluster
from flowrl.ir import ClusterSpec, FlowGraph, Schedule
from flowrl.config import ModelConfig, RuntimeArgs
from flowrl.errors import CompileError

STRATEGIES = ("colocate", "disaggregate", "search")  # (and `hybrid`: --strategies)
#: 8, 16 and 64 GPUs in nodes of 8.
CLUSTERS = ("8xH100-80GB", "2x8xH100-80GB", "8x8xH100-80GB")
MAX_STALENESS = 1
FLOWS = ("ppo", "grpo")
#: (policy, critic) sizes in billions of parameters.
SIZES = ((1.3, 1.3), (7, 7), (13, 7), (34, 7), (70, 7))
QUICK = dict(flows=FLOWS, sizes=((7, 7), (70, 7)), clusters=("8xH100-80GB",))

#: Public shapes of models of these sizes (layers, hidden, vocab): OPT-1.3B, Llama-2-7B/13B,
#: CodeLlama-34B, Llama-2-70B; (heads, KV heads): the 34B and 70B use grouped-query attention.
SHAPES = {1.3: (24, 2048, 50272), 7: (32, 4096, 32000), 13: (40, 5120, 32000),
          34: (48, 8192, 32000), 70: (80, 8192, 32000)}
HEADS = {1.3: (32, 32), 7: (32, 32), 13: (40, 40), 34: (64, 8), 70: (64, 8)}
MAX_SEQ_LEN, MAX_NEW_TOKENS = 2048, 1024
GRPO_SAMPLES_PER_PROMPT = 8


#: Per episode: 1024 samples in rollout batches of 64, optimizer steps of 128 samples in
#: micro-batches of 2 (split over data-parallel replicas). ``--generation-batch-size`` and
#: ``--micro-batch-size`` change the two that decide what fits.
BATCH = {"generation_batch_size": 64, "train_micro_batch_size": 2}


def runtime_args(flow: str) -> RuntimeArgs:
    return RuntimeArgs(sample_per_episode=1024, train_global_batch_size=128, **BATCH,
                       num_training_epoch=1, progress=False, max_staleness=MAX_STALENESS,
                       num_inference_per_prompt=GRPO_SAMPLES_PER_PROMPT if flow == "grpo" else 1)


def parallel_sizes(billions: float, cluster: ClusterSpec) -> tuple[int, int]:
    """(tp, pp): smallest tp (power of two, within a node) with bf16 weights + grads of a
    trainer at most half a device; pipeline stages (powers of two) when a node is not enough."""
    need = 4 * billions * 1e9  # bytes of bf16 weights + grads
    half = cluster.device_memory_gb * 1e9 / 2
    tp = 1
    while need / tp > half and tp * 2 <= cluster.devices_per_node:
        tp *= 2
    pp = 1
    while need / (tp * pp) > half and tp * pp * 2 <= cluster.num_devices:
        pp *= 2
    return tp, pp


def model_section(billions: float, cluster: ClusterSpec, generates: bool = False,
                  rule: bool = False) -> ModelConfig:
    if rule:  # rule-based reward: no weights, nothing to plan but a call
        return ModelConfig(num_params=1, num_layers=1, hidden_size=1, vocab_size=1)
    layers, hidden, vocab = SHAPES[billions]
    tp, pp = parallel_sizes(billions, cluster)
    extra = dict(max_seq_len=MAX_SEQ_LEN, max_new_tokens=MAX_NEW_TOKENS) if generates else {}
    heads, kv_heads = HEADS[billions]
    return ModelConfig(num_params=int(billions * 1e9), num_layers=layers, hidden_size=hidden,
                       vocab_size=vocab, tensor_model_parallel_size=tp,
                       pipeline_model_parallel_size=pp,
                       shape={"num_heads": heads, "num_kv_heads": kv_heads}, **extra)


# ---- traced flows ---------------------------------------------------------------------------
def _placeholder_classes():
    from flowrl.errors import FlowRLError
    from flowrl.models.base import BaseModule

    class Placeholder(BaseModule):
        """Stands in for a model in a plan; never set up or run."""

        def forward_step(self, data, iteration=0):
            raise FlowRLError(f"'{self.name}' is a planning placeholder")

    class PlaceholderTrainer(Placeholder):
        def train_step(self, data, iteration):
            raise FlowRLError(f"'{self.name}' is a planning placeholder")

    return Placeholder, PlaceholderTrainer


def traced_flows(flow: str) -> tuple[dict[str, FlowGraph], list[tuple[str, str]],
                                     dict[str, frozenset[str]]]:
    """(graphs, sync pairs, methods) of a flow shape, traced over placeholder modules
    (calls ``flowrl.init`` for their config sections)."""
    import flowrl
    from flowrl.cli import PPO_ROLES, ppo_engine_from_config

    if flow == "ppo":
        engine = ppo_engine_from_config({"models": {n: {} for n in PPO_ROLES}})
        methods = {n: frozenset({"forward_step"} | ({"train_step"} if n.startswith("ppo_")
                                                    else set())) for n in PPO_ROLES}
        return engine.graphs, engine.sync_pairs, methods
    if flow != "grpo":
        raise ValueError(f"unknown flow {flow!r}; expected one of {FLOWS}")
    names = ("policy", "reference", "reward", "grpo_policy")
    flowrl.init({"models": {n: {} for n in names}})
    Placeholder, Trainer = _placeholder_classes()
    policy, reference, reward = (Placeholder(n) for n in names[:3])
    grpo_policy = Trainer("grpo_policy")

    @flowrl.flow(name="rollout")
    def rollout(batch):
        out = policy.forward_step(batch)  # n samples per prompt (num_inference_per_prompt)
        ref = reference.forward_step(out)
        rew = reward.forward_step(out)  # rule-based: exact match, no reward model
        return out, ref, rew

    @flowrl.flow(name="train")
    def train(batch):
        grpo_policy.train_step(batch)

    graphs = {"rollout": rollout.trace(), "train": train.trace()}
    methods = {n: frozenset({"forward_step"} | ({"train_step"} if n == "grpo_policy" else set()))
               for n in names}
    return graphs, [("grpo_policy", "policy")], methods


def model_sections(flow: str, policy_b: float, critic_b: float,
                   cluster: ClusterSpec) -> dict[str, ModelConfig]:
    if flow == "ppo":
        return {"policy": model_section(policy_b, cluster, generates=True),
                "reference": model_section(policy_b, cluster),
                "reward": model_section(critic_b, cluster),
                "value": model_section(critic_b, cluster),
                "ppo_policy": model_section(policy_b, cluster),
                "ppo_value": model_section(critic_b, cluster)}
    return {"policy": model_section(policy_b, cluster, generates=True),
            "reference": model_section(policy_b, cluster),
            "reward": model_section(0, cluster, rule=True),
            "grpo_policy": model_section(policy_b, cluster)}


# ---- running the cases ----------------------------------------------------------------------
@dataclass
class Result:
    flow: str
    policy_b: float
    critic_b: float | None  # None: the flow has no critic (GRPO)
    cluster: str
    strategy: str
    tp: int
    pp: int
    critic_tp: int | None
    ok: bool
    iteration_s: float = math.nan  # seconds per episode: the steady state when pipelined
    sync_iteration_s: float = math.nan  # the same episode run synchronously
    family: str = ""  # colocated | disaggregated | hybrid | custom
    split: str = ""  # rollout:train devices, or "shared N"
    staleness: int = 0  # what the plan needs
    layouts: str = ""  # per model TPxPPxDP
    peak_gb: float = math.nan  # largest per-device peak after offload
    capacity_gb: float = math.nan
    offload_gb: float = 0.0  # offload + onload traffic per iteration
    streamed: bool = False  # optimizer state streamed through a train step
    compile_s: float = 0.0
    placement: str = ""
    reason: str = ""
    best: bool = field(default=False)

    @property
    def sizes(self) -> str:
        return f"{self.policy_b:g}B/{self.critic_b:g}B" if self.critic_b else \
            f"{self.policy_b:g}B/-"

    @property
    def case(self) -> tuple:
        return (self.flow, self.policy_b, self.critic_b, self.cluster)


def describe_placement(s: Schedule) -> str:
    """``policy 0-7 tp8 dp1; ...`` (devices, tensor/pipeline/data parallel sizes)."""
    from flowrl.report.text import fmt_devices

    parts = []
    for m, mesh in s.placement.items():
        pp = f"pp{mesh.pp}" if mesh.pp > 1 else ""
        parts.append(f"{m} {fmt_devices(mesh.devices)} tp{mesh.tp}{pp} dp{mesh.dp}")
    return "; ".join(parts)


def short_reason(err: Exception) -> str:
    """The compiler's message, trimmed to its first sentence-ish clause."""
    text = str(err).replace("\n", " ")
    for cut in ("; resident models", ". Models ", ". The op alone"):
        if cut in text:
            text = text[:text.index(cut)]
    return text[:240]


def run_case(flow: str, graphs, sync, methods, policy_b: float, critic_b: float,
             cluster_name: str, strategy: str, seed: int = 0) -> Result:
    cluster = parse_cluster(cluster_name)
    models = model_sections(flow, policy_b, critic_b, cluster)
    tp, pp = parallel_sizes(policy_b, cluster)
    critic_tp = parallel_sizes(critic_b, cluster)[0] if flow == "ppo" else None
    res = Result(flow, policy_b, critic_b if flow == "ppo" else None, cluster_name, strategy,
                 tp, pp, critic_tp, ok=False,
                 capacity_gb=cluster.capacity_bytes / 1e9)
    t0 = time.perf_counter()
    try:
        s = compile_schedule(graphs, models, sync, cluster, strategy, methods, seed,
                             runtime_args=runtime_args(flow))
    except CompileError as e:  # includes OutOfMemoryAtCompileError
        res.compile_s = time.perf_counter() - t0
        res.reason = short_reason(e)
        return res
    res.compile_s = time.perf_counter() - t0
    res.ok = True
    res.sync_iteration_s = s.estimates.iteration_time
    res.iteration_s = s.pipeline.steady_state_time if s.pipeline else res.sync_iteration_s
    res.family, res.split, res.staleness = s.layout.family, s.layout.split, s.layout.staleness
    res.layouts = " ".join(f"{m.model}:{m.describe()}" for m in s.layout.models)
    res.peak_gb = max(s.memory.peak_after) / 1e9
    res.offload_gb = s.estimates.transfer_bytes / 1e9
    res.streamed = any(op.streamed for ops in s.ops.values() for op in ops)
    res.placement = describe_placement(s)
    return res


def mark_best(results: list[Result]) -> None:
    """Per case, the fastest feasible strategy (ties go to the simpler one, in
    :data:`STRATEGIES` order)."""
    by_case: dict[tuple, list[Result]] = {}
    for r in results:
        by_case.setdefault(r.case, []).append(r)
    for rs in by_case.values():
        ok = [r for r in rs if r.ok]
        if ok:
            best = min(ok, key=lambda r: (round(r.iteration_s, 9), STRATEGIES.index(r.strategy)))
            best.best = True


def run(flows=FLOWS, sizes=SIZES, clusters=CLUSTERS, strategies=STRATEGIES, seed: int = 0,
        progress: bool = False) -> list[Result]:
    results = []
    for flow in flows:
        graphs, sync, methods = traced_flows(flow)
        for policy_b, critic_b in sizes:
            for cluster in clusters:
                for strategy in strategies:
                    r = run_case(flow, graphs, sync, methods, policy_b, critic_b, cluster,
                                 strategy, seed)
                    results.append(r)
                    if progress:
                        print(f"  {flow} {r.sizes} {cluster} {strategy}: "
                              f"{'%.1f s' % r.iteration_s if r.ok else 'does not fit'}",
                              file=sys.stderr)
    mark_best(results)
    return results
