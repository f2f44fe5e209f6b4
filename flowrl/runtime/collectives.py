"""Data-parallel gradient averaging for ``TorchModule`` trainers, bucketed, as DDP does it.

User ``train_step`` code stays unchanged: each replica runs its share of the micro-batches;
a parameter's gradient is final once the replica's last micro-batch has been accumulated
into it, and each fixed bucket of parameters is averaged across replicas (one all-reduce per
bucket: gloo on CPU, NCCL on GPU) as soon as it is final — during the last backward pass, so
gradient clipping and the optimizer step in user code see averaged gradients.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class GradientAverager:
    """Averages gradients over ``group`` in fixed buckets (reverse parameter order).

    Buckets are reduced strictly in index order on every replica, so the collectives match
    even if gradients become ready in a different order on different replicas.
    """

    def __init__(self, params: list[torch.nn.Parameter], group, bucket_bytes: int) -> None:
        self.group = group
        self.world = dist.get_world_size(group)
        self.buckets: list[list[torch.nn.Parameter]] = []
        current, used = [], 0
        for p in reversed(params):  # backward produces the last layers' gradients first
            size = p.numel() * p.element_size()
            if current and used + size > bucket_bytes:
                self.buckets.append(current)
                current, used = [], 0
            current.append(p)
            used += size
        if current:
            self.buckets.append(current)
        self.bucket_of = {id(p): i for i, b in enumerate(self.buckets) for p in b}
        self.expected = 1
        self.reset(1)
        for p in params:
            p.register_post_accumulate_grad_hook(self._on_grad)
        self.bytes_reduced = 0

    def reset(self, micro_batches: int) -> None:
        """Called before each ``train_step`` with the number of micro-batches it will run."""
        self.expected = micro_batches
        self.counts: dict[int, int] = {}
        self.ready = [0] * len(self.buckets)
        self.next_bucket = 0

    def _on_grad(self, p: torch.nn.Parameter) -> None:
        n = self.counts.get(id(p), 0) + 1
        self.counts[id(p)] = n
        if n == self.expected:
            b = self.bucket_of[id(p)]
            self.ready[b] += 1
            while self.next_bucket < len(self.buckets) and \
                    self.ready[self.next_bucket] == len(self.buckets[self.next_bucket]):
                self._reduce(self.next_bucket)
                self.next_bucket += 1

    def flush(self) -> None:
        """Reduce buckets still pending (parameters that got no gradient count as zero)."""
        while self.next_bucket < len(self.buckets):
            self._reduce(self.next_bucket)
            self.next_bucket += 1

    @torch.no_grad()
    def _reduce(self, index: int) -> None:
        params = self.buckets[index]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, group=self.group)
        flat /= self.world
        off = 0
        for p, g in zip(params, grads):
            p.grad = flat[off:off + g.numel()].view_as(g).clone()
            off += g.numel()
        self.bytes_reduced += flat.numel() * flat.element_size()


def enable_data_parallel(module, group, bucket_bytes: int) -> GradientAverager:
    """Average a TorchModule trainer's gradients over ``group``; returns the averager."""
    if module.optimizer is None or module.model is None:
        raise RuntimeError(f"'{module.name}' has data_parallel_size > 1 but no self.model / "
                           f"self.optimizer to average gradients for")
    params = [p for p in module.model.parameters() if p.requires_grad]
    averager = GradientAverager(params, group, bucket_bytes)
    # Safety net: buckets whose parameters got no gradient are reduced before the step.
    module.optimizer.register_step_pre_hook(lambda opt, args, kwargs: averager.flush())
    return averager
