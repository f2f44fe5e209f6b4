"""Response-length distribution of a generating model (the long tail).

RL responses are not all ``max_new_tokens`` long: most stop early at EOS, a few run to the
cap. A call's decode time depends on both the mean (tokens to produce) and the tail (how long
the batch waits for its longest sample). The planner models lengths as a log-normal capped at
``max_new_tokens``, from two settings of ``models.<name>.generation``:

* ``expected_new_tokens``: the mean response length (default: ``max_new_tokens``, every
  sample to the cap: no tail, today's estimates);
* ``p99_new_tokens``: the 99th percentile (default: the mean, no spread). The log-normal's
  shape ``sigma`` is solved from mean and p99: ``ln(p99 / mean) = z99 sigma - sigma^2 / 2``.

The expected longest of ``n`` samples is the ``n / (n + 1)`` quantile (capped): the length a
batch of ``n`` waits for under static batching.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

_STD = NormalDist()
Z99 = _STD.inv_cdf(0.99)


def sigma_from_p99(mean: float, p99: float) -> float:
    """Log-normal shape whose mean is ``mean`` and 99th percentile ``p99`` (``p99 >= mean``).

    ``ln p99 = mu + z sigma`` and ``ln mean = mu + sigma^2 / 2`` give
    ``sigma^2 / 2 - z sigma + ln(p99 / mean) = 0``; the smaller root is the one where the
    percentile grows with sigma. Ratios beyond the largest reachable (``e^{z^2/2}``, about
    15x) take that largest sigma, ``z``.
    """
    r = math.log(p99 / mean)
    disc = Z99 * Z99 - 2 * r
    return Z99 - math.sqrt(disc) if disc > 0 else Z99


@dataclass(frozen=True)
class LengthDist:
    """Response lengths: log-normal with mean ``mean`` and shape ``sigma``, capped at ``cap``
    (``sigma == 0``: every response is ``mean`` long)."""

    mean: float
    sigma: float
    cap: int

    @classmethod
    def fixed(cls, n: int) -> "LengthDist":
        """Every response exactly ``n`` tokens (the default: no long tail)."""
        return cls(float(n), 0.0, n)

    @property
    def mu(self) -> float:
        return math.log(self.mean) - self.sigma ** 2 / 2

    def quantile(self, p: float) -> float:
        """Length below which a fraction ``p`` of responses end (capped)."""
        if self.sigma == 0:
            return min(self.mean, self.cap)
        return min(float(self.cap), math.exp(self.mu + self.sigma * _STD.inv_cdf(p)))

    def expected_max(self, n: int) -> float:
        """Expected longest of ``n`` responses: the ``n / (n + 1)`` quantile."""
        return self.quantile(n / (n + 1)) if n > 0 else 0.0

    @property
    def has_tail(self) -> bool:
        return self.sigma > 0 or self.mean < self.cap
