"""The two batch settings a user thinks in (samples and optimizer steps per episode) and the
derivation of the other batch fields."""

from __future__ import annotations

import copy

import pytest

from flowrl.config import RuntimeArgs, load_config
from flowrl.errors import ConfigError
from tiny_engines import TINY_GRPO, build_grpo, comparable, one_thread  # noqa: F401

BATCH_FIELDS = ("train_global_batch_size", "generation_batch_size", "train_micro_batch_size")


def _sizes(**runtime_args) -> tuple[int, int, int]:
    a = load_config({"runtime_args": runtime_args}).runtime_args
    return tuple(getattr(a, f) for f in BATCH_FIELDS)


@pytest.mark.parametrize("args, expected", [
    # "32 completions, one optimizer step per episode"
    ({"sample_per_episode": 32, "optimizer_steps_per_episode": 1}, (32, 32, 8)),
    ({"sample_per_episode": 32, "optimizer_steps_per_episode": 4}, (8, 8, 8)),
    # GRPO groups of 8: a global batch of 24 holds whole groups -> one rollout call per step
    ({"sample_per_episode": 48, "num_inference_per_prompt": 8,
      "optimizer_steps_per_episode": 2}, (24, 24, 8)),
    # 12 is not whole groups of 8: generate the episode at once; micro = largest divisor <= 8
    ({"sample_per_episode": 48, "num_inference_per_prompt": 8,
      "optimizer_steps_per_episode": 4}, (12, 48, 6)),
    # two passes over the samples, 4 steps in all -> 2 per pass
    ({"sample_per_episode": 32, "num_training_epoch": 2, "optimizer_steps_per_episode": 4},
     (16, 16, 8)),
    ({"sample_per_episode": 6, "optimizer_steps_per_episode": 1}, (6, 6, 6)),
])
def test_derived_batch_sizes(args, expected):
    assert _sizes(**args) == expected


def test_explicit_generation_and_micro_sizes_are_kept():
    assert _sizes(sample_per_episode=64, optimizer_steps_per_episode=2,
                  generation_batch_size=16, train_micro_batch_size=4) == (32, 16, 4)
    # an explicit global batch that agrees is fine
    assert _sizes(sample_per_episode=64, optimizer_steps_per_episode=2,
                  train_global_batch_size=32) == (32, 32, 8)


def test_configs_without_the_setting_are_unchanged():
    assert _sizes() == (16, 16, 8)
    a = load_config(copy.deepcopy(TINY_GRPO)).runtime_args
    assert (a.sample_per_episode, *(getattr(a, f) for f in BATCH_FIELDS)) == (32, 16, 16, 8)
    assert a.optimizer_steps_per_episode is None


def test_derivation_follows_later_assignments_and_survives_a_dump():
    a = RuntimeArgs(sample_per_episode=32, optimizer_steps_per_episode=1)
    a.sample_per_episode = 64  # derived fields are not "written": they follow
    assert (a.train_global_batch_size, a.generation_batch_size) == (64, 64)
    assert RuntimeArgs.model_validate(a.model_dump()) == a


@pytest.mark.parametrize("args, message", [
    ({"sample_per_episode": 32, "optimizer_steps_per_episode": 1,
      "train_global_batch_size": 16},
     "runtime_args: runtime_args.optimizer_steps_per_episode=1 asks "
     "for global batches of 32 (sample_per_episode=32 x num_training_epoch=1 / 1 steps) but "
     "runtime_args.train_global_batch_size=16 gives 2 steps per episode: set only one of "
     "optimizer_steps_per_episode and train_global_batch_size (field "
     "runtime_args.train_global_batch_size)"),
    ({"sample_per_episode": 32, "optimizer_steps_per_episode": 3},
     "runtime_args: optimizer_steps_per_episode=3 (3 per epoch) does not split "
     "sample_per_episode=32 into equal global batches (field "
     "runtime_args.optimizer_steps_per_episode)"),
    ({"sample_per_episode": 32, "num_training_epoch": 2, "optimizer_steps_per_episode": 3},
     "runtime_args: optimizer_steps_per_episode=3 is not a multiple of num_training_epoch=2"),
    ({"optimizer_steps_per_episode": 0},
     "runtime_args.optimizer_steps_per_episode: Input should be greater than or equal to 1"),
    ({"optimizer_steps_per_episode": True},
     "runtime_args.optimizer_steps_per_episode: expected a number, got the boolean true"),
    ({"sample_per_episode": 30, "num_inference_per_prompt": 4,
      "optimizer_steps_per_episode": 1},
     "runtime_args: num_inference_per_prompt=4 must divide sample_per_episode=30: an episode "
     "holds whole prompt groups (field runtime_args.num_inference_per_prompt)"),
])
def test_contradictions_name_the_fields(args, message):
    with pytest.raises(ConfigError) as err:
        load_config({"runtime_args": args})
    assert message in str(err.value)


@pytest.mark.usefixtures("one_thread")
def test_two_settings_train_exactly_like_the_six():
    """TINY_GRPO spells out 32 samples, generation 16, global 16, micro 8 (2 steps); the two
    settings derive the same sizes and so the same run."""
    six = copy.deepcopy(TINY_GRPO)
    six["runtime_args"]["num_episode"] = 2
    two = copy.deepcopy(six)
    for f in BATCH_FIELDS:
        del two["runtime_args"][f]
    two["runtime_args"]["optimizer_steps_per_episode"] = 2
    assert comparable(build_grpo(two, False).learn()) == comparable(build_grpo(six, False).learn())
