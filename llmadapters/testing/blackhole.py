"""An address of loopback where a TCP connect hangs, for connect-timeout tests.

Shipped with the conformance suite (plugin authors run it without this repository's
``tests/``), and used by this repository's own network tests.
"""

from __future__ import annotations

import select
import socket

__all__ = ["ConnectBlackhole"]


class ConnectBlackhole:
    """An address of 127.0.0.1 where a TCP connect hangs: it neither completes nor is refused.

    A listening socket with backlog 0 that never accepts, whose accept queue is filled with one
    connection of its own: Linux then drops further SYNs (tcp_abort_on_overflow=0, the default),
    so a client's connect times out, as against a firewalled host. Where the queue never fills
    (another system's TCP stack), making one raises `RuntimeError`.

    Attributes: ``host``, ``port``, ``url`` (``http://127.0.0.1:PORT``). ``close()`` stops it.
    """

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((self.host, 0))
        self._listener.listen(0)
        self.port = int(self._listener.getsockname()[1])
        self._fillers: list[socket.socket] = []
        for _ in range(8):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.setblocking(False)
            probe.connect_ex((self.host, self.port))
            _, writable, _ = select.select([], [probe], [], 0.2)
            if writable and probe.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                self._fillers.append(probe)  # it got into the accept queue
                continue
            probe.close()  # its SYN was dropped: the queue is full
            return
        self.close()
        raise RuntimeError("connect_blackhole: the accept queue never filled up; connects would not hang")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        for sock in self._fillers:
            sock.close()
        self._listener.close()

    def __enter__(self) -> ConnectBlackhole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
