"""Bad inputs to the Ray runtime: addresses, modules Ray cannot send, node pins, device counts,
and failures inside workers, which must read like the local runtime's.

Every case asserts the error class and that the message names the address, field or model.
The first tests need no Ray session (they fail before one would start); the rest share one
local session (``ray_session``), started once for the module.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time

import pytest

import flowrl
from flowrl import BaseModule, Engine, StageError, flow
from flowrl.errors import ConfigError
from flowrl.runtime.executor import SetupError
from flowrl.runtime.guards import NonFiniteError
from flowrl.runtime.ray_cluster import RayClusterError, connect, unpicklable_path

from .conftest import Echo, Learner

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

THIS_FILE = r"test_ray_inputs\.py:\d+"


def _config(**models_and_args) -> dict:
    """A tiny two-model Ray config; keyword ``args`` updates runtime_args, others are models."""
    args = {"num_episode": 1, "sample_per_episode": 4, "generation_batch_size": 4,
            "train_global_batch_size": 4, "train_micro_batch_size": 2, "progress": False}
    args.update(models_and_args.pop("args", {}))
    top = models_and_args.pop("top", {})
    models = {"echo": {}, "trainer": {}}
    models.update(models_and_args)
    return {"runtime": "ray", "runtime_args": args, "models": models, **top}


def _engine(echo: BaseModule, trainer: BaseModule) -> Engine:
    @flow
    def rollout(batch):
        return echo.forward_step(batch)

    @flow
    def train(batch):
        trainer.train_step(batch)

    return Engine(rollout, train).set_dataset([1, 2, 3, 4, 5, 6, 7, 8])


def _learn(config: dict, echo_cls: type = Echo, trainer_cls: type = Learner) -> list:
    flowrl.init(config)
    engine = _engine(echo_cls("echo"), trainer_cls("trainer"))
    try:
        return engine.learn()
    finally:
        engine.shutdown()


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- addresses (no Ray session: these fail before one could start) ----------------------------
def test_unused_port_fails_within_the_timeout_naming_address_and_field():
    assert not ray.is_initialized()
    address = f"127.0.0.1:{_unused_port()}"
    t0 = time.monotonic()
    with pytest.raises(RayClusterError, match=rf"no Ray cluster answers at ray_address "
                                              rf"'{address}' within 1.5 s.*ray_connect_timeout_s"):
        _learn(_config(top={"ray_address": address}, args={"ray_connect_timeout_s": 1.5}))
    assert time.monotonic() - t0 < 20  # bounded: Ray alone would retry for ever
    assert not ray.is_initialized()


@pytest.mark.parametrize("address", ["localhost", "localhost:port", "10.0.0.1:70000", ":6379",
                                     "ray://"])
def test_malformed_addresses_name_the_address_and_field(address):
    with pytest.raises(RayClusterError, match=rf"ray_address '{address}' is not 'host:port'.*"
                                              rf"field ray_address"):
        connect(address, 1.0)


@pytest.mark.parametrize("value, problem", [(0, "greater than 0"), (-5, "greater than 0"),
                                            (True, "got the boolean true")])
def test_bad_connect_timeouts_name_the_field(value, problem):
    with pytest.raises(ConfigError, match=rf"runtime_args\.ray_connect_timeout_s: .*{problem}"):
        flowrl.init(_config(args={"ray_connect_timeout_s": value}))


def test_a_port_that_is_not_ray_fails_within_the_timeout():
    """Something listens but never answers as Ray: the helper thread's ray.init is abandoned
    (in a child process, so its retries cannot touch this process's later Ray session)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        code = ("from flowrl.runtime.ray_cluster import connect\n"
                f"connect({address!r}, 2.0, log_to_driver=False)\n")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120)
    assert proc.returncode != 0
    assert "RayClusterError" in proc.stderr
    assert f"ray_address '{address}' accepted a connection but did not answer as a Ray " \
           f"cluster within 2 s" in proc.stderr


# ---- modules Ray cannot send (checked when the executor is built, before Ray starts) ----------
class HoldsALock(Echo):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.lock = threading.Lock()


class HoldsAGenerator(Echo):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.cache = {"ok": 1, "stream": (i for i in range(3))}


class HoldsASocket(Learner):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.conn = socket.socket()  # the bad input under test (closed when collected)


