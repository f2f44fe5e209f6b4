"""``flowrl train``: an algorithm by name, a model, data and a reward function in one YAML.

>>> import flowrl
>>> history = flowrl.train("examples/grpo_hf.yaml", overrides=["runtime_args.num_episode=3"])

:mod:`~flowrl.recipes.config` reads the config (``TrainConfig``), :mod:`~flowrl.recipes.presets`
holds each algorithm's defaults, :mod:`~flowrl.recipes.build` makes the engine; each family's
``@flow`` engine is one short file (grpo, ppo, remax, dpo, sft) to copy for your own.
"""

from flowrl.recipes.build import build, plan, summary, train
from flowrl.recipes.config import TrainConfig, is_train_config, load_train_config
from flowrl.recipes.presets import ALGORITHMS, PRESETS

__all__ = ["ALGORITHMS", "PRESETS", "TrainConfig", "build", "is_train_config",
           "load_train_config", "plan", "summary", "train"]
