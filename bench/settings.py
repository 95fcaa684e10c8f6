"""What a benchmark run measures, and how much: one typed value, from the command line
or the defaults of a full run and of ``--quick``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

POOL = 1024  # connections each client may open, unless more calls are in flight
MAX_WAIT = 300.0  # seconds, at most, that the fake server holds a reply in the memory runs
NEW_CONNECTION_S = 0.0005  # a client's CPU to open a connection, about (see measure.memory_wait)


@dataclass(frozen=True)
class Settings:
    """The sizes of one run. `full` and `quick` give the defaults; `with_overrides` the
    command line's changes to them."""

    quick: bool
    n: int  # calls per client and concurrency
    rounds: int  # figures are their medians
    concurrency: tuple[int, ...]  # of the unary calls against nginx
    stream_concurrency: int
    in_flight: int  # calls in flight at once in the memory runs
    in_flight_wait: float  # the least seconds the fake server holds each of their replies
    memory_rounds: int  # rounds with a memory run
    latency_concurrency: int
    latency_n: int
    latency_ttft_ms: int  # the latency model: time to the first token
    latency_tps: int  # ... then tokens per second
    batch_lines: tuple[int, ...]  # line counts of the batch command's runs
    batch_concurrency: int
    import_repeat: int
    sync_n: int  # calls of the blocking client, one after another

    @classmethod
    def full(cls) -> Settings:
        return cls(
            quick=False,
            n=3000,
            rounds=3,
            concurrency=(1, 64, 256, 1024),
            stream_concurrency=64,
            in_flight=10_000,
            in_flight_wait=10.0,
            memory_rounds=1,
            latency_concurrency=256,
            latency_n=1024,
            latency_ttft_ms=300,
            latency_tps=50,
            batch_lines=(10_000, 1_000_000),
            batch_concurrency=256,
            import_repeat=7,
            sync_n=200,
        )

    @classmethod
    def quick_run(cls) -> Settings:
        """A smoke run: tiny N, one round, concurrency 1 and 4."""
        return dataclasses.replace(
            cls.full(),
            quick=True,
            n=60,
            rounds=1,
            concurrency=(1, 4),
            stream_concurrency=4,
            in_flight=200,
            in_flight_wait=0.3,
            latency_concurrency=16,
            latency_n=16,
            batch_lines=(200, 2000),
            import_repeat=3,
            sync_n=20,
        )

    def with_overrides(self, **changes: Any) -> Settings:
        """These settings with ``changes`` (None: left as they are); concurrency levels
        sorted, once each."""
        given = {name: value for name, value in changes.items() if value is not None}
        if "concurrency" in given:
            given["concurrency"] = tuple(sorted(set(given["concurrency"])))
        if "batch_lines" in given:
            given["batch_lines"] = tuple(given["batch_lines"])
        return dataclasses.replace(self, **given)

    def as_dict(self) -> dict[str, Any]:
        """For performance.json (lists, not tuples), with the constants the page quotes."""
        figures = {name: list(v) if isinstance(v, tuple) else v for name, v in dataclasses.asdict(self).items()}
        return {**figures, "max_wait_s": MAX_WAIT, "new_connection_s": NEW_CONNECTION_S}
