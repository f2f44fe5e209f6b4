import pytest

from flowrl.ir.cluster import parse_cluster
from flowrl.ir import FLOW_INPUT
from flowrl.compiler.validate import validate
from flowrl.config import ModelConfig
from flowrl.errors import CompileError

from compiler_helpers import METHODS, SYNC, make_graph, ppo_graphs, ppo_models

C8 = parse_cluster("8xH100-80GB")


def run(graphs=None, models=None, sync=SYNC, strategy="colocate", methods=METHODS, **kw):
    validate(graphs or ppo_graphs(), models or ppo_models(7), sync, C8, strategy, methods, **kw)


def test_valid_ppo_passes():
    run()
    run(methods=None)


def test_unknown_strategy():
    with pytest.raises(CompileError, match="unknown placement strategy 'spread'"):
        run(strategy="spread")


def test_cycle_names_the_models():
    graphs = ppo_graphs()
    graphs["rollout"] = make_graph("rollout", ("policy.forward_step", ("value.forward_step",)),
                                   ("value.forward_step", ("policy.forward_step",)))
    with pytest.raises(CompileError, match=r"flow 'rollout' has a cycle: .*policy.*value"):
        run(graphs)


def test_unknown_model_names_model_and_section():
    models = ppo_models(7)
    del models["reward"]
    with pytest.raises(CompileError, match=r"calls model 'reward' .* no section models\.reward"):
        run(models=models)


def test_trainer_without_train_step():
    methods = dict(METHODS, ppo_value=frozenset({"forward_step"}))
    with pytest.raises(CompileError, match=r"trainer 'ppo_value' is called with train_step .* "
                                           r"implements no train_step \(models\.ppo_value\)"):
        run(methods=methods)


def test_trainable_flag_without_train_step():
    models = ppo_models(7)
    models["value"] = ModelConfig(**{**models["value"].model_dump(), "trainable": True})
    with pytest.raises(CompileError, match=r"models\.value\.trainable is true but 'value'"):
        run(models=models)
    models = ppo_models(7)
    models["ppo_value"] = ModelConfig(**{**models["ppo_value"].model_dump(), "trainable": False})
    with pytest.raises(CompileError, match=r"models\.ppo_value\.trainable is false but a flow "
                                           r"calls ppo_value\.train_step"):
        run(models=models)


def test_sync_source_must_train():
    with pytest.raises(CompileError, match=r"sync source 'reference' is a trainer with no "
                                           r"train_step"):
        run(sync=[("reference", "policy")])
    with pytest.raises(CompileError, match="sync pair .* names model 'critic'"):
        run(sync=[("ppo_value", "critic")])


@pytest.mark.parametrize("field,value,match", [
    ("num_devices", 16, r"models\.policy\.num_devices: model 'policy' asks for 16 devices .* "
                        r"has 8"),
    ("tensor_model_parallel_size", 16, r"models\.policy\.tensor_model_parallel_size: .* asks "
                                       r"for 16"),
    ("data_parallel_size", 9, r"models\.policy\.data_parallel_size: .* asks for 9"),
])
def test_more_devices_than_the_cluster(field, value, match):
    models = ppo_models(7)
    models["policy"] = ModelConfig(**{**models["policy"].model_dump(), field: value})
    with pytest.raises(CompileError, match=match):
        run(models=models)


def test_parallel_size_must_divide_cluster_for_colocate():
    models = ppo_models(7)
    models["policy"] = ModelConfig(**{**models["policy"].model_dump(),
                                      "tensor_model_parallel_size": 3})
    with pytest.raises(CompileError, match=r"models\.policy\.tensor_model_parallel_size: .*3 "
                                           r".*does not divide"):
        run(models=models)


def test_manual_needs_valid_devices():
    with pytest.raises(CompileError, match=r"strategy 'manual' needs models\.policy\.devices"):
        run(strategy="manual")
    models = ppo_models(7, devices=[0, 1])
    models["value"] = ModelConfig(**{**models["value"].model_dump(), "devices": [7, 8]})
    with pytest.raises(CompileError, match=r"models\.value\.devices names device 8 .* 0\.\.7"):
        run(models=models, strategy="manual")


def test_colocation_group_naming_unknown_model():
    with pytest.raises(CompileError, match=r"colocation group 0 \['policy', 'polcy'\] names "
                                           r"unknown model 'polcy' \(did you mean 'policy'\?\)"):
        run(colocation=[["policy", "polcy"]])
    models = ppo_models(7)
    models["critic"] = ModelConfig(num_params=10, colocation_group="g")
    with pytest.raises(CompileError, match=r"models\.critic\.colocation_group: group 'g' names "
                                           r"model 'critic', which no flow uses"):
        run(models=models)


def test_manual_colocation_group_must_share_devices():
    models = ppo_models(7, devices=[0, 1])
    models["value"] = ModelConfig(**{**models["value"].model_dump(), "devices": [2, 3],
                                     "colocation_group": "critic"})
    models["ppo_value"] = ModelConfig(**{**models["ppo_value"].model_dump(),
                                         "devices": [4, 5], "colocation_group": "critic"})
    with pytest.raises(CompileError, match=r"models\.value\.devices differ from "
                                           r"models\.ppo_value\.devices .* group 'critic'"):
        run(models=models, strategy="manual")


def test_needs_rollout_and_train():
    with pytest.raises(CompileError, match="need 'rollout' and 'train' flows"):
        run(graphs={"rollout": make_graph("rollout", ("policy.forward_step", (FLOW_INPUT,)))})
