"""Fixed-size buckets for streaming weights between processes (never one message per tensor).

Both sides compute the same :class:`BucketPlan` from names, shapes and dtypes, so only flat
byte buffers travel. A bucket holds whole tensors; a tensor larger than the bucket size gets
a bucket of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Slot:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    offset: int  # bytes into the bucket
    nbytes: int


@dataclass(frozen=True)
class BucketPlan:
    """Which tensors go into which bucket, at which byte offset."""

    buckets: tuple[tuple[Slot, ...], ...]

    @property
    def total_bytes(self) -> int:
        return sum(s.nbytes for b in self.buckets for s in b)

    def signature(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {s.name: (s.shape, str(s.dtype)) for b in self.buckets for s in b}


def plan_buckets(tensors: dict[str, torch.Tensor], bucket_bytes: int) -> BucketPlan:
    """Group tensors (in sorted-name order) into buckets of at most ``bucket_bytes``."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket size must be positive, got {bucket_bytes}")
    buckets: list[tuple[Slot, ...]] = []
    current: list[Slot] = []
    used = 0
    for name in sorted(tensors):
        t = tensors[name]
        nbytes = t.numel() * t.element_size()
        if current and used + nbytes > bucket_bytes:
            buckets.append(tuple(current))
            current, used = [], 0
        current.append(Slot(name, tuple(t.shape), t.dtype, used, nbytes))
        used += nbytes
    if current:
        buckets.append(tuple(current))
    return BucketPlan(tuple(buckets))


def pack_bucket(tensors: dict[str, torch.Tensor], bucket: tuple[Slot, ...]) -> torch.Tensor:
    """Copy a bucket's tensors into one contiguous uint8 CPU buffer."""
    size = bucket[-1].offset + bucket[-1].nbytes
    buf = torch.empty(size, dtype=torch.uint8)
    for s in bucket:
        src = tensors[s.name].detach().contiguous().cpu().reshape(-1).view(torch.uint8)
        buf[s.offset:s.offset + s.nbytes].copy_(src)
    return buf


@torch.no_grad()
def unpack_bucket(buf: torch.Tensor, bucket: tuple[Slot, ...],
                  targets: dict[str, torch.Tensor]) -> int:
    """Copy a bucket's bytes into ``targets`` in place (casting dtype if they differ)."""
    moved = 0
    for s in bucket:
        view = buf[s.offset:s.offset + s.nbytes].view(s.dtype).view(s.shape)
        dst = targets[s.name]
        dst.data.copy_(view.to(device=dst.device, dtype=dst.dtype))
        moved += s.nbytes
    return moved
