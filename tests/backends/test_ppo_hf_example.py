"""examples/ppo_hf.py end to end (2 short episodes): HF generate, and the trainers switched
per model from the YAML (``args.backend``) to DeepSpeed and Megatron."""

from __future__ import annotations

import copy
import math
import time

import pytest
import yaml
from _backend_utils import EXAMPLES_DIR, need

pytestmark = pytest.mark.backend


def _config(tmp_path, **trainer_overrides):
    """The example's YAML, shrunk to 2 short episodes on HF generate; ``trainer_overrides``
    maps ``ppo_policy`` / ``ppo_value`` to keys merged into that model's section (``args``
    merged too)."""
    cfg = copy.deepcopy(yaml.safe_load((EXAMPLES_DIR / "ppo_hf.yaml").read_text()))
    cfg["runtime_args"].update(num_episode=2, sample_per_episode=16, generation_batch_size=8,
                               train_global_batch_size=8, train_micro_batch_size=4,
                               output_dir=str(tmp_path / "run"), new_run_dir=False,
                               progress=False)
    for m in cfg["models"].values():
        if "model_path" in m:
            m["model_path"] = str(tmp_path / "tiny_llama")
    cfg["models"]["reward"]["args"]["tokenizer_path"] = str(tmp_path / "tiny_llama")
    cfg["models"]["policy"]["args"].update(backend="hf")
    cfg["models"]["policy"]["generation"]["max_new_tokens"] = 8
    for name, over in trainer_overrides.items():
        over = dict(over)
        cfg["models"][name]["args"].update(over.pop("args", {}))
        cfg["models"][name].update(over)
    return cfg


def _run(cfg):
    import ppo_hf

    engine, models = ppo_hf.build(cfg)
    t0 = time.perf_counter()
    history = engine.learn()
    return history, models, time.perf_counter() - t0


def _check_history(history):
    assert len(history) == 2
    for h in history:
        assert 0.0 <= h["reward/reward"] <= 1.0
        for k in ("ppo_policy/loss", "ppo_value/loss"):
            assert math.isfinite(h[k]), (k, h[k])


def _assert_synced(trainer, inference, initial=None):
    """The inference model's weights equal the trainer's (under HF names), and training
    moved them away from ``initial`` (the weights on disk)."""
    import torch

    src, dst = trainer.named_sync_tensors(), inference.named_sync_tensors()
    assert set(src) == set(dst), sorted(set(src) ^ set(dst))[:8]
    for n in dst:
        assert torch.equal(dst[n].detach().cpu(), src[n].detach().cpu().to(dst[n].dtype)), n
    if initial is not None:
        assert any(not torch.equal(dst[n].cpu(), initial[n].to(dst[n].dtype)) for n in initial)


def _initial_weights(tmp_path):
    from safetensors.torch import load_file

    out = {}
    for f in sorted((tmp_path / "tiny_llama").glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def _report(backend, history, seconds):
    per = [h.get("time/train_s", float("nan")) for h in history]
    print(f"\n{backend}: {seconds / len(history):.2f} s/episode (train "
          f"{', '.join(f'{t:.2f}' for t in per)} s); ppo_policy/loss "
          f"{[round(h['ppo_policy/loss'], 4) for h in history]}")


def test_ppo_hf_runs_with_hf_generate(tmp_path):
    need("transformers", "hf")
    import ppo_hf

    history = ppo_hf.main(_config(tmp_path))
    assert len(history) == 2
    assert all(0.0 <= h["reward/reward"] <= 1.0 for h in history)
    assert (tmp_path / "run" / "metrics.jsonl").is_file()


def test_ppo_hf_trainers_on_deepspeed(tmp_path):
    """ppo_policy on DeepSpeed ZeRO-1, ppo_value (value head) on DeepSpeed ZeRO-0."""
    need("transformers", "hf")
    need("deepspeed", "deepspeed")
    cfg = _config(tmp_path, ppo_policy={"args": {"backend": "deepspeed", "zero_stage": 1}},
                  ppo_value={"args": {"backend": "deepspeed", "zero_stage": 0}})
    history, models, seconds = _run(cfg)
    _report("deepspeed", history, seconds)
    _check_history(history)
    trainer = models["ppo_policy"]
    assert type(trainer).__name__ == "DeepspeedPolicyTrainer"
    # 2 episodes x 2 epochs x (16 samples / global batch 8) optimizer steps
    assert trainer.zero_stage == 1 and trainer.engine.global_steps == 8
    _assert_synced(trainer, models["policy"], _initial_weights(tmp_path))
    _assert_synced(models["ppo_value"], models["value"])


def test_ppo_hf_policy_trainer_on_megatron(tmp_path):
    """ppo_policy on megatron-core (TP=1, in process); synced into the HF policy under HF
    names (QKV / gate-up split by flowrl.models.weight_mapping)."""
    need("transformers", "hf")
    need("megatron.core", "megatron")
    cfg = _config(tmp_path, ppo_policy={"tensor_model_parallel_size": 1,
                                        "args": {"backend": "megatron"}})
    history, models, seconds = _run(cfg)
    _report("megatron", history, seconds)
    _check_history(history)
    trainer = models["ppo_policy"]
    assert type(trainer).__name__ == "MegatronPolicyTrainer"
    assert any(n.endswith("linear_qkv.weight") for n, _ in trainer.model.named_parameters())
    _assert_synced(trainer, models["policy"], _initial_weights(tmp_path))


def test_value_trainer_backend_is_checked(tmp_path):
    """The value trainer has no Megatron backend: a ConfigError naming what it supports."""
    from hf_ppo_models import make_trainer

    import flowrl
    from flowrl.errors import ConfigError

    flowrl.init(_config(tmp_path, ppo_value={"args": {"backend": "megatron"}}))
    with pytest.raises(ConfigError, match=r"ppo_value\.args\.backend.*supports hf, deepspeed"):
        make_trainer("ppo_value", "value")
    flowrl.init(_config(tmp_path, ppo_policy={"args": {"backend": "jax"}}))
    with pytest.raises(ConfigError, match="hf, deepspeed, megatron; got 'jax'"):
        make_trainer("ppo_policy", "policy")
