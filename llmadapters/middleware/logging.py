"""Logging: one line per call on the ``llmadapters`` logger, with no key in it.

Fields: provider, model, outcome (``ok`` or the error class), status, attempts,
latency_ms, tokens_in, tokens_out, cost and currency (None when the model's price is
not known; a stream's are logged when it ends). The same fields
go to the record as ``record.llmadapters`` (a dict) for JSON formatters, and to an
optional ``on_record`` callback, e.g. to feed OpenTelemetry without depending on it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ..errors import APIStatusError, LLMAdapterError
from ..streaming import ChatCompletionStream

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..streaming import StreamEnd
    from ..types import Cost, Usage
    from .base import Call, CallNext, Reply

__all__ = ["LoggingMiddleware"]

logger = logging.getLogger("llmadapters")
# A library configures no output: without this, Python's last-resort handler would print
# every failed call's WARNING to stderr of applications that set up no logging.
logger.addHandler(logging.NullHandler())

CallRecord = dict[str, Any]


class LoggingMiddleware:
    """Args:
    on_record: called with each call's fields, whether or not the logger is enabled.
    level: the level of successful calls (failures log at WARNING).
    """

    def __init__(self, *, on_record: Callable[[CallRecord], object] | None = None, level: int = logging.INFO) -> None:
        self._on_record = on_record
        self._level = level

    def __repr__(self) -> str:
        return f"LoggingMiddleware(level={logging.getLevelName(self._level)})"

    def _emit(
        self, call: Call, start: float, outcome: str, status: int | None, usage: Usage | None, cost: Cost | None
    ) -> None:
        level = self._level if outcome == "ok" else logging.WARNING
        if self._on_record is None and not logger.isEnabledFor(level):
            return
        record: CallRecord = {
            "provider": call.provider,
            "model": call.request.model,
            "stream": call.request.stream,
            "outcome": outcome,
            "status": status,
            "attempts": call.attempts,
            "latency_ms": round((time.perf_counter() - start) * 1000, 1),
            "tokens_in": usage.prompt_tokens if usage else None,
            "tokens_out": usage.completion_tokens if usage else None,
            "cost": cost.amount if cost else None,
            "currency": cost.currency if cost else None,
        }
        if self._on_record is not None:
            self._on_record(record)
        if logger.isEnabledFor(level):
            text = " ".join(f"{key}={value}" for key, value in record.items())
            logger.log(level, "llmadapters call %s", text, extra={"llmadapters": record})

    async def __call__(self, call: Call, call_next: CallNext) -> Reply:
        start = time.perf_counter()
        try:
            reply = await call_next(call)
        except LLMAdapterError as exc:
            status = exc.status if isinstance(exc, APIStatusError) else None
            self._emit(call, start, type(exc).__name__, status, None, None)
            raise
        if isinstance(reply, ChatCompletionStream):
            reply.on_end(self._at_end(call, start))
            return reply
        self._emit(call, start, "ok", 200, reply.usage, reply.cost)
        return reply

    def _at_end(self, call: Call, start: float) -> Callable[[StreamEnd], None]:
        # A closure made here, not in __call__: there its variables would be cells
        # made on every call, and held while it waits.
        def emit(end: StreamEnd) -> None:
            error = end.error
            outcome = "ok" if end.complete else type(error).__name__ if isinstance(error, LLMAdapterError) else None
            self._emit(call, start, outcome or "closed early", 200, end.usage, end.cost)

        return emit
