"""Per-model resource specs, derived from config without loading weights.

Everything is read from the typed fields of a model's config (``shape``, ``parallel``,
``generation``, ``dtype``: see :mod:`flowrl.config.model`), the same fields the built-in
modules build and run with. Sizes come from ``shape.num_params`` (a ``model_path``'s
config.json fills it, counting grouped-query attention, the gated MLP and untied embeddings)
or from ``shape.num_layers``/``hidden_size``/``vocab_size`` (``P = 12 * L * h^2 + V * h``:
attention + MLP blocks plus a tied embedding). Whatever is missing of layers/hidden/vocab
when ``num_params`` is given is guessed from the usual GPT aspect ratio (``L ~ h / 128``,
``V = 32000``); give them (or a ``model_path``) for accurate KV-cache and activation
estimates. ``shape.num_heads``/``num_kv_heads`` size the KV cache (grouped-query attention).

A section with no size at all and no ``model_path`` that neither trains nor generates is a
*weightless* model (a rule reward): it holds no device state and its calls cost
``cpu_seconds_per_sample`` per sample on the host (default :data:`DEFAULT_CPU_SECONDS`).
"""

from __future__ import annotations

from dataclasses import dataclass

from flowrl.ir import EpisodeSpec, FlowGraph
from flowrl.config import ModelConfig, OffloadPolicy, RuntimeArgs
from flowrl.compiler.agent_cost import agent_lengths
from flowrl.compiler.lengths import LengthDist, sigma_from_p99
from flowrl.errors import CompileError

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
DEFAULT_SEQ_LEN = 2048
DEFAULT_VOCAB = 32000
STATE_KINDS = ("weights", "grads", "optimizer")
#: Host seconds per sample of a weightless model's call (a rule reward: decode, regex/math
#: check) when its section does not say; a profile replaces it with the measured time.
DEFAULT_CPU_SECONDS = 2e-3


