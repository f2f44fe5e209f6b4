"""Cluster descriptions (data): ``"8xH100-80GB"``, ``"2x8xA100-40GB"``, ``"local"`` or a
:class:`ClusterSpec`, and the catalogue of known devices.

Units, everywhere in the compiler: memory in bytes internally, GB (1e9 bytes) in the spec;
FLOP/s in TFLOP/s (1e12) in the spec; bandwidths in GB/s (1e9 bytes/s) per device and per
direction. Device ids are global: node ``k`` holds ids ``k*devices_per_node ...``.
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flowrl.errors import CompileError

GB = 1e9

#: Driver-side seconds (in microseconds) of one call dispatched to one worker and its result
#: collected, per runtime, measured by ``benchmarks/runtime_overhead.py`` on an idle 2-core
#: machine (benchmarks/RESULTS.md, "Runtime overhead"): Ray adds 29 ms per tiny-PPO episode
#: over about 40 actor calls (round trip 0.73 ms); the in-process ``local`` runtime is
#: within noise of a hand-written loop over the same modules (0.139 vs 0.140 s per episode),
#: so its per-call cost is below what that measurement resolves and counted as 0.
RUNTIME_CALL_OVERHEAD_US: dict[str, float] = {"local": 0.0, "ray": 700.0}


class ClusterSpec(BaseModel):
    """What planning needs to know about a cluster (homogeneous devices)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("custom", description="label shown by explain")
    num_nodes: int = Field(1, ge=1)
    devices_per_node: int = Field(..., ge=1)
    device_type: str = Field("custom", description="e.g. H100; informational")
    device_memory_gb: float = Field(..., gt=0, description="memory per device, GB (1e9 bytes)")
    device_tflops: float = Field(..., gt=0, description="peak dense bf16 TFLOP/s per device")
    memory_bandwidth_gbps: float = Field(..., gt=0, description="device memory bandwidth, GB/s")
    intra_node_bandwidth_gbps: float = Field(..., gt=0,
                                             description="device<->device in a node, GB/s")
    inter_node_bandwidth_gbps: float = Field(25.0, gt=0,
                                             description="per device across nodes, GB/s")
    host_bandwidth_gbps: float = Field(25.0, gt=0, description="device<->host (offload), GB/s")
    host_memory_gb: float | None = Field(
        None, gt=0, description="host RAM per node, GB: where offloaded state lives (None: "
        "unknown, not checked; the device catalogue gives it)")
    host_memory_utilization: float = Field(
        0.8, gt=0, le=1, description="usable fraction of host RAM (the rest: the OS, worker "
        "processes, datasets, pinned staging buffers)")
    collective_latency_us: float = Field(
        10.0, ge=0, description="fixed cost of one all-reduce inside a node, microseconds "
        "(launch + synchronisation; dominates the tiny all-reduces of decoding)")
    inter_node_latency_us: float = Field(30.0, ge=0,
                                         description="the same across nodes, microseconds")
    flops_efficiency: float = Field(0.5, gt=0, le=1, description="achieved / peak FLOP/s")
    memory_utilization: float = Field(
        0.9, gt=0, le=1,
        description="usable fraction of device memory (the rest: CUDA context, fragmentation)")
    runtime: Literal["local", "ray"] = Field(
        "local", description="the runtime the plan is estimated for (an engine sets its "
        "config's `runtime`); picks the per-call dispatch overhead")
    call_overhead_us: float | None = Field(
        None, ge=0, description="driver-side cost of dispatching one call to one worker and "
        "collecting its result, microseconds (None: the runtime's measured figure, "
        "RUNTIME_CALL_OVERHEAD_US)")
    host_cores: float | None = Field(
        None, gt=0, description="host CPU cores the devices' work runs on (virtual devices "
        "of a `local` cluster); when more devices are busy at once than there are cores, each "
        "runs at cores / busy of one core's speed. None: devices are independent (GPUs)")

    # ---- derived ------------------------------------------------------------------------
    @property
    def num_devices(self) -> int:
        return self.num_nodes * self.devices_per_node

    @property
    def capacity_bytes(self) -> int:
        """Bytes the planner may fill on one device."""
        return int(self.device_memory_gb * GB * self.memory_utilization)

    @property
    def flops(self) -> float:
        """Achievable FLOP/s per device (peak times efficiency)."""
        return self.device_tflops * 1e12 * self.flops_efficiency

    @property
    def memory_bandwidth(self) -> float:
        return self.memory_bandwidth_gbps * GB

    @property
    def host_bandwidth(self) -> float:
        return self.host_bandwidth_gbps * GB

    @property
    def host_capacity_bytes(self) -> int:
        """Bytes of offloaded state one node's host RAM may hold (0: not checked)."""
        if self.host_memory_gb is None:
            return 0
        return int(self.host_memory_gb * GB * self.host_memory_utilization)

    @property
    def call_overhead(self) -> float:
        """Seconds of one call's dispatch to one worker (see ``call_overhead_us``)."""
        us = self.call_overhead_us
        return (RUNTIME_CALL_OVERHEAD_US[self.runtime] if us is None else us) * 1e-6

    @property
    def shares_cores(self) -> bool:
        """Whether devices busy at once may slow each other (fewer host cores than devices)."""
        return self.host_cores is not None and self.host_cores < self.num_devices

    def speed(self, busy_devices: int) -> float:
        """Fraction of its full speed each of ``busy_devices`` busy devices runs at:
        ``min(1, host_cores / busy)`` on shared cores, else 1."""
        if self.host_cores is None or busy_devices <= self.host_cores:
            return 1.0
        return self.host_cores / busy_devices

    def node_of(self, device: int) -> int:
        return device // self.devices_per_node

    def collective_latency(self, devices: tuple[int, ...] | list[int] | set[int]) -> float:
        """Seconds of fixed cost of one collective over ``devices`` (in a node or across)."""
        nodes = {self.node_of(d) for d in devices}
        us = self.collective_latency_us if len(nodes) <= 1 else self.inter_node_latency_us
        return us * 1e-6

    def link_bandwidth(self, devices: tuple[int, ...] | list[int] | set[int]) -> float:
        """Bytes/s between devices of this set: NVLink-class inside a node, network across."""
        nodes = {self.node_of(d) for d in devices}
        gbps = self.intra_node_bandwidth_gbps if len(nodes) <= 1 else self.inter_node_bandwidth_gbps
        return gbps * GB

    def describe(self) -> str:
        return (f"{self.name}: {self.num_nodes} node(s) x {self.devices_per_node} "
                f"{self.device_type} ({self.device_memory_gb:g} GB, "
                f"{self.device_tflops:g} TFLOP/s, {self.memory_bandwidth_gbps:g} GB/s)")

    # ---- constructors -------------------------------------------------------------------
    @classmethod
    def local(cls, num_devices: int = 1, memory_gb: float | None = None) -> "ClusterSpec":
        """Virtual devices on this machine.

        Without ``memory_gb`` the machine's RAM is split evenly between ``num_devices``
        (``memory_utilization`` 1.0: the planner may use all of it). Speeds are rough CPU
        figures (100 GFLOP/s, 20 GB/s); "host" transfers are memory copies, and as virtual
        devices and host share one RAM, host memory is not checked (``host_memory_gb`` None).
        The devices share this machine's cores (``host_cores``: the CPUs this process may
        run on), so more busy devices than cores slow each other in the timeline.
        """
        if memory_gb is None:
            memory_gb = _system_ram_bytes() / GB / num_devices
        return _build(f"local:{num_devices}", name=f"local:{num_devices}", num_nodes=1, devices_per_node=num_devices,
                   device_type="cpu", device_memory_gb=memory_gb, device_tflops=0.1,
                   memory_bandwidth_gbps=20.0, intra_node_bandwidth_gbps=10.0,
                   inter_node_bandwidth_gbps=10.0, host_bandwidth_gbps=20.0,
                   collective_latency_us=50.0,
                   flops_efficiency=1.0, memory_utilization=1.0, host_cores=host_cpu_count())


