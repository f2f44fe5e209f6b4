"""Non-finite guards: NaN/inf in a call's outputs, a train step's loss or gradient norm, or a
module's weights stops the run (``runtime_args.on_nonfinite: raise``) or drops the batch
(``skip_batch``, counted as ``<model>/nonfinite/skipped_batches``) before anything is synced
or checkpointed.

The pure checks and :class:`NonFiniteError` live in :mod:`flowrl.models.finite` (modules
check their own optimizer steps with them); this module adds the check of a call's output
that the one call protocol (:func:`flowrl.runtime.calls.run_call`) applies in every runtime.
"""

from __future__ import annotations

from typing import Any

from flowrl.models.finite import (SKIPPED_METRIC, NonFiniteError, check_weights,  # noqa: F401
                                  count_nonfinite, first_nonfinite)


def check_call_output(model: str, method: str, out: Any, is_train: bool, policy: str,
                      episode: int, iteration: int) -> str | None:
    """Check a step's returned dict (a train step's metrics, or a step's output batch).

    ``policy="raise"``: a :class:`NonFiniteError`. ``"skip_batch"``: the offending key (the
    caller drops the batch and counts it); ``None`` when everything is finite.
    """
    if not isinstance(out, dict):
        return None
    found = first_nonfinite(out.items())
    if found is None:
        return None
    key, bad, total = found
    if policy == "raise":
        raise NonFiniteError(model, key, bad, total, method, episode, iteration)
    return key
