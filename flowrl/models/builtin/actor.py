"""``Actor``: the policy trainer of the RL algorithms, on the hf, DeepSpeed or Megatron backend.

One optimizer step per ``train_step`` over the micro-batches of a rollout (keys ``prompt``,
``prompt_mask``, ``response``, ``response_mask``, ``logprobs``, ``advantages`` and, for the
KL-in-loss term, ``ref_logprobs``). The loss of a micro-batch::

    compute_policy_loss(algorithm.policy_loss.name, lp, logprobs, advantages, mask, **options)
    + kl_loss(lp, ref_logprobs, mask, kl_coef=algorithm.kl.coef)    # placement "loss", coef > 0
    - entropy_coef * agg(entropy)                                    # args.entropy_coef > 0

``agg`` / ``max_length`` are the policy loss's (a loss that needs ``max_length``, Dr. GRPO's,
gets ``generation.max_new_tokens`` when its options leave it out). Stale samples
(``runtime_args.max_staleness >= 1``) are corrected as :mod:`flowrl.algorithms.off_policy`
describes: the clip then acts on the corrected per-token ratio, with the loss's clip range and
aggregation; fresh batches run exactly the library loss. ``proximal_logprobs`` gives
decoupled PPO the log-probs under the weights before the step.

Metrics: ``pg_loss``, ``clipfrac``, ``kl`` (when ``ref_logprobs`` are in the batch),
``entropy``, ``grad_norm``, ``lr`` and the loss's own (``approx_kl``, ``clipfrac_low`` ...).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from flowrl.algorithms import (POLICY_LOSSES, AlgorithmSettings, aggregate, compute_policy_loss,
                               kl_estimate, kl_loss, masked_mean)
from flowrl.algorithms import off_policy
from flowrl.errors import AlgorithmError
from flowrl.models.base import outputs
from flowrl.models.builtin.trainer_backends import (BACKENDS, BackendArgs, HFBackend,
                                                    full_sequence, hf_args, new_trainer,
                                                    trainer_class)

Tensor = torch.Tensor


class ActorOptions(BackendArgs):
    """``models.<name>.args`` of an :class:`Actor` (joined with its backend's)."""

    entropy_coef: float = 0.0  # > 0: an entropy bonus in the loss


def loss_settings(name: str, options: dict[str, Any], max_length: int | None) -> dict[str, Any]:
    """The policy loss's options with its defaults filled in (``clip_low``, ``clip_high``,
    ``agg``, ``max_length``); a required ``max_length`` the options leave out is
    ``max_length`` (the generation budget)."""
    params = inspect.signature(POLICY_LOSSES.get(name)).parameters
    resolved = {k: p.default for k, p in params.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not p.empty}
    resolved.update(options)
    if "max_length" in params and resolved.get("max_length") is None and max_length:
        resolved["max_length"] = int(max_length)
    if resolved.get("clip_high") is None and "clip_low" in resolved:
        resolved["clip_high"] = resolved["clip_low"]
    return resolved


def corrected_policy_loss(ratio: off_policy.PolicyRatio, advantages: Tensor, mask: Tensor,
                          settings: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
    """The clipped surrogate of an off-policy-corrected ``ratio`` (and weight) with the loss's
    clip range and aggregation: ``max(-A r, -A clip(r, 1 - low, 1 + high)) * w``."""
    adv = advantages[:, None] if advantages.dim() == 1 else advantages
    adv = adv.to(ratio.ratio.dtype)
    low, high = settings.get("clip_low", 0.2), settings.get("clip_high", 0.2)
    unclipped = -adv * ratio.ratio
    clipped = -adv * torch.clamp(ratio.ratio, 1.0 - low, 1.0 + high)
    per_token = torch.maximum(unclipped, clipped)
    if ratio.weight is not None:  # decoupled PPO's behaviour weight on stale tokens
        per_token = per_token * ratio.weight
    loss = aggregate(per_token, mask, settings.get("agg", "token-mean"),
                     settings.get("max_length"))
    with torch.no_grad():
        d = ratio.log_ratio.detach()
        stats = {"pg_loss": loss.detach(),
                 "clipfrac": masked_mean((clipped > unclipped).to(d.dtype), mask),
                 "approx_kl": masked_mean(torch.expm1(d) - d, mask), **ratio.metrics}
    return loss, stats


class ActorLoss:
    """The policy loss of :class:`Actor`, on any trainer backend (see the module docstring)."""

    def __init__(self, name: str, algorithm: AlgorithmSettings | None = None) -> None:
        super().__init__(name)
        self.algorithm = algorithm if algorithm is not None else AlgorithmSettings()

    def _settings(self) -> dict[str, Any]:
        pl = self.algorithm.policy_loss
        return loss_settings(pl.name, pl.options, self.model_config.generation.max_new_tokens)

    def policy_loss(self, lp: Tensor, mb: dict, mask: Tensor,
                    version: int) -> tuple[Tensor, dict[str, Tensor]]:
        """The policy-gradient term of micro-batch ``mb`` (``lp`` with gradient)."""
        pl, s = self.algorithm.policy_loss, self._settings()
        rows = off_policy.stale_rows(mb, version)
        if rows is None or self.runtime_args.off_policy.correction == "none":
            opts = {k: v for k, v in s.items() if k in pl.options or k == "max_length"}
            return compute_policy_loss(pl.name, lp, self._old_logprobs(lp, mb),
                                       mb["advantages"].to(lp.device), mask, **opts)
        on_device = {k: mb[k].to(lp.device) for k in (off_policy.BEHAVIOUR_KEY,
                                                      off_policy.PROXIMAL_KEY) if k in mb}
        ratio = off_policy.policy_ratio(lp, {**mb, **on_device}, mask,
                                        self.runtime_args.off_policy, version)
        return corrected_policy_loss(ratio, mb["advantages"].to(lp.device), mask, s)

    def _old_logprobs(self, lp: Tensor, mb: dict) -> Tensor:
        """The batch's behaviour log-probs; without them (the Policy's ``behaviour_logprobs:
        false``) these weights' own, detached: the same numbers when the weights that
        generated the batch take exactly one optimizer step on it, which is checked."""
        if "logprobs" in mb:
            return mb["logprobs"].to(lp.device)
        ra = self.runtime_args
        steps = ra.sample_per_episode // ra.train_global_batch_size
        problems = [f"runtime_args.{k}={v}" for k, v in (
            ("num_training_epoch", ra.num_training_epoch), ("max_staleness", ra.max_staleness))
            if v != (1 if k == "num_training_epoch" else 0)]
        if steps != 1:
            problems.append(f"{steps} optimizer steps per episode (runtime_args."
                            f"train_global_batch_size={ra.train_global_batch_size}, "
                            f"sample_per_episode={ra.sample_per_episode})")
        if problems:
            raise AlgorithmError(
                f"{self.name}: the batch has no 'logprobs' (the Policy's args.behaviour_logprobs "
                f"is false). Its own log-probs stand in for them only when each rollout is "
                f"trained once, in one optimizer step, by the weights that generated it; here "
                f"{'; '.join(problems)}. Set behaviour_logprobs: true on the policy.")
        return lp.detach()

    def kl_term(self, lp: Tensor, mb: dict, mask: Tensor) -> tuple[Tensor | None, dict]:
        """KL-in-loss (placement ``loss``, coef > 0) or, with a reference in the batch, the
        ``kl`` metric alone."""
        kl = self.algorithm.kl
        in_loss = kl.placement == "loss" and kl.coef > 0
        if "ref_logprobs" not in mb:
            if in_loss:
                raise AlgorithmError(
                    f"{self.name}: algorithm.kl.coef={kl.coef} with placement 'loss' needs batch "
                    f"key 'ref_logprobs', produced by the Reference's forward_step")
            return None, {}
        ref = mb["ref_logprobs"].to(lp.device)
        if not in_loss:
            with torch.no_grad():
                return None, {"kl": masked_mean(kl_estimate(lp, ref, mask, kl.estimator), mask)}
        s = self._settings()
        term, stats = kl_loss(lp, ref, mask, kl_coef=kl.coef, estimator=kl.estimator,
                              agg=s.get("agg", "token-mean"), max_length=s.get("max_length"))
        return term, stats

    def _check_keys(self, mb: dict) -> None:
        for key in ("prompt", "prompt_mask", "response", "response_mask", "advantages"):
            if key not in mb:
                raise AlgorithmError(
                    f"{self.name}: policy loss {self.algorithm.policy_loss.name!r} needs batch "
                    f"key {key!r} (the Policy's forward_step and the Advantage module produce "
                    f"the rollout keys); the micro-batch has {', '.join(sorted(mb))}")

    def micro_batch_loss(self, model: Any, mb: dict, version: int) -> tuple[Tensor, dict]:
        """Loss and stats of one micro-batch through ``model`` (the backend's forward)."""
        self._check_keys(mb)
        tokens, attn, p = full_sequence(mb)
        lp, ent = self.token_logprobs(model, tokens, attn, p, return_entropy=True)
        mask = mb["response_mask"].to(lp.device).to(lp.dtype)
        loss, stats = self.policy_loss(lp, mb, mask, version)
        term, kl_stats = self.kl_term(lp, mb, mask)
        if term is not None:
            loss = loss + term
        coef = self.typed_args.entropy_coef
        if coef > 0:
            s = self._settings()
            loss = loss - coef * aggregate(ent, mask, s.get("agg", "token-mean"),
                                           s.get("max_length"))
        with torch.no_grad():
            stats = {**stats, **kl_stats, "entropy": masked_mean(ent.detach(), mask)}
        return loss, stats

    def train_step(self, data: list[dict], iteration: int) -> dict[str, float]:
        """One optimizer step over the micro-batches ``data``."""
        version = off_policy.trainer_version(self, iteration, data)  # corrects stale samples
        return self.run_micro_batches(data, lambda model, mb: self.micro_batch_loss(
            model, mb, version))

    @outputs("proximal_logprobs")
    def proximal_logprobs(self, data: dict | list[dict], iteration: int = 0) -> dict:
        """Log-probs of the responses under the current weights, before this step's update
        (decoupled PPO). ``data``: a batch, or the train step's micro-batches (then one
        tensor per micro-batch)."""
        parts = data if isinstance(data, list) else [data]
        with torch.no_grad():
            lps = [self.token_logprobs(self.forward_model, *full_sequence(mb)).cpu()
                   * mb["response_mask"] for mb in parts]
        return {"proximal_logprobs": lps if isinstance(data, list) else lps[0]}


class Actor(ActorLoss, HFBackend):
    """The policy trainer (see the module docstring). ``Actor(name, algorithm)`` gives the hf
    trainer, or the DeepSpeed / Megatron one when ``models.<name>.args.backend`` says so
    (those are not subclasses of ``Actor``; they share :class:`ActorLoss`)."""

    Args = hf_args(ActorOptions)

    def __new__(cls, *args: Any, **kwargs: Any):
        return new_trainer(cls, Actor, ActorLoss, ActorOptions, BACKENDS, "actor", args, kwargs)


def actor_class(backend: str) -> type:
    """The actor class on ``backend`` (``hf``: :class:`Actor`)."""
    if backend == "hf":
        return Actor
    return trainer_class(ActorLoss, ActorOptions, backend, "Actor")
