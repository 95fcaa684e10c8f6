"""For tests of limits shared through Redis: when Redis granted each call, by its own
clock (the one the limiter's scripts read), which the load on the test machine cannot
skew the way it skews arrival times at a server."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from redis.asyncio.client import Monitor

__all__ = ["END", "Grant", "most_in_a_window", "note_grants"]

# ECHO this (from any connection) to end `note_grants`.
END = "llmadapters-test-end"


class Grant(NamedTuple):
    """One call's permit: its budget's concurrency key, the call's id, and when (Redis's
    clock, seconds)."""

    key: str
    call: str
    at: float


async def note_grants(monitor: Monitor) -> list[Grant]:
    """The permits Redis grants until the ECHO of `END`: the acquire script's ZADD of a
    call's lease, as MONITOR shows it (a renewal's ZADD says XX)."""
    grants = []
    async for info in monitor.listen():
        words = info["command"].split()
        if info["client_type"] == "lua" and words[0] == "ZADD" and words[2] != "XX":
            grants.append(Grant(words[1], words[-1], info["time"]))
        elif words == ["ECHO", END]:
            return grants
    return grants


def most_in_a_window(times: list[float], window: float) -> int:
    """The most of the sorted ``times`` within any ``window`` seconds."""
    start = most = 0
    for end, at in enumerate(times):
        while at - times[start] > window:
            start += 1
        most = max(most, end - start + 1)
    return most