@dataclass(frozen=True)
class ModelResources:
    """What planning knows about one model (all sizes are whole-model totals)."""

    name: str
    num_params: int
    num_layers: int
    hidden_size: int
    vocab_size: int
    dtype: str
    trainable: bool
    tp: int
    pp: int
    pinned_devices: int | None  # device count fixed by num_devices / data_parallel_size
    manual_devices: tuple[int, ...] | None
    max_seq_len: int
    max_new_tokens: int
    colocation_group: str | None
    offload: OffloadPolicy
    generates: bool = False  # samples responses when it reads a rollout's prompts
    kv_fraction: float = 1.0  # num_kv_heads / num_heads (grouped-query attention)
    num_heads: int | None = None
    num_kv_heads: int | None = None
    #: no weights (a rule reward): no device state, calls cost host time per sample
    weightless: bool = False
    cpu_seconds_per_sample: float = 0.0
    #: parallel dimensions the planner may choose for this model ("tp", "pp"): what its
    #: module class declares it runs (``BaseModule.parallelism``); the others stay at the
    #: config's size. Data parallelism is always free.
    parallelism: frozenset[str] = frozenset({"tp", "pp"})
    #: response lengths (:mod:`flowrl.compiler.lengths`): mean (None: ``max_new_tokens``),
    #: log-normal shape, and how the generator batches ("static" or "continuous")
    mean_new_tokens: float | None = None
    length_sigma: float = 0.0
    batching: str = "static"

    @property
    def mp(self) -> int:
        """Model-parallel size (devices one replica spans)."""
        return self.tp * self.pp

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def prompt_len(self) -> int:
        return max(1, self.max_seq_len - self.max_new_tokens)

    @property
    def lengths(self) -> LengthDist:
        """The response-length distribution (every response at ``max_new_tokens`` unless
        ``generation.expected_new_tokens`` says otherwise)."""
        if self.mean_new_tokens is None:
            return LengthDist.fixed(self.max_new_tokens)
        return LengthDist(self.mean_new_tokens, self.length_sigma, self.max_new_tokens)

    @property
    def expected_seq_len(self) -> float:
        """Mean sequence length (prompt + mean response): what scoring and training pay per
        sample when sequences are packed (no padding to the longest)."""
        if self.mean_new_tokens is None:
            return self.max_seq_len
        return self.prompt_len + self.mean_new_tokens

    @property
    def weight_bytes(self) -> int:
        return self.num_params * self.dtype_bytes

    @property
    def grad_bytes(self) -> int:
        return self.num_params * self.dtype_bytes if self.trainable else 0

    @property
    def optimizer_bytes(self) -> int:
        """Adam: fp32 master copy + two moments for 16-bit training, two moments for fp32."""
        if not self.trainable:
            return 0
        return self.num_params * (8 if self.dtype == "fp32" else 12)

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V for every layer (``kv_fraction`` of the heads under grouped-query
        attention)."""
        return round(2 * self.num_layers * self.hidden_size * self.kv_fraction *
                     self.dtype_bytes)

    def kv_bytes_per_token_per_rank(self, tp: int) -> float:
        """KV bytes per token on one tensor-parallel rank (all layers). Ranks split the KV
        heads; with more ranks than KV heads each rank keeps a replica of one head (how
        Megatron and vLLM shard grouped-query attention), so GQA stops shrinking there."""
        if self.num_kv_heads is None or self.num_heads is None:
            return self.kv_bytes_per_token / tp
        head_dim = self.hidden_size / self.num_heads
        heads = max(self.num_kv_heads / tp, 1.0)
        return 2 * self.num_layers * heads * head_dim * self.dtype_bytes

    def state_kinds(self) -> tuple[str, ...]:
        """Kinds of persistent device state this model holds."""
        return STATE_KINDS if self.trainable else ("weights",)

    def offloadable(self, kind: str) -> bool:
        """Whether the offload policy lets the compiler move ``kind`` off the device."""
        return self.offload == "auto" or kind in forced_kinds(self.offload)


def forced_kinds(policy: OffloadPolicy) -> tuple[str, ...]:
    """State a policy offloads whenever the model is idle (``auto``: only where needed)."""
    return {"weights": ("weights",), "optimizer": ("optimizer",),
            "all": STATE_KINDS}.get(policy, ())


def _weightless(cfg: ModelConfig, trainable: bool, generates: bool) -> bool:
    """No size, no checkpoint, no training, no sampling: a rule (see the module docstring)."""
    s = cfg.shape
    sized = any(v is not None for v in (s.num_params, s.num_layers, s.hidden_size,
                                        s.vocab_size))
    return not (sized or cfg.model_path or trainable or generates)


def _size(name: str, cfg: ModelConfig) -> tuple[int, int, int, int]:
    """(num_params, layers, hidden, vocab), derived as documented above."""
    s = cfg.shape
    p, layers, hidden, vocab = s.num_params, s.num_layers, s.hidden_size, s.vocab_size
    if p is None:
        missing = [f for f, v in (("num_layers", layers), ("hidden_size", hidden),
                                  ("vocab_size", vocab)) if v is None]
        if missing:
            raise CompileError(
                f"model '{name}' has no size: set models.{name}.num_params (or "
                f"models.{name}.num_layers, hidden_size and vocab_size; under shape: or flat, "
                f"or a model_path with a config.json; missing: {', '.join(missing)}); a model "
                f"without weights (a rule reward) gives no size at all and must not train "
                f"or generate")
        return 12 * layers * hidden * hidden + vocab * hidden, layers, hidden, vocab
    vocab = vocab or DEFAULT_VOCAB
    if hidden is None:
        # P ~ 12 L h^2 with L ~ h / 128  =>  h ~ (128 P / 12)^(1/3), rounded to 64 when large.
        hidden = max(1, round((p * 128 / 12) ** (1 / 3)))
        hidden = hidden if hidden < 256 else 64 * round(hidden / 64)
    if layers is None:
        layers = max(1, round(max(p - vocab * hidden, p // 2) / (12 * hidden * hidden)))
    return p, layers, hidden, vocab


def _length_shape(name: str, cfg: ModelConfig, cap: int,
                  flow: tuple[int, int | None] | None) -> tuple[float | None, float]:
    """(mean, log-normal sigma) of the responses model ``name`` generates or reads: its own
    ``generation.expected_new_tokens``/``p99_new_tokens``, else the flow's (``flow``: a
    generator's, one sequence passes through all models); ``(None, 0)``: every response at
    the cap ``max_new_tokens``."""
    gen = cfg.generation
    own = gen.expected_new_tokens is not None
    mean, p99 = (gen.expected_new_tokens, gen.p99_new_tokens) if own else (flow or (None, None))
    if mean is None:
        return None, 0.0
    if mean > cap:
        if not own:  # a model with a shorter budget than the flow's keeps the cap
            return None, 0.0
        raise CompileError(
            f"model '{name}': generation.expected_new_tokens={mean} exceeds the response "
            f"budget of {cap} tokens (generation.max_new_tokens, or the flow's sequence "
            f"length); lower it or raise models.{name}.generation.max_new_tokens")
    return float(mean), (sigma_from_p99(mean, min(p99, cap)) if p99 and p99 > mean else 0.0)


def _flow_lengths(models: dict[str, ModelConfig]) -> tuple[int, int | None] | None:
    """(mean, p99) the flow's responses follow: the longest mean any model declares."""
    declared = [(m.generation.expected_new_tokens, m.generation.p99_new_tokens)
                for m in models.values() if m.generation.expected_new_tokens is not None]
    return max(declared, key=lambda d: d[0]) if declared else None