#: Known device families: peak dense bf16 TFLOP/s, HBM GB/s, NVLink GB/s (per direction,
#: inside a node), network GB/s per device across nodes (``net``: one 200/400 Gb/s NIC per
#: device), PCIe GB/s, host RAM per node in GB (``host_mem``: the vendor's 8-GPU server, e.g.
#: DGX H100 2 TB, DGX A100 320GB 1 TB; ``host_mem_by_mem`` per device-memory size) and
#: per-memory-size overrides of the HBM bandwidth. Public spec-sheet numbers.
DEVICES: dict[str, dict[str, Any]] = {
    "H100": dict(tflops=989, bw=3350, link=450, net=50, host=50, host_mem=2048, memory=[80],
                 bw_by_mem={94: 3900}),
    "H200": dict(tflops=989, bw=4800, link=450, net=50, host=50, host_mem=2048, memory=[141]),
    "H800": dict(tflops=989, bw=3350, link=200, net=50, host=50, host_mem=2048, memory=[80]),
    "H20": dict(tflops=148, bw=4000, link=450, net=50, host=50, host_mem=2048, memory=[96]),
    "B200": dict(tflops=2250, bw=8000, link=900, net=50, host=55, host_mem=4096,
                 memory=[180, 192]),
    "A100": dict(tflops=312, bw=2039, link=300, net=25, host=25, host_mem=2048, memory=[40, 80],
                 bw_by_mem={40: 1555}, host_mem_by_mem={40: 1024}),
    "A800": dict(tflops=312, bw=2039, link=200, net=25, host=25, host_mem=2048, memory=[40, 80],
                 bw_by_mem={40: 1555}, host_mem_by_mem={40: 1024}),
    "L40S": dict(tflops=362, bw=864, link=32, net=25, host=25, host_mem=1024, memory=[48]),
    "L4": dict(tflops=121, bw=300, link=32, net=12.5, host=25, host_mem=512, memory=[24]),
    "A10": dict(tflops=125, bw=600, link=32, net=12.5, host=25, host_mem=512, memory=[24]),
    "V100": dict(tflops=125, bw=900, link=150, net=12.5, host=12, host_mem=512,
                 memory=[16, 32]),
    "MI300X": dict(tflops=1307, bw=5300, link=448, net=50, host=50, host_mem=2048,
                   memory=[192]),
}