@pytest.mark.parametrize("echo_cls, trainer_cls, culprit, attribute", [
    (HoldsALock, Learner, "'echo' (HoldsALock)", r"self\.lock \(lock\)"),
    (HoldsAGenerator, Learner, "'echo' (HoldsAGenerator)",
     r"self\.cache\['stream'\] \(generator\)"),
    (Echo, HoldsASocket, "'trainer' (HoldsASocket)", r"self\.conn \(socket\)"),
])
def test_unpicklable_modules_name_model_and_attribute(echo_cls, trainer_cls, culprit, attribute):
    with pytest.raises(RayClusterError, match=rf"model {re.escape(culprit)} cannot be sent to a "
                                              rf"Ray worker: attribute {attribute} cannot be "
                                              rf"pickled.*setup\(\)"):
        _learn(_config(), echo_cls, trainer_cls)
    assert not ray.is_initialized()


def test_unpicklable_path_walks_nested_containers():
    class Holder:
        def __init__(self) -> None:
            self.fine = [1, 2]
            self.deep = {"a": [0, threading.Lock()]}

    assert unpicklable_path(Holder()) == ".deep['a'][1] (lock)"
    assert unpicklable_path({"x": 1}) is None


def test_colocated_models_pinned_to_different_nodes_name_both():
    cfg = _config(echo={"colocation_group": "g", "ray_node_resource": "node_a"},
                  trainer={"colocation_group": "g", "ray_node_resource": "node_b"})
    with pytest.raises(ConfigError, match=r"models echo, trainer share worker processes.*"
                                              r"models\.echo\.ray_node_resource='node_a', "
                                              r"models\.trainer\.ray_node_resource='node_b'"):
        _learn(cfg)


def test_empty_node_resource_names_the_field():
    with pytest.raises(ConfigError, match=r"models\.echo\.ray_node_resource: .*at least 1"):
        flowrl.init(_config(echo={"ray_node_resource": ""}))


