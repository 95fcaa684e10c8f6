"""aiohttp's connection protocol, with its read timeout kept by one timer per connection.

aiohttp bounds each read (``ClientTimeout.sock_read``) by cancelling its timer and
making a new one every time data arrives, and again as each response begins: two or
more timers made and cancelled per call, one per chunk of a stream, and the cancelled
ones held in the event loop's heap until it sweeps them (aiohttp knows: see
aio-libs/aiohttp#8613). Here the deadline moves instead; the one timer, when it fires,
waits out what is left of the deadline, or ends the read as aiohttp's would. The
timeout's meaning is aiohttp's, to the same precision.

`use_lazy_read_timer` puts this protocol on a connector. It is aiohttp's own class with
three of its private methods replaced, so a connector whose aiohttp builds its
protocols otherwise is left as it is: correct, at aiohttp's cost.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from aiohttp.client_proto import ResponseHandler

if TYPE_CHECKING:
    import aiohttp

__all__ = ["LazyReadTimer", "use_lazy_read_timer"]


class LazyReadTimer(ResponseHandler):
    """`ResponseHandler` whose read timer is made once and moved, not made per read."""

    _read_deadline: float | None = None

    def _reschedule_timeout(self) -> None:
        timeout = self._read_timeout
        if not timeout:
            self._read_deadline = None
            return
        deadline = self._loop.time() + timeout
        self._read_deadline = deadline
        handle = self._read_timeout_handle
        if handle is None or handle.when() > deadline:  # (a later call with a shorter timeout)
            if handle is not None:
                handle.cancel()
            self._read_timeout_handle = self._loop.call_at(deadline, self._read_timer_fired)

    def _drop_timeout(self) -> None:
        # The timer stays, for the connection's next response: it finds no deadline.
        self._read_deadline = None

    def _read_timer_fired(self) -> None:
        self._read_timeout_handle = None
        deadline = self._read_deadline
        if deadline is None:
            return
        if self._loop.time() < deadline:  # data came since it was set
            self._read_timeout_handle = self._loop.call_at(deadline, self._read_timer_fired)
            return
        self._read_deadline = None
        self._on_read_timeout()

    def connection_lost(self, exc: BaseException | None) -> None:
        # The connection is done: its timer goes, not to hold it until it fires.
        self._read_deadline = None
        handle, self._read_timeout_handle = self._read_timeout_handle, None
        if handle is not None:
            handle.cancel()
        super().connection_lost(exc)


def use_lazy_read_timer(connector: aiohttp.BaseConnector) -> bool:
    """Make ``connector`` build `LazyReadTimer` protocols, when it builds aiohttp's
    ``ResponseHandler`` as aiohttp 3.10 to 3.14 do; whether it did."""
    factory = getattr(connector, "_factory", None)
    if not (isinstance(factory, functools.partial) and factory.func is ResponseHandler):
        return False
    connector._factory = functools.partial(LazyReadTimer, *factory.args, **factory.keywords)  # type: ignore[assignment]
    return True
