"""Planning an agent rollout module (:class:`flowrl.agents.AgentRollout`): its call is
``max_turns`` turns of decoding plus the environment's time, not one response.

A model whose ``args`` declare ``max_turns`` is planned as an agent rollout:

* decode steps: ``max_turns x generation.max_new_tokens``, at most ``max_response_tokens``
  (environment tokens are appended, not decoded: they count in the sequence only);
* sequence: ``max_prompt_len + max_response_tokens`` when that is longer than the section's;
* host seconds per sample: ``max_turns x planned_env_step_s`` (the user's estimate of one
  environment step) on top of the section's ``cpu_seconds_per_sample``.
"""

from __future__ import annotations

from flowrl.config import ModelConfig


def agent_lengths(cfg: ModelConfig, seq: int, new: int, cpu: float) -> tuple[int, int, float]:
    """``(max_seq_len, decode tokens, cpu seconds per sample)`` of ``cfg``'s model: as given
    unless its ``args`` declare ``max_turns`` (then as in the module docstring)."""
    args = cfg.args
    turns = args.get("max_turns")
    if not turns:
        return seq, new, cpu
    budget = int(args.get("max_response_tokens", turns * new))
    decode = max(1, min(int(turns) * new, budget))
    seq = max(seq, int(args.get("max_prompt_len", max(1, seq - new))) + budget)
    env = int(turns) * float(args.get("planned_env_step_s", 0.0))
    return seq, decode, cpu + env