# ---- with a Ray session ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_session():
    ray.init(address="local", num_cpus=2, resources={"flowrl_device": 4, "node_a": 4},
             include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


class Boom(Echo):
    """Fails from rollout iteration ``args.fail_at_iteration`` on (one batch per episode)."""

    def forward_step(self, data: dict, iteration: int = 0) -> dict:
        if iteration >= self.model_args.get("fail_at_iteration", 0):
            raise ValueError(f"bad row at iteration {iteration}")
        return super().forward_step(data, iteration)


class BadLearner(Learner):
    def train_step(self, data: list, iteration: int) -> dict:
        raise KeyError("advantages")


class ReturnsList(Echo):
    def forward_step(self, data: dict, iteration: int = 0) -> dict:
        return [data["x"]]


class NaNEcho(Echo):
    def forward_step(self, data: dict, iteration: int = 0) -> dict:
        y = data["x"] * 2
        y[1] = float("nan")
        return {"y": y}


class FailingSetup(Echo):
    def setup(self) -> None:
        raise OSError("tokenizer.json not found")


def test_a_rollout_failure_names_call_model_class_episode_iteration_site_and_input(ray_session):
    with pytest.raises(StageError) as info:
        _learn(_config(), Boom)
    msg = str(info.value)
    assert "echo.forward_step failed (model 'echo', Boom.forward_step, episode 1, " \
           "iteration 0, called at " in msg
    assert "on input {x:(4,)}: ValueError: bad row at iteration 0" in msg
    assert re.search(THIS_FILE, msg), msg


def test_a_failure_in_a_later_episode_is_numbered_from_one(ray_session):
    cfg = _config(echo={"args": {"fail_at_iteration": 1}}, args={"num_episode": 2})
    with pytest.raises(StageError, match=r"model 'echo', Boom\.forward_step, episode 2, "
                                         r"iteration 1, called at .*" + THIS_FILE):
        _learn(cfg, Boom)


def test_a_train_step_failure_names_the_trainer_and_its_micro_batches(ray_session):
    with pytest.raises(StageError, match=r"trainer\.train_step failed \(model 'trainer', "
                                         r"BadLearner\.train_step, episode 1, iteration 0, "
                                         r"called at .*\) on input list of 2 micro-batches, "
                                         r"first: \{.*\}: KeyError: 'advantages'"):
        _learn(_config(), Echo, BadLearner)


def test_a_step_returning_the_wrong_type_names_the_call(ray_session):
    with pytest.raises(StageError, match=r"echo\.forward_step returned list; a step method "
                                         r"returns a dict"):
        _learn(_config(), ReturnsList)


def test_a_setup_failure_names_model_and_class(ray_session):
    with pytest.raises(SetupError, match=r"setup\(\) of model 'echo' \(FailingSetup\) failed: "
                                         r"OSError: tokenizer\.json not found"):
        _learn(_config(), FailingSetup)


def test_nonfinite_outputs_in_a_worker_name_model_key_and_episode(ray_session):
    with pytest.raises(NonFiniteError, match=r"model 'echo' \(method forward_step, episode 1, "
                                             r"iteration 0\): key 'y' has 1 NaN/inf value"):
        _learn(_config(), NaNEcho)


class NaNOnce(Echo):
    def forward_step(self, data: dict, iteration: int = 0) -> dict:
        y = data["x"] * 2
        if iteration == 0:
            y[0] = float("inf")
        return {"y": y}


def test_skip_batch_drops_a_nonfinite_batch_in_a_worker_and_counts_it(ray_session):
    cfg = _config(args={"on_nonfinite": "skip_batch", "sample_per_episode": 8})
    row = _learn(cfg, NaNOnce)[0]
    assert row["echo/nonfinite/skipped_batches"] == 1.0
    assert row["samples"] == 4.0  # the first of two batches was dropped


def test_a_node_resource_no_node_offers_names_model_resource_and_field(ray_session):
    with pytest.raises(RayClusterError, match=r"models trainer are pinned to Ray resource "
                                              r"'node_z' \(models\.trainer\.ray_node_resource\) "
                                              r"but no alive node offers it \(custom resources: "
                                              r"node_a\)"):
        _learn(_config(trainer={"ray_node_resource": "node_z"}))


def test_more_devices_than_the_cluster_offers_names_the_models(ray_session):
    # the session's single node offers 4 devices; echo asks for 3 and trainer for 2
    with pytest.raises(RayClusterError, match=r"need 5 'flowrl_device' resources \(models "
                                              r"echo, trainer\) but the Ray cluster offers 4"):
        _learn(_config(echo={"num_devices": 3, "ray_node_resource": "node_a"},
                       trainer={"num_devices": 2}))


def test_pinned_models_beyond_their_nodes_devices():
    """Two nodes (as ray.nodes() reports them): enough devices overall, too few on node_b."""
    from flowrl.runtime.layout import WorkerGroup
    from flowrl.runtime.ray_cluster import check_capacity

    nodes = [{"Alive": True, "Resources": {"flowrl_device": 4.0, "node_a": 1.0}},
             {"Alive": True, "Resources": {"flowrl_device": 1.0, "node_b": 1.0}}]
    groups = [WorkerGroup("reward", ["reward"], 1, [0]),
              WorkerGroup("value", ["value"], 1, [1, 2], node_resource="node_b")]
    with pytest.raises(RayClusterError, match=r"models value are pinned to Ray resource "
                                              r"'node_b' \(models\.value\.ray_node_resource\) "
                                              r"and need 2 'flowrl_device' there, but its nodes "
                                              r"offer 1"):
        check_capacity(groups, nodes)


def test_data_parallel_size_not_dividing_micro_batches_names_the_model(ray_session):
    with pytest.raises(ConfigError, match=r"models\.trainer: data_parallel_size 3 does not "
                                          r"divide the 2 micro-batches"):
        _learn(_config(trainer={"data_parallel_size": 3}))


def test_a_killed_worker_names_the_models_lost(ray_session):
    flowrl.init(_config(echo={"colocation_group": "g"}, trainer={"colocation_group": "g"}))
    engine = _engine(Echo("echo"), Learner("trainer"))
    try:
        engine.learn()
        ray.kill(engine.executor.replicas("echo")[0])
        with pytest.raises(StageError, match=r"worker process died .*models lost: echo, "
                                             r"trainer"):
            engine.learn(num_episode=2)
    finally:
        engine.shutdown()


def test_pinning_works_on_a_node_that_offers_the_resource(ray_session):
    """The good case next to the bad ones: a pin the node satisfies runs and lands there."""
    flowrl.init(_config(echo={"ray_node_resource": "node_a"}))
    engine = _engine(Echo("echo"), Learner("trainer"))
    try:
        rows = engine.learn()
        nodes = set(engine.executor.actor_nodes.values())
    finally:
        engine.shutdown()
    assert rows[0]["episode"] == 1 and rows[0]["samples"] == 4.0
    assert nodes == {ray.get_runtime_context().get_node_id()}
