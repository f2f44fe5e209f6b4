"""Moved to :mod:`flowrl.ir.cluster` (the cluster spec is IR data); re-exported for callers."""

from flowrl.ir.cluster import (DEVICES, GB, ClusterSpec, _system_ram_bytes,  # noqa: F401
                               parse_cluster)
