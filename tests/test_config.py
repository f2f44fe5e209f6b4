"""Config loading and validation: every error names the field at fault."""

from __future__ import annotations

import pytest

import flowrl
from flowrl import ConfigError
from flowrl.config import load_config
from ppo_setup import build_ppo


def test_yaml_dict_and_argv(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("runtime_args:\n  num_episode: 7\nmodels:\n  policy:\n    args: {lr: 0.1}\n"
                    "  reward:\n")
    cfg = load_config(path)
    assert cfg.runtime_args.num_episode == 7
    assert cfg.model("policy").args == {"lr": 0.1}
    assert cfg.model("reward").offload == "auto"  # empty section = defaults
    assert load_config(argv=["train.py", "-c", str(path)]).runtime_args.num_episode == 7
    assert load_config(argv=[f"--config={path}"]).source == str(path)
    assert load_config({"runtime_args": {"seed": 5}}).runtime_args.seed == 5
    assert load_config(path, runtime="ray").runtime == "ray"
    assert load_config(argv=[]).runtime_args.num_episode == 1


def test_init_sets_the_active_config():
    cfg = flowrl.init({"runtime_args": {"num_episode": 3}})
    assert flowrl.get_args() is cfg


def test_missing_model_section_names_the_model(tiny_ppo_config):
    del tiny_ppo_config["models"]["value"]
    with pytest.raises(ConfigError, match=r"model 'value' has no section under 'models:'"):
        build_ppo(tiny_ppo_config)


@pytest.mark.parametrize("runtime_args, field", [
    ({"train_global_batch_size": 16, "train_micro_batch_size": 5}, "train_micro_batch_size"),
    ({"sample_per_episode": 30, "generation_batch_size": 8}, "generation_batch_size"),
    ({"sample_per_episode": 24, "generation_batch_size": 8, "train_global_batch_size": 16},
     "train_global_batch_size"),
    ({"generation_batch_size": 0}, "generation_batch_size"),
    ({"num_episode": -1}, "num_episode"),
])
def test_bad_batch_sizes_name_the_field(runtime_args, field):
    with pytest.raises(ConfigError, match=rf"runtime_args(\.{field})?: .*{field}|{field}"):
        load_config({"runtime_args": runtime_args})
    with pytest.raises(ConfigError) as e:
        load_config({"runtime_args": runtime_args})
    assert field in str(e.value)


def test_unknown_keys_are_errors_with_suggestions():
    with pytest.raises(ConfigError, match=r"runtime_args.num_episodes: unknown field; did you "
                                          r"mean 'num_episode'"):
        load_config({"runtime_args": {"num_episodes": 3}})
    with pytest.raises(ConfigError, match=r"models.policy.offload: Input should be 'auto'"):
        load_config({"models": {"policy": {"offload": "sometimes"}}})
    with pytest.raises(ConfigError, match=r"models.policy: num_devices=3 is not a multiple"):
        load_config({"models": {"policy": {"num_devices": 3, "tensor_model_parallel_size": 2}}})


def test_missing_file_and_bad_top_level(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="-c needs a YAML file path"):
        load_config(argv=["-c"])


def test_chatlearn_yaml_spellings_are_accepted(tmp_path):
    """A ChatLearn-style YAML: episode settings under `runtime:`, per-model `num_gpu`,
    `args_dict`, offload booleans and `colocation` map onto flowrl's keys."""
    path = tmp_path / "chatlearn.yaml"
    path.write_text(
        "runtime:\n  num_episode: 5\n  sample_per_episode: 32\n  generation_batch_size: 8\n"
        "  train_global_batch_size: 16\n  train_micro_batch_size: 4\n"
        "  coalesced_buffer_mb: 32\n  colocation:\n    - policy,ppo_policy\n"
        "models:\n  policy:\n    num_gpu: 2\n    trainable: false\n    args_dict: {temperature: 0.7}\n"
        "  ppo_policy:\n    num_gpu: 2\n    trainable: true\n"
        "    offload_weights: true\n    offload_optimizer_states: true\n"
        "  reward:\n    offload_weights: false\n")
    cfg = load_config(path)
    a = cfg.runtime_args
    assert (a.num_episode, a.sample_per_episode, a.generation_batch_size,
            a.train_global_batch_size, a.train_micro_batch_size) == (5, 32, 8, 16, 4)
    assert a.sync_bucket_mb == 32.0 and cfg.runtime == "local"
    policy, trainer = cfg.model("policy"), cfg.model("ppo_policy")
    assert (policy.num_devices, policy.trainable, policy.args) == (2, False, {"temperature": 0.7})
    assert (trainer.num_devices, trainer.trainable, trainer.offload) == (2, True, "all")
    assert cfg.model("reward").offload == "never"
    assert policy.colocation_group == trainer.colocation_group == "policy,ppo_policy"
    assert load_config(path, runtime="ray").runtime == "ray"  # the executor kind: an override


def test_flowrl_spelling_unchanged_by_chatlearn_support():
    cfg = load_config({"runtime": "ray", "runtime_args": {"num_episode": 2},
                       "models": {"policy": {"num_devices": 2}}})
    assert (cfg.runtime, cfg.runtime_args.num_episode, cfg.model("policy").num_devices) == \
        ("ray", 2, 2)


def test_yaml_anchors_and_merge_keys_still_work(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text("models:\n  value: &base {dtype: fp32, args: {d_model: 32}}\n"
                    "  policy:\n    <<: *base\n    dtype: bf16\n")
    cfg = load_config(path)
    assert (cfg.model("policy").dtype, cfg.model("policy").args) == ("bf16", {"d_model": 32})
    assert cfg.model("value").dtype == "fp32"


# ---- typed model settings (issue 11, item 6) ------------------------------------------------
def test_flat_keys_are_aliases_of_one_typed_field():
    cfg = load_config({"models": {"p": {"tensor_model_parallel_size": 2, "num_layers": 3,
                                        "max_new_tokens": 7, "num_devices": 4}}})
    m = cfg.model("p")
    assert (m.parallel.tp, m.shape.num_layers, m.generation.max_new_tokens) == (2, 3, 7)
    assert (m.tensor_model_parallel_size, m.num_layers, m.max_new_tokens, m.dp_size) == \
        (2, 3, 7, 2)
    assert "tensor_model_parallel_size" not in m.model_dump()  # stored once, typed
    assert load_config(cfg).model("p") == m  # a dumped config loads back the same
    with pytest.raises(ConfigError, match=r"models.p: num_layers=2 \(an alias of "
                                          r"shape.num_layers\) and shape.num_layers=3"):
        load_config({"models": {"p": {"num_layers": 2, "shape": {"num_layers": 3}}}})
    with pytest.raises(ConfigError, match=r"models.p.generation.max_new_token: unknown field; "
                                          r"did you mean 'max_new_tokens'"):
        load_config({"models": {"p": {"generation": {"max_new_token": 3}}}})
    with pytest.raises(ConfigError, match=r"models.p.num_layer: unknown field; did you mean "
                                          r"'num_layers'"):
        load_config({"models": {"p": {"num_layer": 3}}})


def _hf_dir(tmp_path, **over):
    import json

    hf = {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 8,
          "num_key_value_heads": 2, "vocab_size": 1000, "max_position_embeddings": 512,
          "torch_dtype": "float32", **over}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    return str(tmp_path)


def test_model_path_config_json_fills_shape_and_dtype(tmp_path):
    from flowrl.compiler.resources import model_resources
    from flowrl.ir import FLOW_INPUT, CallNode, FlowGraph

    path = _hf_dir(tmp_path)
    m = load_config({"models": {"p": {"model_path": path}}}).model("p")
    assert (m.shape.num_layers, m.shape.hidden_size, m.shape.num_heads, m.shape.num_kv_heads,
            m.shape.vocab_size) == (4, 256, 8, 2, 1000)
    assert m.dtype is None and m.weights_dtype == "fp32"  # an fp32 checkpoint stays fp32
    g = FlowGraph("rollout")
    g.add_call(CallNode("p.forward_step", "p", "forward_step", (FLOW_INPUT,), order=0))
    r = model_resources({"p": m}, {"rollout": g})["p"]
    assert (r.dtype, r.num_layers, r.hidden_size, r.kv_fraction) == ("fp32", 4, 256, 0.25)
    assert load_config({"models": {"p": {"model_path": path, "dtype": "bf16"}}}).model(
        "p").weights_dtype == "bf16"  # an explicit dtype wins
    with pytest.raises(ConfigError, match=rf"models.p: shape.num_layers=3 contradicts "
                                          rf"num_hidden_layers=4 in {path}/config.json"):
        load_config({"models": {"p": {"model_path": path, "num_layers": 3}}})
    with pytest.raises(ConfigError, match=r"shape.max_seq_len=1024 exceeds "
                                          r"max_position_embeddings=512"):
        load_config({"models": {"p": {"model_path": path, "shape": {"max_seq_len": 1024}}}})


def test_module_args_are_typed_when_the_class_declares_them():
    from flowrl import TorchModule
    from flowrl.models.args import ModuleArgs

    class Policy(TorchModule):
        class Args(ModuleArgs):
            max_prompt_len: int = 8

    cfg = load_config({"models": {"policy": {"args": {"max_prompt_len": 5}},
                                  "free": {"args": {"anything": 1}}}})
    assert Policy("policy").bind(cfg).typed_args.max_prompt_len == 5
    assert TorchModule("free").bind(cfg).model_args == {"anything": 1}  # no Args: free-form
    bad = load_config({"models": {"policy": {"args": {"max_promt_len": 5, "lr": 0.1}}}})
    with pytest.raises(ConfigError) as e:
        Policy("policy").bind(bad)
    msg = str(e.value)
    assert "models.policy.args.max_promt_len: unknown key; did you mean 'max_prompt_len'" in msg
    assert "models.policy.args.lr: a typed setting of every model now: write " \
           "models.policy.optim.lr" in msg


def test_tiny_example_plans_with_its_own_generation_settings():
    """The planner reads the same typed fields the example's modules run with."""
    from pathlib import Path

    from flowrl.compiler.resources import model_resources
    from flowrl.ir import FLOW_INPUT, CallNode, FlowGraph

    cfg = load_config(Path(__file__).resolve().parents[1] / "examples" / "ppo_tiny.yaml")
    g = FlowGraph("rollout")
    g.add_call(CallNode("policy.forward_step", "policy", "forward_step", (FLOW_INPUT,), order=0))
    r = model_resources(dict(cfg.models), {"rollout": g})["policy"]
    assert (r.max_new_tokens, r.max_seq_len, r.dtype, r.num_layers, r.hidden_size) == \
        (16, 24, "fp32", 2, 64)
