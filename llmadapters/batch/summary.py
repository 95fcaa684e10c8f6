"""A batch run's figures: `BatchSummary` (outcomes, tokens, cost, cache hits, latency
percentiles) and its `LatencyHistogram`."""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import attrs

from ..pricing import CostTally

if TYPE_CHECKING:
    from ..types import BatchResult

__all__ = ["BatchSummary", "LatencyHistogram"]

_BUCKET = math.log(1.01)


@attrs.define
class LatencyHistogram:
    """Counts of latencies in buckets 1% wide; percentiles within 0.5%."""

    counts: Counter[int] = attrs.field(factory=Counter)
    total: int = 0

    def add(self, seconds: float) -> None:
        self.counts[math.floor(math.log(seconds) / _BUCKET) if seconds > 0 else -(2**31)] += 1
        self.total += 1

    def percentile(self, p: float) -> float | None:
        """The latency under which ``p`` percent of them fall: the middle of its bucket."""
        if not self.total:
            return None
        rank = max(1, math.ceil(p / 100 * self.total))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return 0.0 if bucket == -(2**31) else math.exp((bucket + 0.5) * _BUCKET)
        raise AssertionError("unreachable: the counts add up to the total")


@attrs.define
class BatchSummary:
    """The figures of a batch run; `add` each result, then `as_dict`."""

    started: float = attrs.field(factory=time.monotonic)
    outcomes: Counter[str] = attrs.field(factory=Counter)
    latencies: LatencyHistogram = attrs.field(factory=LatencyHistogram)
    tokens_in: int = 0
    tokens_out: int = 0
    retries: int = 0
    cached: int = 0  # replies answered by the response cache
    costs: CostTally = attrs.field(factory=CostTally)
    unpriced: Counter[str] = attrs.field(factory=Counter)  # replies of models with no known price
    limits: dict[str, dict[str, Any]] = attrs.field(factory=dict)  # AsyncClient.limits() at the end

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())

    @property
    def errors(self) -> int:
        return self.done - self.outcomes["ok"]

    def add(self, result: BatchResult) -> None:
        self.outcomes["ok" if result.error is None else type(result.error).__name__] += 1
        if result.attempts:
            self.latencies.add(result.latency_s)
            self.retries += result.attempts - 1
        reply = result.response
        if reply is None:
            return
        if reply.usage is not None:
            self.tokens_in += reply.usage.prompt_tokens or 0
            self.tokens_out += reply.usage.completion_tokens or 0
        if reply.http is not None and reply.http.cached:
            self.cached += 1
            return  # paid for by the run that stored it
        model = f"{reply.provider}/{reply.model}"
        if reply.cost is None:
            self.unpriced[model] += 1
        else:
            self.costs.add(model, reply.cost)

    def as_dict(self) -> dict[str, Any]:
        wall = time.monotonic() - self.started

        def percentile(p: float) -> float | None:
            value = self.latencies.percentile(p)
            return None if value is None else round(value, 4)

        return {
            "requests": self.done,
            "ok": self.outcomes["ok"],
            "errors": self.errors,
            "errors_by_kind": {k: v for k, v in sorted(self.outcomes.items()) if k != "ok"},
            "retries": self.retries,
            "cached": self.cached,
            "latency_s": {"p50": percentile(50), "p95": percentile(95), "p99": percentile(99)},
            "tokens": {"in": self.tokens_in, "out": self.tokens_out},
            "cost": {**self.costs.as_dict(), "unpriced": dict(sorted(self.unpriced.items()))},
            "wall_s": round(wall, 3),
            "requests_per_s": round(self.done / wall, 1) if wall > 0 else None,
            "limits": self.limits,
        }
