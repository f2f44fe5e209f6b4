"""ChatLearn's YAML spellings, translated onto flowrl's config (documented in the README).

A ChatLearn config puts the episode settings under ``runtime:`` (a mapping) and sizes models
with ``num_gpu``. flowrl accepts those spellings where the meaning is the same, and rejects a
ChatLearn key it cannot honour with an error naming the key and what to write instead: a
setting is never dropped silently.

==============================  =========================================================
ChatLearn                       flowrl
==============================  =========================================================
``runtime: {num_episode: ..}``  ``runtime_args: {num_episode: ..}`` (every runtime_args key)
``runtime.colocation``          ``models.<name>.colocation_group`` (one group per entry)
``runtime.coalesced_buffer_mb`` ``runtime_args.sync_bucket_mb``
``models.<m>.num_gpu``          ``models.<m>.num_devices``
``models.<m>.args_dict``        ``models.<m>.args``
``models.<m>.offload_weights``  ``models.<m>.offload`` (``weights``/``optimizer``/``all``/
``..offload_optimizer_states``  ``never``, from the two booleans)
==============================  =========================================================
"""

from __future__ import annotations

import difflib
from typing import Any

from flowrl.errors import ConfigError

# ChatLearn keys that flowrl cannot honour, with what to do instead.
_RUNTIME_UNSUPPORTED = {
    "data_path": "flowrl reads no prompt files: load them in your script and pass the list to "
                 "engine.set_dataset(prompts)",
    "eval_data_path": "load the eval prompts in your script and pass them to "
                      "evaluator.set_dataset(prompts)",
    "data_checkpoint_path": "the prompt stream's position is saved in every checkpoint under "
                            "runtime_args.checkpoint_dir",
    "training_data_num_limit": "slice the prompt list before engine.set_dataset",
    "eval_data_num_limit": "slice the prompt list before evaluator.set_dataset",
    "consumed_samples": "resume from a checkpoint with runtime_args.resume: true",
    "max_relay_episode": "flowrl's replay buffer holds the current episode only",
    "max_replay_episode": "flowrl's replay buffer holds the current episode only",
    "exp_name": "name the run by runtime_args.output_dir",
    "debug": "unsupported", "nsys": "unsupported", "profiler_dir": "use flowrl explain --profile",
    "stream_data_loader_type": "unsupported", "param_sync_comm_type": "unsupported",
    "free_sync_collective_group": "unsupported", "validate_param_sync": "unsupported",
    "concurrent_setup": "unsupported", "log_args_dict": "unsupported",
}
_MODEL_UNSUPPORTED = {
    "gpu_per_process": "flowrl starts one process per data-parallel replica holding "
                       "tensor*pipeline devices; set num_devices (ChatLearn's num_gpu)",
    "num_cpu": "unsupported", "cpu_per_process": "unsupported",
    "num_replica": "set models.<m>.data_parallel_size",
    "zero_size": "unsupported", "fsdp_size": "unsupported",
    "expert_model_parallel_size": "unsupported",
    "model_config_file": "put the model's settings under models.<m>.args",
    "generation_batch_size": "set runtime_args.generation_batch_size (one for all models)",
    "lora": "unsupported", "batch_generation": "unsupported", "sync_frequency": "unsupported",
    "free_grad_buffers": "unsupported", "free_memory": "unsupported",
    "force_push_params": "unsupported", "model_type": "unsupported",
}
_MODEL_RENAMES = {"num_gpu": "num_devices", "args_dict": "args"}
_RUNTIME_RENAMES = {"coalesced_buffer_mb": "sync_bucket_mb"}
_TOP_UNSUPPORTED = {"runtime_env": "flowrl starts Ray itself (runtime: ray, ray_address)"}


def _refuse(key: str, how: str, source: str) -> ConfigError:
    what = "flowrl does not support it" if how == "unsupported" else how
    return ConfigError(f"{key}{(' in ' + source) if source else ''}: a ChatLearn setting "
                       f"flowrl cannot honour; {what}")


def _rename(section: dict, old: str, new: str, where: str, source: str) -> None:
    if old not in section:
        return
    if new in section and section[new] != section[old]:
        raise ConfigError(f"{where}.{old} (ChatLearn's spelling of {where}.{new}) and "
                          f"{where}.{new} are both set, to different values; keep one")
    section[new] = section.pop(old)


