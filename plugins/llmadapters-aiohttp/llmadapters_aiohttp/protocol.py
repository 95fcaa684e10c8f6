"""aiohttp's connection protocol, made cheaper per read in two ways.

**One read timer per connection.** aiohttp bounds each read (``ClientTimeout.sock_read``)
by cancelling its timer and making a new one every time data arrives, and again as each
response begins: two or more timers made and cancelled per call, one per chunk of a
stream, and the cancelled ones held in the event loop's heap until it sweeps them
(aiohttp knows: see aio-libs/aiohttp#8613). Here the deadline moves instead; the one
timer, when it fires, waits out what is left of the deadline, or ends the read as
aiohttp's would. The timeout's meaning is aiohttp's, to the same precision.

**Reads into one buffer.** asyncio's event loop reads a plain protocol's socket into a
new 256 KiB ``bytes`` each time and shrinks it to what came. Under glibc's malloc that
is an ``mmap``, an ``mremap`` and a ``munmap`` per read (with a page fault or two)
until some larger block happens to be freed: measured, about 10 µs of each call at 256
in flight. As an ``asyncio.BufferedProtocol`` (asyncio's interface for this) the
protocol has the loop read into one buffer per thread, and hands aiohttp a copy of
just what came, as before.

`use_lean_protocol` puts this protocol on a connector. It is aiohttp's own class with
two of its private methods replaced (``_reschedule_timeout``, ``_drop_timeout``), using
its private timer state (``_read_timeout``, ``_read_timeout_handle``,
``_on_read_timeout``), so a connector whose aiohttp builds its protocols otherwise is
left as it is: correct, at aiohttp's cost.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import TYPE_CHECKING

from aiohttp.client_proto import ResponseHandler

if TYPE_CHECKING:
    import aiohttp

__all__ = ["LeanResponseHandler", "use_lean_protocol"]

# The most one read takes: aiohttp's read_bufsize (it pauses reading once that much
# waits unread), and under malloc's mmap threshold, so a full read's copy is no mmap.
READ_SIZE = 64 * 1024

_thread = threading.local()


def _read_buffer() -> memoryview:
    """This thread's read buffer: one loop runs in a thread, and each read is copied
    out of it before the next can be made."""
    try:
        buffer: memoryview = _thread.buffer
    except AttributeError:
        buffer = _thread.buffer = memoryview(bytearray(READ_SIZE))
    return buffer


class LeanResponseHandler(ResponseHandler, asyncio.BufferedProtocol):
    """`ResponseHandler` whose read timer is made once and moved, not made per read,
    and whose socket is read into a buffer kept for it."""

    _read_deadline: float | None = None

    # -- reads ---------------------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return _read_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_read_buffer()[:nbytes].tobytes())

    # -- the read timer ------------------------------------------------------------------

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


def use_lean_protocol(connector: aiohttp.BaseConnector) -> bool:
    """Make ``connector`` build `LeanResponseHandler` protocols, when it builds aiohttp's
    ``ResponseHandler`` as aiohttp 3.10 to 3.14 do; whether it did."""
    factory = getattr(connector, "_factory", None)
    if not (isinstance(factory, functools.partial) and factory.func is ResponseHandler):
        return False
    connector._factory = functools.partial(LeanResponseHandler, *factory.args, **factory.keywords)  # type: ignore[assignment]
    return True
