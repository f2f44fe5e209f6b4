"""``Evaluator``: an eval flow run over held-out prompts at an episode interval."""

from __future__ import annotations

from typing import Any, Callable

import torch

from flowrl.dsl.flow import Flow
from flowrl.errors import FlowTypeError
from flowrl.runtime.data import check_prompts
from flowrl.runtime.metrics import aggregate


class Evaluator:
    """An eval flow run over an eval prompt set every ``runtime_args.eval_episode_interval``
    episodes (and before the first with ``enable_eval_before_training``).

    Each eval prompt runs once (``num_inference_per_prompt`` applies to rollouts only), in
    batches of ``batch_size`` (default ``runtime_args.eval_batch_size``, else
    ``generation_batch_size``). The metrics are ``post_process(outputs)`` (``outputs``: the
    flow's output per batch) or, without it, the mean of every per-sample float (a 1-D float
    tensor) in the outputs; what the eval flow's modules ``log`` is added as
    ``<model>/<name>``; everything is prefixed ``eval/``. Evaluation saves and restores the
    training RNG streams, so adding an evaluator never changes the training trajectory.
    """

    def __init__(self, eval_flow: Flow, post_process: Callable[[list[dict]], dict] | None = None,
                 batch_size: int | None = None) -> None:
        if not isinstance(eval_flow, Flow):
            raise FlowTypeError(
                f"eval_flow must be a @flow function, got {type(eval_flow).__name__}")
        self.flow = eval_flow
        self.post_process = post_process
        self.batch_size = batch_size
        self.prompts: list | None = None

    def set_dataset(self, prompts: list) -> "Evaluator":
        self.prompts = check_prompts(prompts, "Evaluator.set_dataset")
        return self

    def set_post_process_func(self, fn: Callable[[list[dict]], dict]) -> "Evaluator":
        self.post_process = fn
        return self

    def default_metrics(self, outputs: list[dict]) -> dict[str, float]:
        sums: dict[str, list[torch.Tensor]] = {}
        for out in outputs:
            for k, v in (out or {}).items():
                if isinstance(v, torch.Tensor) and v.dim() == 1 and v.is_floating_point():
                    sums.setdefault(k, []).append(v.float())
        return {k: torch.cat(v).mean().item() for k, v in sums.items()}

    def evaluate(self, batches: list[dict], run: Callable[[dict, int], Any]) -> dict[str, float]:
        """Run the eval flow on each batch (``run(batch, i)`` -> a ``FlowResult``) and reduce."""
        outputs, entries = [], []
        for i, batch in enumerate(batches):
            res = run(batch, i)
            outputs.append(res.output)
            entries += res.metrics
        metrics = aggregate(entries)
        metrics.update((self.post_process or self.default_metrics)(outputs))
        return {f"eval/{k}": float(v) for k, v in metrics.items()}
