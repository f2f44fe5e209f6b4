"""Configuration: pydantic models, loading from YAML / dict / ``-c FILE``, readable errors.

A config has three parts::

    runtime: local                 # or ray
    runtime_args:                  # episode semantics (as in ChatLearn)
      num_episode: 20
      sample_per_episode: 64
      ...
    models:                        # one section per module, keyed by model_name
      policy: {num_devices: 1, generation: {temperature: 1.0}}   # see flowrl.config.model

Unknown keys are errors (with a suggestion), never silently ignored.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from flowrl.chatlearn_compat import translate_chatlearn
from flowrl.config.model import ALIASES as MODEL_ALIASES
from flowrl.config.model import (GenerationConfig, ModelConfig, OffloadPolicy, OptimConfig,
                                 ParallelConfig, ShapeConfig)
from flowrl.config.batch import derive_batch_sizes
from flowrl.config.off_policy import OffPolicyArgs
from flowrl.config.tracking import WandbArgs
from flowrl.config.types import Float, Int
from flowrl.errors import ConfigError

__all__ = ["FlowRLConfig", "GenerationConfig", "ModelConfig", "OffloadPolicy", "OptimConfig",
           "ParallelConfig", "RuntimeArgs", "ShapeConfig", "load_config"]

# numpy seeds with 32 bits and flowrl derives per-call seeds from this one.
SEED_LIMIT = 2**32


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RuntimeArgs(_Strict):
    """Episode semantics and run-wide settings."""

    num_episode: Int = Field(1, ge=1, description="episodes to run")
    sample_per_episode: Int = Field(64, ge=1, description="samples generated per episode")
    generation_batch_size: Int = Field(16, ge=1, description="prompts per rollout-flow call")
    train_global_batch_size: Int = Field(16, ge=1, description="samples per optimizer step")
    train_micro_batch_size: Int = Field(8, ge=1, description="samples per forward/backward")
    num_training_epoch: Int = Field(1, ge=1, description="passes over the replay buffer per episode")
    eval_episode_interval: Int = Field(0, ge=0, description="evaluate every N episodes (0: never)")
    save_episode_interval: Int = Field(0, ge=0, description="checkpoint every N episodes (0: never)")
    seed: Int = Field(1234, ge=0, lt=SEED_LIMIT,
                      description="the run's seed, 0 <= seed < 2**32")
    output_dir: str | None = Field(None, description="metrics.jsonl and checkpoints go here")
    shuffle: bool = Field(True, description="shuffle prompts and the replay buffer (seeded)")
    progress: bool = Field(True, description="show progress bars")
    sync_bucket_mb: Float = Field(64.0, gt=0, description="parameter-sync bucket size")
    num_inference_per_prompt: Int = Field(
        1, ge=1, description="responses sampled per prompt (GRPO group size, online-DPO "
        "candidates); the episode loop repeats each prompt this many times in a row, and "
        "sample_per_episode / generation_batch_size count samples, not prompts")
    eval_batch_size: Int | None = Field(
        None, ge=1, description="prompts per eval-flow call (default generation_batch_size)")
    enable_eval_before_training: bool = Field(
        False, description="also evaluate before the first episode (logged as episode 0)")
    resume: bool = Field(False, description="learn() resumes from the latest good checkpoint")
    checkpoint_dir: str | None = Field(
        None, description="where checkpoints go (default output_dir/checkpoints)")
    keep_last_checkpoints: Int = Field(0, ge=0, description="keep only the newest N (0: all)")
    tensorboard: bool | None = Field(
        None, description="TensorBoard event files under output_dir/tb (default: on when "
        "output_dir is set and tensorboard is installed)")
    # Issue 12 (engineer D): the non-finite guard's policy and fresh run directories.
    on_nonfinite: Literal["raise", "skip_batch"] = Field(
        "raise", description="NaN/inf in rewards, advantages, losses or gradient norms: raise "
        "a NonFiniteError, or drop the batch (counted as <model>/nonfinite/skipped_batches)")
    new_run_dir: bool = Field(
        False, description="a new (non-resume) run writes into output_dir/run-<N> (N: one more "
        "than the highest existing) instead of refusing an output_dir holding another run")
    # Issue 12 (engineer E): a wrong ray_address must not hang forever.
    ray_connect_timeout_s: Float = Field(
        60.0, gt=0, description="Ray runtime: seconds to wait for the cluster at ray_address "
        "and for its nodes to reserve the workers' devices before a clear error")
    ray_worker_threads: Literal["driver", "share"] | Int = Field(
        "driver", description="Ray runtime: torch threads of each worker process. 'driver': the "
        "driver's count (Ray results equal local ones bit for bit); 'share': the driver's threads "
        "split over the job's devices (no oversubscription when groups run at once, e.g. "
        "max_staleness >= 1 on one machine; numerics then follow the thread count); or a number")
    # Issue 13 (engineer I): bounded staleness; semantics in flowrl/ir/episode.py.
    max_staleness: Int = Field(
        0, ge=0, description="asynchronous RL: samples trained in episode e were generated by "
        "policy version max(0, e - k) (version v: weights after v syncs); rollouts of later "
        "episodes overlap training where devices are disjoint; 0: the synchronous loop")
    # Issue 13 (engineer K): correction of stale samples; see flowrl/config/off_policy.py.
    off_policy: OffPolicyArgs = Field(default_factory=OffPolicyArgs)
    # Issue 15 (engineer R): W&B logging and the batch settings a user thinks in.
    wandb: WandbArgs | None = Field(
        None, description="log metrics to Weights & Biases (pip install 'flowrl[wandb]'); "
        "default: off")
    optimizer_steps_per_episode: Int | None = Field(
        None, ge=1, description="optimizer steps per episode (TRL's steps_per_generation); with "
        "sample_per_episode it derives train_global_batch_size, generation_batch_size and "
        "train_micro_batch_size where those are not written (see flowrl/config/batch.py)")

    @model_validator(mode="after")
    def _batch_sizes_divide(self) -> "RuntimeArgs":
        micro_default = type(self).model_fields["train_micro_batch_size"].default
        # derived values go straight into __dict__: they stay "not set by the user", so a
        # later assignment to sample_per_episode derives them again
        self.__dict__.update(derive_batch_sizes(self, micro_default))
        checks = [
            ("sample_per_episode", self.sample_per_episode, "generation_batch_size",
             self.generation_batch_size),
            ("sample_per_episode", self.sample_per_episode, "train_global_batch_size",
             self.train_global_batch_size),
            ("train_global_batch_size", self.train_global_batch_size, "train_micro_batch_size",
             self.train_micro_batch_size),
        ]
        checks.append(("generation_batch_size", self.generation_batch_size,
                       "num_inference_per_prompt", self.num_inference_per_prompt))
        for big_name, big, small_name, small in checks:
            if big % small:
                raise ValueError(
                    f"{small_name}={small} must divide {big_name}={big} "
                    f"(field runtime_args.{small_name})")
        if (self.save_episode_interval or self.resume) and not (self.output_dir or
                                                                 self.checkpoint_dir):
            field = "save_episode_interval" if self.save_episode_interval else "resume"
            raise ValueError(f"{field} needs a place for checkpoints: set output_dir or "
                             f"checkpoint_dir (field runtime_args.{field})")
        return self

    @property
    def checkpoint_root(self) -> str | None:
        """``checkpoint_dir``, else ``output_dir/checkpoints``, else ``None``."""
        if self.checkpoint_dir:
            return self.checkpoint_dir
        return f"{self.output_dir}/checkpoints" if self.output_dir else None


class FlowRLConfig(_Strict):
    """The whole configuration."""

    runtime: Literal["local", "ray"] = "local"
    ray_address: str | None = Field(None, description="existing Ray cluster; default: start locally")
    cluster: str | None = Field(None, description='e.g. "8xH100-80GB" or "local"')
    runtime_args: RuntimeArgs = Field(default_factory=RuntimeArgs)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    source: str | None = Field(None, description="where this config was loaded from", exclude=True)

    def model(self, name: str) -> ModelConfig:
        """The section for ``name``; a clear error when it is missing."""
        if name not in self.models:
            where = f" in {self.source}" if self.source else ""
            known = ", ".join(sorted(self.models)) or "none"
            raise ConfigError(
                f"model '{name}' has no section under 'models:'{where} (sections: {known}). "
                f"Add 'models: {{{name}: {{}}}}' to use defaults.")
        return self.models[name]


def _written_loc(loc: tuple, data: dict) -> tuple:
    """``loc`` as the user wrote it: ``models.m.parallel.tp`` reads ``models.m.
    tensor_model_parallel_size`` when the value came from that flat alias."""
    if len(loc) != 4 or loc[0] != "models":
        return loc
    section = (data.get("models") or {}).get(loc[1])
    for alias, target in MODEL_ALIASES.items():
        if target == (loc[2], loc[3]) and isinstance(section, dict) and alias in section:
            return ("models", loc[1], alias)
    return loc


def _format_validation_error(err: ValidationError, model: type[BaseModel], source: str,
                             data: dict | None = None) -> str:
    lines = [f"invalid flowrl config{(' ' + source) if source else ''}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in _written_loc(tuple(e["loc"]), data or {}))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            field = str(e["loc"][-1])
            parent = _resolve_model(model, e["loc"][:-1])
            names = list(parent.model_fields) if parent else []
            if parent is ModelConfig:
                names += list(MODEL_ALIASES)  # the flat spellings are valid keys too
            hint = difflib.get_close_matches(field, names, n=1)
            msg = "unknown field" + (f"; did you mean '{hint[0]}'?" if hint else "")
        if e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        if isinstance(e.get("input"), str) and e["input"].startswith("${"):
            msg += f" (got {e['input']!r}: ChatLearn's ${{VAR:default}} substitution is not " \
                   f"supported; write the value)"
        lines.append(f"  {loc or '<root>'}: {msg}")
    return "\n".join(lines)


def _resolve_model(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            f = current.model_fields.get(str(part))
            if f is None:
                continue  # a dict key (model name): the value type is what matters
            ann = f.annotation
            args = getattr(ann, "__args__", ())
            # dict[str, M] -> M; M | None -> M
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            current = (models[-1] if models else args[-1]) if args and \
                not isinstance(ann, type) else ann
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader for which a key written twice in one mapping is an error, not "last wins"."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges are YAML's own override mechanism
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice in one mapping (first at line "
                    f"{seen[key].line + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> Any:
    """The parsed file; a syntax error becomes a ConfigError naming ``file:line:column``."""
    try:
        with open(path) as f:
            return yaml.load(f, Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason})") from None


def _config_from_argv(argv: list[str]) -> str | None:
    for flag in ("-c", "--config"):
        if flag in argv:
            i = argv.index(flag)
            if i + 1 >= len(argv):
                raise ConfigError(f"{flag} needs a YAML file path")
            return argv[i + 1]
        for a in argv:
            if a.startswith(flag + "="):
                return a.split("=", 1)[1]
    return None


def load_config(config: str | Path | dict | FlowRLConfig | None = None,
                argv: list[str] | None = None, **overrides: Any) -> FlowRLConfig:
    """Build a validated config from a YAML path, a dict, ``-c FILE`` on argv, or defaults.

    ``overrides`` set top-level fields (``runtime="ray"``) and win over the file.
    """
    source = ""
    if isinstance(config, FlowRLConfig):
        data = config.model_dump()
        source = config.source or ""
    else:
        if config is None:
            config = _config_from_argv(sys.argv[1:] if argv is None else argv)
        if config is None:
            data = {}
        elif isinstance(config, dict):
            data = dict(config)
            source = "<dict>"
        else:
            path = Path(config)
            if not path.is_file():
                raise ConfigError(f"config file not found: {path}")
            source = str(path)
            data = _read_yaml(path)
            if not isinstance(data, dict):
                raise ConfigError(f"{path}: the top level must be a mapping")
    data = translate_chatlearn(data, set(RuntimeArgs.model_fields), source)
    data.update(overrides)
    data.pop("source", None)
    # Sections written as empty YAML (``policy:``) mean "all defaults".
    models = data.get("models") or {}
    if isinstance(models, dict):
        data["models"] = {k: ({} if v is None else v) for k, v in models.items()}
    try:
        cfg = FlowRLConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, FlowRLConfig, source, data)) from None
    cfg.source = source or None
    return cfg
