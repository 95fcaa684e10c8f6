"""An incremental Server-Sent Events decoder (WHATWG event-stream rules).

Bytes go in as they arrive, in pieces of any size; complete events come out. It handles
CR, LF and CRLF line ends (a CRLF split across two reads included), a leading BOM,
UTF-8 split across reads, comments, multi-line ``data:``, ``event:``, ``id:`` and
``retry:``. It does not repeat two known bugs of openai-python's decoder: a comment
followed by a blank line is never dispatched as an empty event (#2722), and a long line
arriving in many pieces is buffered in linear, not quadratic, time (#3687).

This module imports nothing of llmadapters.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["EventTooLarge", "SSEDecoder", "ServerSentEvent"]

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


class EventTooLarge(ValueError):
    """A line or an event grew past the decoder's ``max_event_bytes``."""


class ServerSentEvent(NamedTuple):
    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Feed bytes with `feed`; it returns the events completed by them. With
    ``max_event_bytes``, a line or an event's data growing past it raises
    `EventTooLarge`, so that a broken or hostile server cannot make it buffer without end.

    An event is dispatched by a blank line. An event with no ``data:`` line is not
    dispatched (WHATWG), so keep-alive comments such as ``: keep-alive`` or
    ``: PROCESSING`` never surface. Bytes after the last blank line when the stream ends
    are an unterminated event, which the spec drops; `pending` tells whether there are any.
    """

    __slots__ = (
        "_bom_checked",
        "_data",
        "_data_size",
        "_event",
        "_head",
        "_max",
        "_partial",
        "_retry",
        "_skip_lf",
        "last_event_id",
    )

    def __init__(self, *, max_event_bytes: int | None = None) -> None:
        self._max = max_event_bytes
        self._data_size = 0
        self._partial = bytearray()
        self._head = b""
        self._bom_checked = False
        self._skip_lf = False
        self._data: list[str] = []
        self._event = ""
        self._retry: int | None = None
        self.last_event_id: str | None = None

    @property
    def pending(self) -> bool:
        """True when bytes of an unfinished line or event are buffered."""
        return bool(self._partial or self._head or self._data or self._event)

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        events: list[ServerSentEvent] = []
        if not chunk:  # an empty read must not end a pending CR's wait for its LF
            return events
        if not self._bom_checked:
            chunk = self._head + chunk
            if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                self._head = chunk
                return events
            self._head = b""
            self._bom_checked = True
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
        pos = 0
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                pos = 1
        if b"\r" not in chunk:
            # LF line ends only, as almost every server sends: split and decode the whole
            # lines at once, in C, instead of line by line.
            end = chunk.rfind(b"\n") + 1
            if end > pos and self._partial:
                cut = chunk.index(b"\n", pos)
                self._partial += chunk[pos:cut]
                self._line(self._partial.decode("utf-8", errors="replace"), events)
                self._partial.clear()
                pos = cut + 1
            if end > pos:
                for line in chunk[pos : end - 1].decode("utf-8", errors="replace").split("\n"):
                    self._line(line, events)
                pos = end
        else:
            for match in _LINE_END.finditer(chunk, pos):
                raw = chunk[pos : match.start()]
                if self._partial:
                    self._partial += raw
                    raw = bytes(self._partial)
                    self._partial.clear()
                self._line(raw.decode("utf-8", errors="replace"), events)
                pos = match.end()
        if pos < len(chunk):
            self._partial += chunk[pos:]
            if self._max is not None and len(self._partial) > self._max:
                raise EventTooLarge(f"a line of over {self._max} bytes")
        elif chunk[-1:] == b"\r":
            self._skip_lf = True
        return events

    def _line(self, line: str, events: list[ServerSentEvent]) -> None:
        if not line:
            if self._data:
                events.append(
                    ServerSentEvent("\n".join(self._data), self._event or "message", self.last_event_id, self._retry)
                )
                self._data = []
                self._data_size = 0
            self._event = ""
            return
        if line[0] == ":":
            return
        field, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
            self._data_size += len(value)
            if self._max is not None and self._data_size > self._max:
                raise EventTooLarge(f"an event of over {self._max} bytes")
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
