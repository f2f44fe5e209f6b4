"""Reaching a Ray cluster and checking that it can host the workers, with errors that say why.

Left alone, Ray waits forever for a wrong address, reports a module it cannot pickle as a raw
``TypeError`` and leaves a placement group that no node can satisfy pending for ever. Each of
these becomes a :class:`RayClusterError` naming the address, model, attribute or resource,
and the config field to change.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Iterator

import torch
from ray import cloudpickle

from flowrl.errors import FlowRLError

#: the custom resource that stands for one device (Ray refuses a fake ``GPU`` on CPU machines)
DEVICE_RESOURCE = "flowrl_device"
#: what each bundle of a pinned worker group asks of its node resource (any amount > 0 pins)
PIN_AMOUNT = 0.001


class RayClusterError(FlowRLError):
    """Ray could not be reached, could not receive a module, or cannot host the workers; the
    message names the address, model, attribute or resource and the config field."""


def parse_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` or ``ray://host:port`` address; ``None`` for Ray's
    own keywords (``auto``, ``local``), which have nothing to probe."""
    if address in ("auto", "local"):
        return None
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RayClusterError(f"ray_address '{address}' is not 'host:port', 'ray://host:port', "
                              f"'auto' or 'local' (field ray_address)")
    return host, int(port)


def _port_open(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=max(0.05, timeout_s)):
            return True
    except OSError:
        return False


def connect(address: str, timeout_s: float, **init_kwargs: Any) -> None:
    """``ray.init(address=...)`` bounded by ``timeout_s`` (``runtime_args.ray_connect_timeout_s``).

    The port is probed first (Ray would retry a closed port for ever); then ``ray.init`` runs
    in a helper thread so that an address that answers but is not a Ray cluster cannot hang
    the driver either.
    """
    import ray

    deadline = time.monotonic() + timeout_s
    hint = (f"check ray_address '{address}' (is `ray start --head` running there?) or raise "
            f"runtime_args.ray_connect_timeout_s={timeout_s:g}")
    hostport = parse_address(address)
    if hostport is not None:
        while not _port_open(*hostport, deadline - time.monotonic()):
            if time.monotonic() >= deadline:
                raise RayClusterError(f"no Ray cluster answers at ray_address '{address}' "
                                      f"within {timeout_s:g} s: {hint}")
            time.sleep(0.2)
    box: dict[str, BaseException] = {}

    def init() -> None:
        try:
            ray.init(address=address, **init_kwargs)
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    thread = threading.Thread(target=init, name="flowrl-ray-connect", daemon=True)
    thread.start()
    thread.join(max(1.0, deadline - time.monotonic()))
    if thread.is_alive():
        raise RayClusterError(f"ray_address '{address}' accepted a connection but did not "
                              f"answer as a Ray cluster within {timeout_s:g} s: {hint}")
    if "error" in box:
        e = box["error"]
        raise RayClusterError(f"could not connect to the Ray cluster at ray_address "
                              f"'{address}': {type(e).__name__}: {e}") from e


def start_local(resources: dict[str, float]) -> None:
    """Start a one-node Ray on this machine offering ``resources`` (the virtual devices).

    Workers run at nice 0, like the driver: Ray's default of 15 leaves them only the CPU time
    no other process wants, so on a busy machine a Ray run would crawl where the local
    runtime (the driver itself) does not.
    """
    import ray

    ray.init(address="local", num_cpus=max(2, torch.get_num_threads()), resources=resources,
             include_dashboard=False, log_to_driver=True,
             _system_config={"worker_niceness": 0})


