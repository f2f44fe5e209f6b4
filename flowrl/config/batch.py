"""The two batch settings a user thinks in, and the derivation of the rest.

"32 completions, one optimizer step per episode" is ``sample_per_episode: 32`` and
``optimizer_steps_per_episode: 1``; from them (and ``num_training_epoch``,
``num_inference_per_prompt``) :func:`derive_batch_sizes` fills every batch field the user did
not write::

    train_global_batch_size = sample_per_episode * num_training_epoch / optimizer_steps_per_episode
    generation_batch_size   = train_global_batch_size when it holds whole prompt groups
                              (a multiple of num_inference_per_prompt), else sample_per_episode
    train_micro_batch_size  = the largest divisor of the global batch <= the field's default (8)

An explicit ``train_global_batch_size`` that gives another number of steps is a contradiction
naming both fields; explicit generation and micro batch sizes are kept as written.
"""

from __future__ import annotations

from typing import Any


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def derive_batch_sizes(args: Any, micro_default: int) -> dict[str, int]:
    """The batch fields to set on ``args`` (a ``RuntimeArgs``): empty unless
    ``optimizer_steps_per_episode`` is set; fields in ``args.model_fields_set`` (written by
    the user) are never overwritten. Raises ``ValueError`` naming the fields at fault."""
    steps = args.optimizer_steps_per_episode
    if steps is None:
        return {}
    samples, epochs = args.sample_per_episode, args.num_training_epoch
    if steps % epochs:
        raise ValueError(
            f"optimizer_steps_per_episode={steps} is not a multiple of num_training_epoch="
            f"{epochs}: each pass over the episode's samples takes the same number of steps "
            f"(field runtime_args.optimizer_steps_per_episode)")
    per_epoch = steps // epochs
    if samples % per_epoch:
        raise ValueError(
            f"optimizer_steps_per_episode={steps} ({per_epoch} per epoch) does not split "
            f"sample_per_episode={samples} into equal global batches "
            f"(field runtime_args.optimizer_steps_per_episode)")
    n = args.num_inference_per_prompt
    if samples % n:
        raise ValueError(
            f"num_inference_per_prompt={n} must divide sample_per_episode={samples}: an "
            f"episode holds whole prompt groups (field runtime_args.num_inference_per_prompt)")
    global_batch = samples // per_epoch
    explicit = args.model_fields_set
    out: dict[str, int] = {}
    if "train_global_batch_size" in explicit:
        if args.train_global_batch_size != global_batch:
            given = samples * epochs / args.train_global_batch_size
            raise ValueError(
                f"runtime_args.optimizer_steps_per_episode={steps} asks for global batches of "
                f"{global_batch} (sample_per_episode={samples} x num_training_epoch={epochs} / "
                f"{steps} steps) but runtime_args.train_global_batch_size="
                f"{args.train_global_batch_size} gives {given:g} steps per episode: set only "
                f"one of optimizer_steps_per_episode and train_global_batch_size "
                f"(field runtime_args.train_global_batch_size)")
    else:
        out["train_global_batch_size"] = global_batch
    if "train_micro_batch_size" not in explicit:
        out["train_micro_batch_size"] = _largest_divisor_at_most(global_batch, micro_default)
    if "generation_batch_size" not in explicit:
        out["generation_batch_size"] = global_batch if global_batch % n == 0 else samples
    return out
