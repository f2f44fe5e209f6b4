"""Typed settings of the algorithm library (a standalone section; ``flowrl train`` will mount
it as ``algorithm:`` in the config)::

    algorithm:
      advantage: {estimator: grpo, options: {std: unbiased, eps: 1.0e-4}}
      policy_loss: {name: dapo, options: {clip_high: 0.28}}
      kl: {coef: 0.0, estimator: k3, placement: loss}     # coef 0: no reference model runs
      dynamic_sampling: {enabled: true, max_batches: 4}
      overlong: {max_length: 512, buffer: 128, penalty_factor: 1.0}

Names are checked against the registries and options against the registered function's
signature, so a typo fails when the config is read, not mid-run.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flowrl.algorithms.advantages import advantage_inputs
from flowrl.algorithms.registry import ADVANTAGES, KL_ESTIMATORS, POLICY_LOSSES, check_options
from flowrl.config.types import Float, Int
from flowrl.errors import ConfigError

#: Options that are data or set elsewhere, never written in ``options``.
_NOT_OPTIONS = {"group_size": "runtime_args.num_inference_per_prompt", "kl": "kl settings",
                "kl_coef": "algorithm.kl.coef"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AdvantageSettings(_Strict):
    """Which advantage estimator and its options (see :mod:`flowrl.algorithms.advantages`)."""

    estimator: str = Field("grpo", description="registered advantage estimator")
    options: dict[str, Any] = Field(default_factory=dict, description="its keyword options")

    @model_validator(mode="after")
    def _known(self) -> "AdvantageSettings":
        fn = ADVANTAGES.get(self.estimator)
        for key in self.options:
            if key in _NOT_OPTIONS:
                raise ValueError(f"options.{key} is set by {_NOT_OPTIONS[key]}")
            if key in advantage_inputs(self.estimator):
                raise ValueError(f"options.{key} is an input computed by a model, not an option")
        check_options(f"advantage estimator {self.estimator!r}", fn, self.options)
        return self


class PolicyLossSettings(_Strict):
    """Which policy loss and its options (see :mod:`flowrl.algorithms.losses`)."""

    name: str = Field("ppo", description="registered policy loss")
    options: dict[str, Any] = Field(default_factory=dict, description="its keyword options")

    @model_validator(mode="after")
    def _known(self) -> "PolicyLossSettings":
        check_options(f"policy loss {self.name!r}", POLICY_LOSSES.get(self.name), self.options)
        return self


class KLSettings(_Strict):
    """The KL(policy || reference) penalty: how much, which estimator, where it goes."""

    coef: Float = Field(0.0, ge=0, description="KL coefficient beta; 0 disables the penalty")
    estimator: str = Field("k3", description="registered KL estimator (k1, k2, k3)")
    placement: Literal["reward", "loss"] = Field(
        "loss", description="subtract from the token rewards, or add to the policy loss")

    @field_validator("estimator")
    @classmethod
    def _registered(cls, v: str) -> str:
        KL_ESTIMATORS.get(v)
        return v

    @property
    def needs_reference(self) -> bool:
        """A reference model only has to run when the penalty is on."""
        return self.coef > 0


class DynamicSamplingSettings(_Strict):
    """DAPO's dynamic sampling (see :mod:`flowrl.algorithms.sampling`)."""

    enabled: bool = Field(False, description="drop groups whose rewards do not vary, refill")
    max_batches: Int | None = Field(None, ge=1, description="rollout batches per episode "
                                                            "before training on what was kept "
                                                            "(None: one pass over the prompts)")


class OverlongSettings(_Strict):
    """DAPO's soft overlong punishment; off while ``max_length`` is None."""

    max_length: Int | None = Field(None, ge=1, description="L: responses longer get -1")
    buffer: Int = Field(0, ge=0, description="L_b: the linear ramp before L")
    penalty_factor: Float = Field(1.0, ge=0, description="scale of the penalty")

    @model_validator(mode="after")
    def _buffer_fits(self) -> "OverlongSettings":
        if self.max_length is not None and not 0 < self.buffer <= self.max_length:
            raise ValueError(f"buffer must be in (0, max_length={self.max_length}], got "
                             f"{self.buffer}")
        return self

    @property
    def enabled(self) -> bool:
        return self.max_length is not None


class AlgorithmSettings(_Strict):
    """Everything the algorithm library needs from a config."""

    advantage: AdvantageSettings = Field(default_factory=AdvantageSettings)
    policy_loss: PolicyLossSettings = Field(default_factory=PolicyLossSettings)
    kl: KLSettings = Field(default_factory=KLSettings)
    dynamic_sampling: DynamicSamplingSettings = Field(default_factory=DynamicSamplingSettings)
    overlong: OverlongSettings = Field(default_factory=OverlongSettings)

    @classmethod
    def from_dict(cls, data: dict[str, Any], section: str = "algorithm") -> "AlgorithmSettings":
        """Validate ``data``; errors become one :class:`~flowrl.errors.ConfigError` naming each
        field as ``algorithm.<path>``."""
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            lines = [f"invalid {section} settings:"]
            for err in e.errors():
                loc = ".".join([section, *map(str, err["loc"])])
                lines.append(f"  {loc}: {err['msg'].removeprefix('Value error, ')}")
            raise ConfigError("\n".join(lines)) from None
