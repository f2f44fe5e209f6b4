"""Parameter sync: copy a trainer's weights into its inference twin after each episode."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from flowrl.errors import FlowRLError
from flowrl.models.base import BaseModule
from flowrl.runtime.guards import check_weights


@dataclass
class SyncStats:
    """What one sync moved."""

    src: str
    dst: str
    tensors: int
    bytes: int
    seconds: float

    @property
    def gbps(self) -> float:
        return self.bytes / max(self.seconds, 1e-9) / 1e9


def check_sync_compatible(src: dict[str, torch.Tensor], dst: dict[str, torch.Tensor],
                          src_name: str, dst_name: str) -> None:
    """Names and shapes must match exactly; the error lists every difference."""
    missing = sorted(set(dst) - set(src))
    extra = sorted(set(src) - set(dst))
    shapes = [f"{n}: {tuple(src[n].shape)} vs {tuple(dst[n].shape)}"
              for n in sorted(set(src) & set(dst)) if src[n].shape != dst[n].shape]
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(f"missing in {src_name}: {', '.join(missing[:8])}")
        if extra:
            parts.append(f"not in {dst_name}: {', '.join(extra[:8])}")
        if shapes:
            parts.append("shape mismatches: " + "; ".join(shapes[:8]))
        raise FlowRLError(f"cannot sync {src_name} -> {dst_name}: " + " | ".join(parts))


@torch.no_grad()
def sync_parameters(src: BaseModule, dst: BaseModule) -> SyncStats:
    """Copy every tensor of ``src.named_sync_tensors()`` into ``dst``'s, in place.

    In one process this is a direct device copy per tensor (grouped with ``_foreach_copy_``);
    the Ray runtime streams fixed-size buckets between processes instead.
    """
    t0 = time.perf_counter()
    for m in (src, dst):  # a sync reads and writes weights only; grads/optimizer may be off
        if "weights" in m.offloaded_state:
            raise FlowRLError(f"cannot sync {src.name} -> {dst.name}: the weights of '{m.name}' "
                              f"are offloaded (the schedule must onload them before the sync)")
    s, d = src.named_sync_tensors(), dst.named_sync_tensors()
    check_sync_compatible(s, d, src.name, dst.name)
    check_weights(src.name, s, f"sync to '{dst.name}'")  # never spread NaN to inference
    loader = getattr(type(dst), "load_synced", None)
    if loader is not None:  # the backend loads weights itself (vLLM reload, ZeRO-3 gather)
        nbytes = dst.load_synced(s)
        return SyncStats(src.name, dst.name, len(s), nbytes, time.perf_counter() - t0)
    names = sorted(d)
    dst_t = [d[n].data for n in names]
    src_t = [s[n].data.to(device=d[n].device, dtype=d[n].dtype) for n in names]
    torch._foreach_copy_(dst_t, src_t)
    nbytes = sum(t.numel() * t.element_size() for t in dst_t)
    return SyncStats(src.name, dst.name, len(names), nbytes, time.perf_counter() - t0)
