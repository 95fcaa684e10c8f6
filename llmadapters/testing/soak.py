"""A soak run: a batch of endless requests with random faults, at high concurrency, for
a while; samples open file descriptors, RSS and asyncio tasks as it goes, and checks that
every request read got exactly one result.

Used by ``bench/soak.py`` (30 minutes) and by a short test.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import attrs

from ..client import AsyncClient

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["Sample", "SoakReport", "soak"]

# Faults drawn at random for about 1 request in 5; those retried succeed on a second
# attempt (x-fake-fail-times: 1), the others end in an error record.
_FAULTS = ("fail-429", "fail-500", "fail-503", "reset", "reset-mid-body", "truncate", "malformed", "fail-400")


@attrs.frozen
class Sample:
    seconds: float
    done: int
    open_fds: int
    rss_mib: float
    tasks: int


@attrs.frozen
class SoakReport:
    """Attributes:
    read: requests taken from the input.
    dropped: of those, the ones never started because the run was stopped.
    outcomes: results by outcome (``ok`` or the error class).
    """

    read: int
    dropped: int
    outcomes: dict[str, int]
    samples: list[Sample]

    @property
    def accounted(self) -> bool:
        """Every request read got exactly one result, or was never started."""
        return sum(self.outcomes.values()) + self.dropped == self.read


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _requests(seed: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    i = 0
    while True:
        model = f"soak/echo+{rng.choice(_FAULTS)}" if rng.random() < 0.2 else "soak/echo"
        yield {"custom_id": f"s{i}", "model": model, "messages": [{"role": "user", "content": f"soak {i}"}]}
        i += 1


async def soak(
    base_url: str, *, seconds: float, concurrency: int = 256, every: float = 5.0, seed: int = 0
) -> SoakReport:
    """Run against the fake server at ``base_url`` for ``seconds``."""
    providers = {"soak": {"base_url": base_url, "headers": {"x-fake-fail-times": "1", "x-fake-retry-after": "0"}}}
    retry = {"initial_delay": 0.01, "max_delay": 0.05}
    outcomes: Counter[str] = Counter()
    samples: list[Sample] = []
    started = time.monotonic()

    def sample() -> None:
        done = sum(outcomes.values())
        samples.append(Sample(time.monotonic() - started, done, _open_fds(), _rss_mib(), len(asyncio.all_tasks())))

    async with AsyncClient({}, providers=providers, retry=retry, limits={"adaptive": False}) as client:
        run = client.batch(_requests(seed), concurrency=concurrency)
        sample()
        next_sample = started + every
        async for result in run:
            outcomes["ok" if result.error is None else type(result.error).__name__] += 1
            now = time.monotonic()
            if now >= next_sample:
                sample()
                next_sample = now + every
            if now - started >= seconds:
                run.stop()
    sample()
    return SoakReport(read=run.read, dropped=run.dropped, outcomes=dict(outcomes), samples=samples)
