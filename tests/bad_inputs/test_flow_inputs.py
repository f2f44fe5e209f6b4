"""Bad flows: wrong parameters, non-flows where flows are expected, values a flow cannot use.

Every case asserts the error class and that the message names the flow, model or line.
"""

from __future__ import annotations

import pytest

from flowrl import Engine, Evaluator, flow
from flowrl.errors import FlowRLError, FlowTypeError, TraceError, UnknownMethodError

HERE = __file__


def _train(trainer):
    @flow
    def train(batch):
        trainer.train_step(batch)

    return train


def _two(a, b):
    pass


def _none():
    pass


def _star(*batches):
    pass


def _kwonly(batch, *, scale):
    pass


def _kwargs(batch, **extra):
    pass


@pytest.mark.parametrize("fn, given", [
    (_two, r"\(a, b\)"), (_none, r"\(\)"), (_star, r"\(\*batches\)"),
    (_kwonly, r"\(batch, \*, scale\)"), (_kwargs, r"\(batch, \*\*extra\)"),
])
def test_a_flow_takes_exactly_one_parameter(tiny_flow_env, fn, given):
    f = flow(fn)
    line = fn.__code__.co_firstlineno
    with pytest.raises(TraceError, match=rf"flow '{fn.__name__}' at {HERE}:{line} takes {given}; "
                                         rf"a flow takes exactly one parameter"):
        f.trace()


def test_engine_with_a_two_parameter_rollout_fails_at_construction(tiny_flow_env):
    echo, trainer = tiny_flow_env

    @flow
    def rollout(batch, extra):
        return echo.forward_step(batch)

    with pytest.raises(TraceError, match=r"flow 'rollout' at .*test_flow_inputs.py:\d+ takes "
                                         r"\(batch, extra\)"):
        Engine(rollout, _train(trainer))


@pytest.mark.parametrize("role", ["rollout", "train"])
def test_engine_given_a_plain_function_names_the_role(tiny_flow_env, role):
    echo, trainer = tiny_flow_env

    def plain(batch):
        return echo.forward_step(batch)

    flows = {"rollout": flow(plain), "train": _train(trainer)}
    flows[role] = plain
    with pytest.raises(FlowTypeError, match=rf"{role} must be a @flow function, got function"):
        Engine(flows["rollout"], flows["train"])


def test_evaluator_given_a_lambda_names_eval_flow(tiny_flow_env):
    with pytest.raises(FlowTypeError, match=r"eval_flow must be a @flow function, got function"):
        Evaluator(lambda batch: batch)
    assert issubclass(FlowTypeError, FlowRLError) and issubclass(FlowTypeError, TypeError)


def test_keyword_arguments_to_a_module_call_name_the_model(tiny_flow_env):
    echo, _ = tiny_flow_env

    @flow
    def f(batch):
        return echo.forward_step(data=batch)

    with pytest.raises(TraceError, match=r"echo\.forward_step called with keyword arguments "
                                         r"\['data'\] at .*test_flow_inputs.py:\d+"):
        f.trace()


def test_a_constant_passed_to_a_module_names_the_model_and_type(tiny_flow_env):
    echo, _ = tiny_flow_env

    @flow
    def f(batch):
        return echo.forward_step({"x": 1})

    with pytest.raises(TraceError, match=r"echo\.forward_step got a dict at "
                                         r".*test_flow_inputs.py:\d+"):
        f.trace()


def test_a_flow_returning_a_dict_names_the_flow(tiny_flow_env):
    echo, _ = tiny_flow_env

    @flow
    def bad_result(batch):
        return {"y": echo.forward_step(batch)}

    with pytest.raises(TraceError, match=r"flow 'bad_result' returned a dict"):
        bad_result.trace()


def test_an_unknown_method_names_the_model(tiny_flow_env):
    echo, _ = tiny_flow_env

    @flow
    def f(batch):
        return echo.generate(batch)

    with pytest.raises(UnknownMethodError, match=r"echo"):
        f.trace()


def test_a_flow_calling_no_module_names_the_flow(tiny_flow_env):
    @flow
    def idle(batch):
        return None

    with pytest.raises(TraceError, match=r"flow 'idle' calls no module methods"):
        idle.trace()


def test_calling_a_flow_directly_names_the_flow(tiny_flow_env):
    echo, _ = tiny_flow_env

    @flow
    def rollout(batch):
        return echo.forward_step(batch)

    with pytest.raises(TraceError, match=r"flow 'rollout' is not called directly"):
        rollout({"x": 1})


def test_a_truth_test_on_flow_data_names_the_line(tiny_flow_env):
    echo, _ = tiny_flow_env

    @flow
    def f(batch):
        out = echo.forward_step(batch)
        if out:
            return out
        return out

    with pytest.raises(TraceError, match=r"truth test\) on the output of echo\.forward_step at "
                                         r".*test_flow_inputs.py:\d+"):
        f.trace()