def free_dims(name: str, capabilities: dict[str, dict[str, bool]] | None) -> frozenset[str]:
    """The parallel dimensions the planner may choose for model ``name``: those its module
    declares (``capabilities[name]``, e.g. ``{"tp": True, "pp": False}``); none for a model
    missing from ``capabilities`` (its config's tp/pp only); all when ``capabilities`` is
    None (planning from configs alone, no modules: the plan then notes what to set)."""
    if capabilities is None:
        return frozenset({"tp", "pp"})
    return frozenset(d for d, ok in capabilities.get(name, {}).items()
                     if ok and d in ("tp", "pp"))


def batching(name: str, cfg: ModelConfig,
             capabilities: dict[str, dict[str, bool]] | None) -> str:
    """How ``name``'s generator batches decoding: the config's ``generation.batching`` when
    written, else what its module declares (``capabilities[name]["continuous_batching"]``,
    from :attr:`BaseModule.generation_batching`), else static (HF ``generate``)."""
    if cfg.generation.batching is not None:
        return cfg.generation.batching
    declared = (capabilities or {}).get(name, {}).get("continuous_batching", False)
    return "continuous" if declared else "static"


def model_resources(models: dict[str, ModelConfig], graphs: dict[str, FlowGraph],
                    sync: list[tuple[str, str]] = (),
                    capabilities: dict[str, dict[str, bool]] | None = None,
                    ) -> dict[str, ModelResources]:
    """Resources of every model any graph calls (validated configs assumed); ``capabilities``:
    see :func:`free_dims`.

    A model *generates* (its prompt-reading rollout/eval call samples responses) when it is a
    sync destination (the policy being trained) or its section sets
    ``generation.max_new_tokens``; other prompt-reading calls only score (offline DPO's
    reference, say).
    """
    used = {c.model: None for g in graphs.values() for c in g.calls()}
    synced = {dst for _, dst in sync}
    trains = {c.model for g in graphs.values() for c in g.calls() if c.is_train}
    seqs = [m.shape.max_seq_len for m in models.values() if m.shape.max_seq_len]
    news = [m.generation.max_new_tokens for m in models.values()
            if m.generation.max_new_tokens]
    # Models that do not say inherit the flow's lengths: one sequence passes through all.
    flow_seq = max(seqs) if seqs else DEFAULT_SEQ_LEN
    flow_new = max(news) if news else flow_seq // 2
    flow_lengths = _flow_lengths(models)
    out: dict[str, ModelResources] = {}
    for name in used:
        cfg = models[name]
        trainable = cfg.trainable if cfg.trainable is not None else name in trains
        generates = name in synced or cfg.generation.max_new_tokens is not None
        weightless = _weightless(cfg, trainable, generates)
        p, layers, hidden, vocab = (0, 0, 0, 0) if weightless else _size(name, cfg)
        seq = cfg.shape.max_seq_len or flow_seq
        new = min(cfg.generation.max_new_tokens or flow_new, max(1, seq - 1))
        pinned = None
        if cfg.num_devices is not None or cfg.parallel.dp is not None:
            pinned = cfg.total_devices
        heads, kv_heads = cfg.shape.num_heads, cfg.shape.num_kv_heads
        if kv_heads and not heads:  # Llama-style head size of 128
            heads = max(kv_heads, hidden // 128)
        cpu = cfg.cpu_seconds_per_sample
        cpu = (DEFAULT_CPU_SECONDS if cpu is None else cpu) if weightless else (cpu or 0.0)
        seq, new, cpu = agent_lengths(cfg, seq, new, cpu)  # multi-turn: turns x decode + env
        mean, sigma = _length_shape(name, cfg, new, flow_lengths)
        out[name] = ModelResources(
            name=name, num_params=p, num_layers=layers, hidden_size=hidden, vocab_size=vocab,
            dtype=cfg.weights_dtype, trainable=trainable, tp=cfg.parallel.tp,
            pp=cfg.parallel.pp, pinned_devices=pinned,
            manual_devices=tuple(cfg.devices) if cfg.devices is not None else None,
            max_seq_len=seq, max_new_tokens=new, colocation_group=cfg.colocation_group,
            offload=cfg.offload, generates=generates,
            kv_fraction=kv_heads / heads if heads and kv_heads else 1.0,
            num_heads=heads, num_kv_heads=kv_heads if heads else None,
            weightless=weightless, cpu_seconds_per_sample=cpu,
            parallelism=free_dims(name, capabilities), mean_new_tokens=mean,
            length_sigma=sigma, batching=batching(name, cfg, capabilities))
    return out


def episode_spec(args: RuntimeArgs, has_eval: bool = False) -> EpisodeSpec:
    """The episode's shape for these runtime args (the one place they are read for it)."""
    return EpisodeSpec.from_counts(args.sample_per_episode, args.generation_batch_size,
                                   args.train_global_batch_size, args.num_training_epoch,
                                   has_eval, args.max_staleness)


def repeats(args: RuntimeArgs) -> dict[str, int]:
    """How often each role runs per episode (iteration)."""
    return episode_spec(args).repeats


def fmt_bytes(n: float) -> str:
    """``17.5 GB``-style (1e9-based, like the cluster spec)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"
