"""flowrl: RLHF / alignment training as a dataflow-graph compiler with a Python DSL.

>>> import flowrl
>>> flowrl.init("ppo.yaml")
>>> engine = flowrl.RLHFEngine(policy, reference, reward, value, ppo_policy, ppo_value)
>>> engine.set_dataset(prompts); engine.learn()
"""

from flowrl.config import FlowRLConfig, ModelConfig, RuntimeArgs, load_config
from flowrl.context import get_args, init
from flowrl.dsl.flow import Flow, flow
from flowrl.engines.engine import Engine, Evaluator
from flowrl.engines.datasets import PreferenceDataset, load_preference_records
from flowrl.engines.dpo import DPOEngine, OnlineDPOEngine
from flowrl.engines.grpo import GRPOEngine
from flowrl.engines.rewards import RuleReward
from flowrl.engines.rlhf import RLHFEngine
from flowrl.errors import (
    CompileError, ConfigError, FlowRLError, KeyCollisionError, MissingExtraError, StageError,
    TraceError, UnknownMethodError)
from flowrl.models.base import BaseModule, ModuleNotBoundError, outputs
from flowrl.models.torch_module import TorchModule

__version__ = "0.1.0"

__all__ = [
    "init", "get_args", "load_config", "FlowRLConfig", "ModelConfig", "RuntimeArgs",
    "flow", "Flow", "Engine", "Evaluator", "RLHFEngine", "DPOEngine", "OnlineDPOEngine",
    "GRPOEngine", "RuleReward", "PreferenceDataset", "load_preference_records",
    "BaseModule", "TorchModule", "outputs",
    "FlowRLError", "ConfigError", "TraceError", "KeyCollisionError", "UnknownMethodError",
    "StageError", "CompileError", "MissingExtraError", "ModuleNotBoundError",
]

# Optional backends. Importing these names imports none of the heavy libraries; constructing
# a module whose library is missing raises MissingExtraError naming the pip extra.
from flowrl.models.deepspeed_module import DeepSpeedModule  # noqa: E402
from flowrl.models.hf import HFModule, HFValueModel  # noqa: E402
from flowrl.models.megatron_module import MegatronModule  # noqa: E402
from flowrl.models.vllm_module import VLLMModule  # noqa: E402

__all__ += ["VLLMModule", "MegatronModule", "DeepSpeedModule", "HFModule", "HFValueModel"]

# `flowrl train` from Python: flowrl.train("grpo.yaml", overrides=["runtime_args.num_episode=3"])
from flowrl.recipes import train  # noqa: E402

__all__ += ["train"]
