import pytest

from flowrl.ir.cluster import GB, ClusterSpec, parse_cluster
from flowrl.errors import CompileError


def test_single_node_string():
    c = parse_cluster("8xH100-80GB")
    assert (c.num_nodes, c.devices_per_node, c.num_devices) == (1, 8, 8)
    assert c.device_type == "H100" and c.device_memory_gb == 80
    assert c.capacity_bytes == int(80 * GB * c.memory_utilization)
    assert c.device_tflops > 900 and c.memory_bandwidth_gbps > 3000


def test_multi_node_string_and_links():
    c = parse_cluster("2x8xA100-40GB")
    assert (c.num_nodes, c.devices_per_node, c.num_devices) == (2, 8, 16)
    assert c.memory_bandwidth_gbps == 1555  # the 40GB part has slower HBM than the 80GB one
    assert c.node_of(7) == 0 and c.node_of(8) == 1
    assert c.link_bandwidth((0, 7)) == c.intra_node_bandwidth_gbps * GB
    assert c.link_bandwidth((7, 8)) == c.inter_node_bandwidth_gbps * GB


def test_local_cluster():
    c = parse_cluster("local")
    assert c.num_devices == 1 and c.device_memory_gb > 0.1 and c.memory_utilization == 1.0
    assert parse_cluster("local:4").num_devices == 4
    tiny = ClusterSpec.local(2, memory_gb=0.5)
    assert tiny.num_devices == 2 and tiny.capacity_bytes == int(0.5 * GB)


def test_pydantic_object_and_dict():
    spec = ClusterSpec(num_nodes=2, devices_per_node=4, device_memory_gb=24, device_tflops=100,
                       memory_bandwidth_gbps=900, intra_node_bandwidth_gbps=64)
    assert parse_cluster(spec) is spec
    assert parse_cluster(spec.model_dump()) == spec


@pytest.mark.parametrize("bad,match", [
    ("8xH100", "cannot parse cluster"),
    ("8xQ999-80GB", "unknown device 'Q999'"),
    ("local:0", "local:N"),
])
def test_bad_cluster_strings(bad, match):
    with pytest.raises(CompileError, match=match):
        parse_cluster(bad)


def test_bad_cluster_dict():
    with pytest.raises(CompileError, match="invalid cluster spec"):
        parse_cluster({"devices_per_node": 0})


@pytest.mark.parametrize("cluster", ["8xH100-0GB", "local:0", {
    "devices_per_node": 2, "device_memory_gb": -4, "device_tflops": 1,
    "memory_bandwidth_gbps": 1, "intra_node_bandwidth_gbps": 1}])
def test_no_memory_is_a_compile_error_naming_the_field(cluster):
    field = "device_memory_gb" if cluster != "local:0" else "local:N"
    with pytest.raises(CompileError, match=field):
        parse_cluster(cluster)


def test_local_with_zero_memory_names_the_field():
    with pytest.raises(CompileError, match="invalid cluster spec 'local:2': device_memory_gb: "
                                           "Input should be greater than 0 \\(got 0\\)"):
        ClusterSpec.local(2, 0)
