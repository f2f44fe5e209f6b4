"""Exceptions raised by flowrl. Each names the model, field or line at fault."""

from __future__ import annotations


class FlowRLError(Exception):
    """Base class for every error flowrl raises on purpose."""


class ConfigError(FlowRLError, ValueError):
    """The configuration is invalid; the message names the offending field."""


class TraceError(FlowRLError):
    """A ``@flow`` function could not be traced (control flow on data, unknown method, key clash)."""


class UnknownMethodError(TraceError, AttributeError):
    """A flow (or code) asked a module for a method or attribute it does not have."""


class FlowTypeError(TraceError, TypeError):
    """Something that is not a ``@flow`` function was given where a flow is expected."""


class KeyCollisionError(TraceError):
    """Two upstream outputs feeding one call (or a flow's result) carry the same key."""


class CompileError(FlowRLError):
    """A flow could not be compiled onto the cluster (validation, placement)."""


class OutOfMemoryAtCompileError(CompileError):
    """A device would overflow and the offload policy forbids moving state off it."""


class HostMemoryError(OutOfMemoryAtCompileError):
    """State offloaded to a node's host RAM exceeds it; names the node, bytes and models."""


class StageError(FlowRLError):
    """A module call failed at run time; the message names model, method, episode and inputs."""


class MissingExtraError(FlowRLError, ImportError):
    """An optional backend library is not installed; the message names the pip extra."""


class DatasetError(FlowRLError):
    """A prompt dataset failed (``__getitem__``, ``collate_fn``) or broke the dataset contract;
    the message names the dataset class and the index or indices, the cause is chained."""


class DatasetTypeError(DatasetError, TypeError):
    """``build_dataset`` or ``collate_fn`` returned the wrong type (names the owner and type)."""


class BatchError(FlowRLError, ValueError):
    """A batch's per-sample values disagree on the number of samples; names the key."""


class AlgorithmError(FlowRLError, ValueError):
    """An algorithm-library function (advantage, loss, KL, sampling) got bad input; the message
    names the function and the argument or option."""


class UnknownAlgorithmError(AlgorithmError, LookupError):
    """Nothing is registered under a name (advantage estimator, policy loss, KL estimator);
    the message names the kind and the name and lists the registered names."""
