import pytest

from flowrl.ir.cluster import parse_cluster
from flowrl.compiler.colocation import colocation_units
from flowrl.ir import Mesh
from flowrl.compiler.pipeline import workload
from flowrl.compiler.placement import layout, placement
from flowrl.compiler.resources import model_resources
from flowrl.compiler.placement import unit_options
from flowrl.config import ModelConfig
from flowrl.errors import CompileError

from compiler_helpers import ARGS, SYNC, ppo_graphs, ppo_models


def place(strategy, models=None, cluster="8xH100-80GB", evaluate=None, colocation=None, seed=0):
    graphs = ppo_graphs()
    res = model_resources(models or ppo_models(7), graphs, SYNC)
    units = colocation_units(res, colocation)
    return placement(units, res, parse_cluster(cluster), strategy, workload(graphs, ARGS, res),
                     ARGS,
                     seed, evaluate)


def test_colocate_shares_all_devices():
    models = ppo_models(7)
    models["reward"] = ModelConfig(**{**models["reward"].model_dump(),
                                      "tensor_model_parallel_size": 2})
    meshes = place("colocate", models)
    assert all(m.devices == tuple(range(8)) for m in meshes.values())
    assert meshes["policy"] == Mesh(tuple(range(8)), 1, 1, 8)
    assert meshes["reward"] == Mesh(tuple(range(8)), 2, 1, 4)


def test_colocate_respects_a_fixed_device_count():
    models = ppo_models(7)
    models["reward"] = ModelConfig(**{**models["reward"].model_dump(), "num_devices": 2})
    assert place("colocate", models)["reward"] == Mesh((0, 1), 1, 1, 2)


def test_disaggregate_gives_disjoint_devices_and_spreads_the_rest():
    meshes = place("disaggregate")
    used = [d for m in meshes.values() for d in m.devices]
    assert len(used) == len(set(used)) == 8  # disjoint, and the 2 spare devices were used
    for name, m in meshes.items():
        assert len(m.devices) == m.tp * m.pp * m.dp


def test_disaggregate_needs_enough_devices():
    with pytest.raises(CompileError, match=r"strategy 'disaggregate' needs 12 devices .*policy 2"
                                           r".* has 8"):
        place("disaggregate", ppo_models(7, tensor_model_parallel_size=2))


def test_colocation_groups_share_devices_under_disaggregate():
    models = ppo_models(7)
    for n in ("policy", "ppo_policy"):
        models[n] = ModelConfig(**{**models[n].model_dump(), "colocation_group": "actor"})
    units = colocation_units(model_resources(models, ppo_graphs()))
    assert [u.models for u in units][0] == ("policy", "ppo_policy")
    meshes = place("disaggregate", models)
    assert meshes["policy"].devices == meshes["ppo_policy"].devices
    others = {d for n, m in meshes.items() if n not in ("policy", "ppo_policy") for d in m.devices}
    assert not others & set(meshes["policy"].devices)
    explicit = place("disaggregate", colocation=[["value", "ppo_value"]])
    assert explicit["value"].devices == explicit["ppo_value"].devices


def test_manual_uses_config_devices():
    models = ppo_models(7, devices=[0, 1, 2, 3])
    models["policy"] = ModelConfig(**{**models["policy"].model_dump(), "devices": [4, 5, 6, 7],
                                      "tensor_model_parallel_size": 2})
    meshes = place("manual", models)
    assert meshes["policy"] == Mesh((4, 5, 6, 7), 2, 1, 2)
    assert meshes["reward"] == Mesh((0, 1, 2, 3), 1, 1, 4)


def test_search_needs_an_evaluator_and_is_deterministic():
    with pytest.raises(CompileError, match="needs an evaluate function"):
        place("search")

    calls = []

    def evaluate(meshes):  # prefer few devices for 'policy', many for the rest
        calls.append(1)
        return len(meshes["policy"].devices) + sum(8 - len(m.devices) for n, m in meshes.items()
                                                   if n != "policy")

    a = place("search", evaluate=evaluate, seed=3)
    b = place("search", evaluate=evaluate, seed=3)
    assert a == b and len(calls) > 10
    assert len(a["policy"].devices) == 1 and len(a["reward"].devices) == 8


def test_search_reports_when_nothing_fits():
    def evaluate(meshes):
        raise CompileError("never fits")

    with pytest.raises(CompileError, match="search found no placement .*never fits"):
        place("search", evaluate=evaluate)


def test_layout_keeps_blocks_inside_nodes():
    blocks = layout([4, 8, 2, 2], parse_cluster("2x8xH100-80GB"))
    assert blocks[1] == tuple(range(8))  # the largest first, at the start
    for b in blocks:
        assert len({d // 8 for d in b}) == 1
    assert len({d for b in blocks for d in b}) == 16


def test_unit_options_are_aligned_blocks():
    units = colocation_units(model_resources(ppo_models(7, tensor_model_parallel_size=2),
                                             ppo_graphs()))
    opts = unit_options(units[0], 8)
    assert (0, 1) in opts and (2, 3) in opts and (1, 2) not in opts and tuple(range(8)) in opts
