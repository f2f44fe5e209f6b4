"""The vLLM section of ``gpu_check.py``, run in its own process (vLLM starts workers and can
hang; the parent kills this process when the section's budget is spent).

Two random-init tiny Llamas are written in code (``flowrl.models.hf.save_tiny_llama``; no
downloads): the rollout engine (``VLLMModule``) serves the first, an ``HFModule`` trainer holds
the second. Measured: engine start, greedy generation, a weight sync through flowrl's path
(``sync_parameters`` into the staging tensors, then ``push_staged_weights``: the in-place
reload), and generation after it, which must equal the trainer's own greedy output.

    python benchmarks/gpu_check_vllm.py --json RESULT.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

TEXTS = ["ab", "hello wo", "xyz", "q"]


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


def check(workdir: Path, new_tokens: int = 16) -> dict[str, Any]:
    """Engine start, generation, sync and post-sync agreement with the trainer (greedy)."""
    import torch

    import flowrl
    from flowrl.models.hf import HFModule, save_tiny_llama
    from flowrl.models.vllm_module import VLLMModule
    from flowrl.runtime.sync import sync_parameters

    served = str(save_tiny_llama(workdir / "served", seed=0, initializer_range=0.2))
    other = str(save_tiny_llama(workdir / "trainer", seed=1, initializer_range=0.2))
    flowrl.init({"models": {
        "rollout": {"dtype": "fp32", "model_path": served,
                    "generation": {"max_new_tokens": new_tokens, "temperature": 0.0},
                    "args": {"max_model_len": 128, "max_num_seqs": 16,
                             "gpu_memory_utilization": 0.3}},
        "trainer": {"trainable": True, "model_path": other, "dtype": "fp32"}}})
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    rollout = VLLMModule("rollout").bind(flowrl.get_args())  # no engine: bind by hand
    rollout.ensure_setup()
    out["engine_start_ms"] = _ms(t0)
    try:
        trainer = HFModule("trainer").bind(flowrl.get_args())
        trainer.ensure_setup()
        enc = rollout.tokenizer(TEXTS, return_tensors="pt", padding=True)
        ids, mask = enc.input_ids, enc.attention_mask
        t0 = time.perf_counter()
        before = rollout.generate(ids, mask)
        out["generate_ms"] = _ms(t0)
        t0 = time.perf_counter()
        stats = sync_parameters(trainer, rollout)
        out["sync_bytes"] = stats.bytes
        out["pushed_bytes"] = rollout.push_staged_weights()
        out["sync_ms"] = _ms(t0)
        t0 = time.perf_counter()
        after = rollout.generate(ids, mask)
        out["generate_after_sync_ms"] = _ms(t0)
        want = trainer.generate(ids, mask, do_sample=False, max_new_tokens=new_tokens)
        out["changed_by_sync"] = not torch.equal(after["tokens"], before["tokens"])
        out["matches_trainer_greedy"] = torch.equal(after["tokens"], want["tokens"].cpu())
        out["engine_restarted"] = rollout.weight_updates != 1
    finally:
        rollout.shutdown()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", required=True, help="where to write the result")
    a = p.parse_args(argv)
    result: dict[str, Any]
    try:
        import vllm

        version = vllm.__version__
    except Exception as e:  # missing, or a broken install
        result = {"status": "skipped", "reason": f"vllm not importable: {type(e).__name__}: {e}"}
    else:
        try:
            with tempfile.TemporaryDirectory(prefix="flowrl-gpu-check-vllm-") as d:
                result = {"status": "ok", "vllm": version, **check(Path(d))}
            if not (result["changed_by_sync"] and result["matches_trainer_greedy"]):
                result["status"] = "failed"
                result["reason"] = "after the sync, generation does not follow the trainer's weights"
        except Exception as e:
            result = {"status": "error", "vllm": version, "reason": f"{type(e).__name__}: {e}",
                      "traceback": traceback.format_exc()[-4000:]}
    Path(a.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
