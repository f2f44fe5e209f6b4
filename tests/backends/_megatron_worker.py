"""Worker for the Megatron TP tests: runs in each spawned (gloo, CPU) process."""

from __future__ import annotations

import os
import time

import torch


def batch(vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, vocab, (8, 12), generator=g)
    mask = torch.ones_like(tokens)
    mask[:3, :2] = 0  # some left padding
    return tokens, mask


def tp_worker(rank: int, world: int, port: int, model_dir: str, out_path: str, steps: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    import flowrl
    from flowrl.models.megatron_module import MegatronModule

    flowrl.init({"runtime_args": {"seed": 3, "progress": False},
                 "models": {"trainer": {"tensor_model_parallel_size": world, "dtype": "fp32",
                                        "model_path": model_dir,
                                        "optim": {"lr": 1e-3, "grad_clip": 1.0}},
                            "inference": {"model_path": model_dir, "dtype": "fp32"}}})

    class Trainer(MegatronModule):
        def train_step(self, data, iteration):
            def loss_fn(mb):
                lp = self.response_logprobs(mb["tokens"], mb["mask"], 4)
                return -(lp * mb["mask"][:, 4:]).sum() / mb["mask"][:, 4:].sum(), {}
            return self.train_micro_batches(data, loss_fn)

    trainer = Trainer("trainer").bind(flowrl.get_args())
    trainer.ensure_setup()
    tokens, mask = batch(trainer.layout.vocab_size)
    data = [{"tokens": tokens[:4], "mask": mask[:4]}, {"tokens": tokens[4:], "mask": mask[4:]}]
    stats, times = [], []
    for i in range(steps):
        t0 = time.perf_counter()
        stats.append(trainer.train_step(data, i))
        times.append(time.perf_counter() - t0)
    with torch.no_grad():
        logits = trainer.logits(tokens, mask)
    if rank == 0:
        # TP=2 Megatron trainer -> TP=1 Hugging Face inference model, through flowrl's sync
        from flowrl.models import hf
        from flowrl.models.hf import HFModule
        from flowrl.runtime.sync import sync_parameters

        inference = HFModule("inference").bind(flowrl.get_args())
        inference.ensure_setup()
        t0 = time.perf_counter()
        sync = sync_parameters(trainer, inference)  # gathers over TP: a collective
        sync_s = time.perf_counter() - t0
        with torch.no_grad():
            hf_logits = hf.sequence_logits(inference.model, tokens, mask)
        torch.save({"stats": stats, "times": times, "logits": logits, "hf_logits": hf_logits,
                    "mask": mask, "sync_tensors": sync.tensors, "sync_s": sync_s,
                    "synced": {n: p.detach().clone() for n, p in inference.model.named_parameters()},
                    "shard_shapes": {n: tuple(p.shape) for n, p in trainer.model.named_parameters()}},
                   out_path)
    else:
        trainer.named_sync_tensors()  # the other TP ranks take part in the gather
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