def worker_threads(setting: str | int, driver_threads: int, replica_devices: int,
                   total_devices: int) -> int:
    """Torch threads for one worker process (``runtime_args.ray_worker_threads``).

    ``"driver"``: the driver's count, as the local runtime computes (bit-identical results).
    ``"share"``: ``driver_threads * replica_devices / total_devices`` (floor), at least 1: when
    the workers of several groups run at once on one machine, each taking the driver's count
    oversubscribes the cores (OpenMP's spinning threads then slow every worker many times
    over). A number: that many.
    """
    if setting == "driver":
        return driver_threads
    if setting == "share":
        return max(1, driver_threads * replica_devices // max(1, total_devices))
    return int(setting)


# ---- sending modules to workers -----------------------------------------------------------
def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        yield from ((f"[{k!r}]", v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        yield from ((f"[{i}]", v) for i, v in enumerate(obj))
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        yield from ((f".{k}", v) for k, v in vars(obj).items())


def unpicklable_path(obj: Any, path: str = "", depth: int = 4) -> str | None:
    """The deepest attribute path under ``obj`` that cannot be pickled (``.cache['lock']``),
    or ``None`` when every child pickles (the object itself is then the culprit)."""
    if depth == 0:
        return None
    for name, child in _children(obj):
        try:
            cloudpickle.dumps(child)
        except Exception:
            here = f"{path}{name}"
            return unpicklable_path(child, here, depth - 1) or f"{here} ({type(child).__name__})"
    return None


def pickle_modules(modules: dict[str, Any]) -> dict[str, bytes]:
    """Each module pickled for its workers; an error names the model and the attribute."""
    blobs = {}
    for name, module in modules.items():
        try:
            blobs[name] = cloudpickle.dumps(module)
        except Exception as e:
            culprit = unpicklable_path(module)
            where = f"attribute self{culprit}" if culprit else f"the {type(module).__name__} object"
            raise RayClusterError(
                f"model '{name}' ({type(module).__name__}) cannot be sent to a Ray worker: "
                f"{where} cannot be pickled ({type(e).__name__}: {e}). Create it in setup() "
                f"instead of __init__ (setup runs in the worker)") from e
    return blobs


# ---- can the cluster host the workers? --------------------------------------------------------
def check_capacity(groups: list[Any], nodes: list[dict]) -> None:
    """Every worker group fits the alive nodes (``ray.nodes()``): enough ``flowrl_device``
    overall and on the nodes offering each group's ``node_resource``."""
    alive = [n for n in nodes if n.get("Alive")]
    have = sum(n["Resources"].get(DEVICE_RESOURCE, 0) for n in alive)
    need = sum(len(g.devices) for g in groups)
    if need > have:
        raise RayClusterError(
            f"the workers need {need} '{DEVICE_RESOURCE}' resources (models "
            f"{', '.join(m for g in groups for m in g.models)}) but the Ray cluster offers "
            f"{have:g}: start the nodes with --resources='{{\"{DEVICE_RESOURCE}\": N}}' or "
            f"lower the models' num_devices / data_parallel_size")
    for res in sorted({g.node_resource for g in groups if g.node_resource}):
        pinned = [g for g in groups if g.node_resource == res]
        models = ", ".join(m for g in pinned for m in g.models)
        field = f"models.{pinned[0].models[0]}.ray_node_resource"
        hosts = [n for n in alive if n["Resources"].get(res, 0) > 0]
        if not hosts:
            custom = sorted({r for n in alive for r in n["Resources"]
                             if not r.startswith("node:") and r not in
                             ("CPU", "GPU", "memory", "object_store_memory", DEVICE_RESOURCE)})
            raise RayClusterError(
                f"models {models} are pinned to Ray resource '{res}' ({field}) but no alive "
                f"node offers it (custom resources: {', '.join(custom) or 'none'})")
        on_hosts = sum(n["Resources"].get(DEVICE_RESOURCE, 0) for n in hosts)
        pinned_need = sum(len(g.devices) for g in pinned)
        if pinned_need > on_hosts:
            raise RayClusterError(
                f"models {models} are pinned to Ray resource '{res}' ({field}) and need "
                f"{pinned_need} '{DEVICE_RESOURCE}' there, but its nodes offer {on_hosts:g}")

