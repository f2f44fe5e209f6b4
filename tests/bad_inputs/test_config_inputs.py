"""Bad configs: YAML syntax, booleans for numbers, seeds, ChatLearn spellings flowrl cannot honour.

Every case asserts the error class and that the message names the file, field or model.
"""

from __future__ import annotations

import pytest

from flowrl.config import load_config
from flowrl.errors import ConfigError, FlowRLError


@pytest.mark.parametrize("text, where, problem", [
    ("runtime_args:\n  num_episode: 3\n  seed: [1, 2\n", ":4:1", "expected ',' or ']'"),
    ("runtime_args:\n  num_episode: 3\n bad: 1\n", ":3:2", "expected <block end>"),
    ("models:\n  policy: 'unterminated\n", ":3:1", "unexpected end of stream"),
    ("runtime_args:\n\tnum_episode: 3\n", ":2:1", "found character '\\\\t'"),
    ("models:\n  policy: {}\n  policy: {args: {lr: 1}}\n", ":3:3",
     "key 'policy' appears twice in one mapping \\(first at line 2\\)"),
])
def test_yaml_syntax_errors_name_file_line_column(write_yaml, text, where, problem):
    path = write_yaml(text)
    with pytest.raises(ConfigError, match=rf"{path}{where}: YAML syntax error: .*{problem}"):
        load_config(path)


def test_non_utf8_file_names_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("runtime_args: {seed: 1}  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"{path}: not a UTF-8 text file"):
        load_config(path)


@pytest.mark.parametrize("section, field", [
    ("runtime_args", "num_episode"),
    ("runtime_args", "train_micro_batch_size"),
    ("runtime_args", "seed"),
    ("runtime_args", "sync_bucket_mb"),
    ("models.policy", "num_devices"),
    ("models.policy", "tensor_model_parallel_size"),
])
def test_booleans_where_numbers_are_expected(write_yaml, section, field):
    if section == "runtime_args":
        text = f"runtime_args:\n  {field}: true\n"
    else:
        text = f"models:\n  policy:\n    {field}: true\n"
    with pytest.raises(ConfigError, match=rf"{section}\.{field}: expected a number, got the "
                                          rf"boolean true"):
        load_config(write_yaml(text))


def test_boolean_in_a_device_list_names_the_entry():
    with pytest.raises(ConfigError, match=r"models\.policy\.devices\.1: expected a number, got "
                                          r"the boolean false"):
        load_config({"models": {"policy": {"devices": [0, False]}}})


@pytest.mark.parametrize("seed, problem", [
    (-1, "greater than or equal to 0"),
    (2**32, "less than 4294967296"),
    (2**63, "less than 4294967296"),
    ("abc", "valid integer"),
])
def test_seed_out_of_range_names_runtime_args_seed(seed, problem):
    with pytest.raises(ConfigError, match=rf"runtime_args\.seed: Input should be .*{problem}"):
        load_config({"runtime_args": {"seed": seed}})


@pytest.mark.parametrize("models, key, hint", [
    ({"policy": {"gpu_per_process": 1}}, "models.policy.gpu_per_process", "set num_devices"),
    ({"policy": {"num_replica": 2}}, "models.policy.num_replica",
     "set models.policy.data_parallel_size"),
    ({"policy": {"model_config_file": "p.yaml"}}, "models.policy.model_config_file",
     "models.policy.args"),
    ({"policy": {"generation_batch_size": 4}}, "models.policy.generation_batch_size",
     "runtime_args.generation_batch_size"),
    ({"policy": {"lora": {"enable_lora": True}}}, "models.policy.lora",
     "flowrl does not support it"),
])
def test_chatlearn_model_keys_flowrl_cannot_honour(models, key, hint):
    with pytest.raises(ConfigError, match=rf"{key} in <dict>: a ChatLearn setting flowrl cannot "
                                          rf"honour; "
                                          rf".*{hint}"):
        load_config({"models": models})


@pytest.mark.parametrize("key, value, hint", [
    ("data_path", "/data/prompts.jsonl", r"engine\.set_dataset\(prompts\)"),
    ("eval_data_path", "/data/eval.jsonl", r"evaluator\.set_dataset\(prompts\)"),
    ("data_checkpoint_path", "/ckpt/data", r"runtime_args\.checkpoint_dir"),
    ("max_relay_episode", 2, "current episode only"),
    ("nsys", False, "flowrl does not support it"),
])
def test_chatlearn_runtime_keys_flowrl_cannot_honour(write_yaml, key, value, hint):
    path = write_yaml(f"runtime:\n  num_episode: 2\n  {key}: {value!r}\n")
    with pytest.raises(ConfigError, match=rf"runtime\.{key} in {path}: a ChatLearn setting "
                                          rf"flowrl cannot honour; .*{hint}"):
        load_config(path)


def test_chatlearn_runtime_env_is_refused():
    with pytest.raises(ConfigError, match=r"runtime_env in <dict>: a ChatLearn setting .*"
                                          r"runtime: ray, ray_address"):
        load_config({"runtime_env": {"platform": "DLC"}})


def test_misspelled_key_in_a_chatlearn_runtime_section_suggests_the_field():
    with pytest.raises(ConfigError, match=r"runtime\.num_episodes: unknown field .*ChatLearn's "
                                          r"episode settings.*did you mean 'num_episode'"):
        load_config({"runtime": {"num_episodes": 3}})


@pytest.mark.parametrize("config, message", [
    ({"models": {"policy": {"num_gpu": 2, "num_devices": 4}}},
     r"models\.policy\.num_gpu \(ChatLearn's spelling of models\.policy\.num_devices\) and "
     r"models\.policy\.num_devices are both set"),
    ({"runtime": {"num_episode": 3}, "runtime_args": {"num_episode": 4}},
     r"runtime\.num_episode and runtime_args\.num_episode are both set"),
    ({"models": {"policy": {"offload": "all", "offload_weights": True}}},
     r"models\.policy\.offload and ChatLearn's models\.policy\.offload_weights are both set"),
    ({"models": {"policy": {"offload_weights": "yes"}}},
     r"models\.policy\.offload_weights must be true or false, got 'yes'"),
    ({"runtime": {"colocation": ["policy,critic"]}, "models": {"policy": {}}},
     r"runtime\.colocation names model 'critic', which has no section under models:"),
    ({"runtime": {"colocation": "policy,value"}, "models": {"policy": {}}},
     r"runtime\.colocation must be a list of comma-separated model names"),
    ({"runtime": {"colocation": ["policy,value"]},
      "models": {"policy": {"colocation_group": "g"}, "value": {}}},
     r"models\.policy\.colocation_group is 'g' but runtime\.colocation puts 'policy' in"),
])
def test_chatlearn_aliases_that_conflict_name_both_keys(config, message):
    with pytest.raises(ConfigError, match=message):
        load_config(config)


def test_chatlearn_substitution_syntax_gets_a_hint(write_yaml):
    path = write_yaml("runtime:\n  num_episode: ${num_episode:200}\n")
    with pytest.raises(ConfigError, match=r"runtime_args\.num_episode: .*ChatLearn's "
                                          r"\$\{VAR:default\} substitution is not supported"):
        load_config(path)


def test_config_errors_are_flowrl_errors():
    with pytest.raises(FlowRLError, match=r"runtime_args\.seed"):
        load_config({"runtime_args": {"seed": -5}})