def _offload(section: dict, where: str) -> None:
    flags = {k: section.pop(k) for k in ("offload_weights", "offload_optimizer_states")
             if k in section}
    if not flags:
        return
    if "offload" in section:
        raise ConfigError(f"{where}.offload and ChatLearn's {where}.{next(iter(flags))} are "
                          f"both set; keep {where}.offload")
    for k, v in flags.items():
        if not isinstance(v, bool):
            raise ConfigError(f"{where}.{k} must be true or false, got {v!r}")
    w, o = flags.get("offload_weights", False), flags.get("offload_optimizer_states", False)
    section["offload"] = {(True, True): "all", (True, False): "weights",
                          (False, True): "optimizer", (False, False): "never"}[(w, o)]


def _models(models: Any, source: str) -> Any:
    if not isinstance(models, dict):
        return models
    out = {}
    for name, section in models.items():
        if not isinstance(section, dict):
            out[name] = section
            continue
        section, where = dict(section), f"models.{name}"
        for key, how in _MODEL_UNSUPPORTED.items():
            if key in section:
                raise _refuse(f"{where}.{key}", how.replace("<m>", name), source)
        for old, new in _MODEL_RENAMES.items():
            _rename(section, old, new, where, source)
        _offload(section, where)
        out[name] = section
    return out


def _colocation(groups: Any, models: dict, source: str) -> None:
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ConfigError(f"runtime.colocation must be a list of comma-separated model names "
                          f"(ChatLearn's form), got {groups!r}")
    for group in groups:
        names = [n.strip() for n in group.split(",") if n.strip()]
        for n in names:
            if n in models and models[n] is None:
                models[n] = {}  # an empty section: all defaults
            section = models.get(n)
            if not isinstance(section, dict):
                raise ConfigError(f"runtime.colocation names model '{n}', which has no section "
                                  f"under models:{(' in ' + source) if source else ''}")
            current = section.get("colocation_group")
            if current not in (None, group):
                raise ConfigError(f"models.{n}.colocation_group is '{current}' but "
                                  f"runtime.colocation puts '{n}' in '{group}'; keep one")
            section["colocation_group"] = group


def _runtime(runtime: dict, data: dict, fields: set[str], source: str) -> None:
    runtime_args = dict(data.get("runtime_args") or {})
    for key, value in runtime.items():
        if key in _RUNTIME_UNSUPPORTED:
            raise _refuse(f"runtime.{key}", _RUNTIME_UNSUPPORTED[key], source)
        if key == "colocation":
            _colocation(value, data["models"], source)
            continue
        target = _RUNTIME_RENAMES.get(key, key)
        if target not in fields:
            hint = difflib.get_close_matches(key, sorted(fields), n=1)
            raise ConfigError(
                f"runtime.{key}: unknown field (a 'runtime:' mapping is read as ChatLearn's "
                f"episode settings, flowrl's runtime_args)"
                + (f"; did you mean '{hint[0]}'?" if hint else ""))
        if target in runtime_args and runtime_args[target] != value:
            raise ConfigError(f"runtime.{key} and runtime_args.{target} are both set, to "
                              f"different values; keep runtime_args.{target}")
        runtime_args[target] = value
    data["runtime_args"] = runtime_args
    del data["runtime"]  # the executor kind stays the default (local) unless overridden


def translate_chatlearn(data: dict, runtime_args_fields: set[str], source: str = "") -> dict:
    """A config mapping with ChatLearn's spellings rewritten to flowrl's (a new dict).

    Args:
        data: the loaded YAML (or dict) config.
        runtime_args_fields: the names ``runtime_args`` accepts.
        source: the file, for messages.
    """
    data = dict(data)
    for key, how in _TOP_UNSUPPORTED.items():
        if key in data:
            raise _refuse(key, how, source)
    if "models" in data:
        data["models"] = _models(data["models"], source)
    if isinstance(data.get("runtime"), dict):
        data.setdefault("models", {})
        _runtime(data["runtime"], data, runtime_args_fields, source)
    return data
