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
from flowrl.engines.rlhf import RLHFEngine
from flowrl.errors import (
    CompileError, ConfigError, FlowRLError, KeyCollisionError, MissingExtraError, StageError,
    TraceError, UnknownMethodError)
from flowrl.models.base import BaseModule, outputs
from flowrl.models.torch_module import TorchModule

__version__ = "0.1.0"

__all__ = [
    "init", "get_args", "load_config", "FlowRLConfig", "ModelConfig", "RuntimeArgs",
    "flow", "Flow", "Engine", "Evaluator", "RLHFEngine",
    "BaseModule", "TorchModule", "outputs",
    "FlowRLError", "ConfigError", "TraceError", "KeyCollisionError", "UnknownMethodError",
    "StageError", "CompileError", "MissingExtraError",
]