_PATTERN = re.compile(r"^(?:(\d+)x)?(\d+)x([A-Za-z0-9]+)-(\d+(?:\.\d+)?)GB$", re.IGNORECASE)


def host_cpu_count() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _system_ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 16 GB
        return int(16 * GB)


def _build(label: str, **fields: Any) -> ClusterSpec:
    """A validated :class:`ClusterSpec`; a bad field (e.g. 0 GB of memory) is a
    :class:`CompileError` naming the cluster and the field."""
    try:
        return ClusterSpec.model_validate(fields)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}"
            + (f" (got {err['input']!r})" if err["type"] != "missing" else "")
            for err in e.errors())
        raise CompileError(f"invalid cluster spec '{label}': {problems}") from None


def parse_cluster(cluster: str | ClusterSpec | dict) -> ClusterSpec:
    """A :class:`ClusterSpec` from a spec string, a dict of its fields, or itself.

    Strings: ``"NxDEVICE-MEMGB"`` (one node), ``"MxNxDEVICE-MEMGB"`` (M nodes), ``"local"``
    (one virtual device with this machine's RAM) or ``"local:N"`` (N virtual devices).
    """
    if isinstance(cluster, ClusterSpec):
        return cluster
    if isinstance(cluster, dict):
        return _build(str(cluster.get("name", "custom")), **cluster)
    if not isinstance(cluster, str):
        raise CompileError(f"cluster must be a string or ClusterSpec, got {type(cluster).__name__}")
    text = cluster.strip()
    if text.lower() == "local" or text.lower().startswith("local:"):
        n = text.split(":", 1)[1] if ":" in text else "1"
        if not n.isdigit() or int(n) < 1:
            raise CompileError(f"cluster '{cluster}': expected 'local' or 'local:N' with N >= 1")
        return ClusterSpec.local(int(n))
    m = _PATTERN.match(text)
    if not m:
        raise CompileError(
            f"cannot parse cluster '{cluster}'; expected e.g. '8xH100-80GB', '2x8xA100-40GB' "
            f"or 'local'")
    nodes, per_node, family, mem = int(m.group(1) or 1), int(m.group(2)), m.group(3), m.group(4)
    key = next((k for k in DEVICES if k.lower() == family.lower()), None)
    if key is None:
        raise CompileError(
            f"unknown device '{family}' in cluster '{cluster}'; known: {', '.join(DEVICES)} "
            f"(or pass a ClusterSpec with its numbers)")
    if nodes < 1 or per_node < 1:
        raise CompileError(f"cluster '{cluster}' has no devices")
    d = DEVICES[key]
    memory = float(mem)
    bw = d.get("bw_by_mem", {}).get(int(memory), d["bw"])
    # Host RAM scales with the devices of a node (the catalogue's figure is for 8).
    host_mem = d.get("host_mem_by_mem", {}).get(int(memory), d["host_mem"]) * per_node / 8
    return _build(text, name=text, num_nodes=nodes, devices_per_node=per_node, device_type=key,
                       device_memory_gb=memory, device_tflops=d["tflops"],
                       memory_bandwidth_gbps=bw, intra_node_bandwidth_gbps=d["link"],
                       inter_node_bandwidth_gbps=d["net"], host_bandwidth_gbps=d["host"],
                       host_memory_gb=host_mem)
