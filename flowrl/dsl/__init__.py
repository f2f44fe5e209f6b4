"""The DSL: ``@flow`` and the tracer that turns a flow function into a graph."""

from flowrl.dsl.discover import find_modules
from flowrl.dsl.flow import Flow, flow
from flowrl.dsl.tracer import DataProxy, Tracer

__all__ = ["Flow", "flow", "DataProxy", "Tracer", "find_modules"]
