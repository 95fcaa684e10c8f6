"""Loopback servers for network-settings tests: a test CA, HTTP/HTTPS/SOCKS5 proxies and stall servers.

A pytest plugin module. ``tests/conftest.py`` loads it with::

    pytest_plugins = ["netservers"]

Fixtures (all session-scoped, all on free ports of 127.0.0.1, torn down at the end of the session):

- ``test_ca`` -> :class:`LoopbackCA`: a trustme CA, its PEM files and SSL contexts.
- ``tinyproxy`` -> :class:`TinyProxy`: an HTTP proxy (Basic auth) that logs what it proxies.
- ``socks_proxy`` -> :class:`SocksProxy`: a SOCKS5 proxy (microsocks, user/password auth).
- ``https_proxy`` -> :class:`HttpsProxy`: the ``tinyproxy`` instance behind a TLS listener (stunnel).
- ``connect_blackhole`` -> :class:`ConnectBlackhole`: an address where a TCP connect hangs.
- ``no_read_server`` -> :class:`NoReadServer`: accepts connections and never reads them.

The proxies are shared by the whole session, so a test that checks what a proxy did takes a
``mark()`` first and then reads only what came after it (``requests_since(mark)``,
``targets_since(mark)``). Proxy log lines are written before the proxy answers the client, so they
can be read as soon as the client has its answer: no sleeping or polling is needed.

The external servers come from Debian packages (``tinyproxy-bin`` or ``tinyproxy``, ``microsocks``,
``stunnel4``). A missing binary fails the test with the package to install; it never skips.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
import trustme

from llmadapters.testing.blackhole import ConnectBlackhole

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

LOOPBACK = "127.0.0.1"

# The fixed credentials of the proxies. Wrong ones are rejected (see TinyProxy for the status code).
PROXY_USER = "proxyuser"
PROXY_PASSWORD = "s3cret-proxy-pass"
SOCKS_USER = "socksuser"
SOCKS_PASSWORD = "s3cret-socks-pass"

# What tinyproxy answers when the credentials are wrong: 1.11.1 (Debian 12) answers
# "401 Unauthorized" with a WWW-Authenticate header (tinyproxy issue #532, fixed by PR #549 in
# later releases, which answer 407). A request without any Proxy-Authorization gets 407 in all
# versions.
TINYPROXY_WRONG_CREDENTIALS_STATUSES = (401, 407)

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
_START_ATTEMPTS = 3
# Where binaries are looked for besides $PATH (sbin is often missing from a non-root PATH).
_EXTRA_BIN_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def find_binary(*names: str, package: str) -> str:
    """The path of the first of ``names`` that is installed; fails the test naming the Debian package if none is."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_BIN_DIRS])
    for name in names:
        found = shutil.which(name, path=search)
        if found:
            return found
    pytest.fail(
        f"{' / '.join(names)} not found: install the Debian package {package} "
        f"(sudo apt-get install -y --no-install-recommends {package})",
        pytrace=False,
    )


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def basic_credentials(user: str, password: str) -> str:
    """The value of a Basic ``Proxy-Authorization`` header: ``"Basic <base64(user:password)>"``."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


# --------------------------------------------------------------------------- test CA


@dataclass(frozen=True)
class LoopbackCA:
    """A trustme CA and the certificates it issued, written to PEM files.

    - ``ca``: the ``trustme.CA`` itself (to issue more certificates).
    - ``ca_pem``: the CA certificate; trust it to verify the servers (``verify=str(ca_pem)``).
    - ``server_cert_pem``: the server certificate chain (leaf first) for "127.0.0.1", "::1" and
      "localhost"; ``server_key_pem``: its private key; ``server_chain_and_key_pem``: both in one file.
    - ``client_cert_pem``: a client certificate *and* its private key in one PEM file (the
      "cert" that requests/httpx take as a single file); ``client_cert_only_pem`` and
      ``client_key_pem``: the same certificate and key in separate files.
    """

    ca: trustme.CA
    directory: Path
    ca_pem: Path
    server_cert_pem: Path
    server_key_pem: Path
    server_chain_and_key_pem: Path
    client_cert_pem: Path
    client_cert_only_pem: Path
    client_key_pem: Path

    SERVER_IDENTITIES = ("127.0.0.1", "::1", "localhost")
    CLIENT_IDENTITY = "client.llmadapters.test"

    @classmethod
    def create(cls, directory: Path) -> LoopbackCA:
        """A new CA, a server certificate and a client certificate, written under ``directory``."""
        ca = trustme.CA(organization_name="llmadapters test CA")
        server = ca.issue_cert(*cls.SERVER_IDENTITIES)
        client = ca.issue_cert(cls.CLIENT_IDENTITY, common_name="llmadapters test client")

        def write(name: str, data: bytes, private: bool = False) -> Path:
            path = directory / name
            path.write_bytes(data)
            if private:
                path.chmod(0o600)  # stunnel warns about group/world-readable keys
            return path

        server_chain = b"".join(blob.bytes() for blob in server.cert_chain_pems)
        client_chain = b"".join(blob.bytes() for blob in client.cert_chain_pems)
        return cls(
            ca=ca,
            directory=directory,
            ca_pem=write("ca.pem", ca.cert_pem.bytes()),
            server_cert_pem=write("server-cert.pem", server_chain),
            server_key_pem=write("server-key.pem", server.private_key_pem.bytes(), private=True),
            server_chain_and_key_pem=write(
                "server-chain-and-key.pem", server.private_key_and_cert_chain_pem.bytes(), private=True
            ),
            client_cert_pem=write(
                "client-cert-and-key.pem", client.private_key_and_cert_chain_pem.bytes(), private=True
            ),
            client_cert_only_pem=write("client-cert.pem", client_chain),
            client_key_pem=write("client-key.pem", client.private_key_pem.bytes(), private=True),
        )

    def server_ssl_context(self, require_client_cert: bool = False) -> ssl.SSLContext:
        """A server-side context with the server certificate, for ``asyncio.start_server(ssl=...)``.

        With ``require_client_cert`` the handshake demands a client certificate issued by this CA
        (``CERT_REQUIRED``, verified against ``ca_pem``). With TLS 1.3 a client without one still
        finishes its side of the handshake; it sees the failure on its first read.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.server_cert_pem, self.server_key_pem)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=self.ca_pem)
        return context

    def client_ssl_context(self, client_cert: bool = False) -> ssl.SSLContext:
        """A client-side context that trusts this CA only; with ``client_cert`` it presents the client certificate."""
        context = ssl.create_default_context(cafile=str(self.ca_pem))
        if client_cert:
            context.load_cert_chain(self.client_cert_pem)
        return context


# --------------------------------------------------------------------------- external daemons


class _Daemon:
    """An external server process, started on a free port and stopped by its PID."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, output_path: Path) -> None:
        self.process = process
        self.host = LOOPBACK
        self.port = port
        self.output_path = output_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        """SIGTERM the process (SIGKILL after 5 s) and reap it."""
        _stop_process(self.process)


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _output_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


def _spawn(
    what: str, build: Callable[[int], list[str]], output_path: Path, extra_logs: tuple[Path, ...] = ()
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``build(port)`` on a free port and wait until the port accepts connections.

    A process that exits early (say, the port was taken in between) is retried on another port.
    The process gets SIGTERM if pytest dies without tearing down (``setpriv --pdeathsig``).
    """
    setpriv = shutil.which("setpriv", path=os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_BIN_DIRS]))
    prefix = [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []
    failure = ""
    for _attempt in range(_START_ATTEMPTS):
        port = free_port()
        argv = build(port)
        with output_path.open("ab") as output:
            process = subprocess.Popen(
                [*prefix, *argv], stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection((LOOPBACK, port), timeout=0.5).close()
            except OSError:
                time.sleep(0.02)
                continue
            if process.poll() is None:
                return process, port
        _stop_process(process)
        logs = "\n".join(f"--- {path.name}:\n{_output_tail(path)}" for path in (output_path, *extra_logs))
        failure = f"{what} ({' '.join(argv)}) did not start listening on {LOOPBACK}:{port}:\n{logs}"
    pytest.fail(failure, pytrace=False)


class _LogFile:
    """Reads a log file from a mark on."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""

    def mark(self) -> int:
        """The offset just past the last complete line written so far."""
        return self.read().rfind(b"\n") + 1

    def text_since(self, mark: int) -> str:
        """The complete lines written after ``mark`` (a partial last line is left out)."""
        data = self.read()[mark:]
        return data[: data.rfind(b"\n") + 1].decode("utf-8", errors="replace")


# tinyproxy writes a log line in three write()s (prefix, message, "\n") with no lock between its
# threads, so under concurrency one line's prefix can land inside another's. The message itself is
# one write(), so these patterns match messages wherever they are, without anchoring on lines.
_TINYPROXY_REQUEST = re.compile(r"Request \(file descriptor \d+\): (\S+ \S+ HTTP/\d(?:\.\d)?)")
_TINYPROXY_TARGET = re.compile(r"opensock: opening connection to (\S+?:\d+)")
_MICROSOCKS_TARGET = re.compile(r"client\[\d+\] \S+: connected to (\S+?:\d+)")


class TinyProxy(_Daemon):
    """tinyproxy (``-d``, foreground) with Basic auth, on ``127.0.0.1:port``.

    Attributes: ``url`` (``http://proxyuser:s3cret-proxy-pass@127.0.0.1:PORT``),
    ``url_without_credentials``, ``host``, ``port``, ``user``, ``password``,
    ``proxy_authorization`` (the Basic header value for the right credentials), ``pid``,
    ``config_path``, ``log_path`` (tinyproxy's LogFile, LogLevel Info).

    Reading what it did (take ``m = proxy.mark()`` before the requests):

    - ``requests_since(m)``: every request line it received, e.g.
      ``"GET http://127.0.0.1:8000/v1/models HTTP/1.1"`` or ``"CONNECT 127.0.0.1:8443 HTTP/1.1"``,
      including requests it then refused for bad or missing credentials (it logs nothing for those).
    - ``targets_since(m)``: ``"host:port"`` of each connection it opened (or tried) to a target,
      for plain forwarded requests and CONNECT tunnels alike; requests refused for credentials
      open none.
    - ``log_since(m)``: the raw log lines.

    Behaviour worth knowing: wrong credentials get 401 (not 407) from tinyproxy 1.11.1, see
    ``TINYPROXY_WRONG_CREDENTIALS_STATUSES``; missing credentials get 407. It answers CONNECT with
    ``HTTP/1.0 200 Connection established``, closes the client connection after each plain
    request (no keep-alive through it), and does not forward ``Proxy-Authorization``.
    """

    user = PROXY_USER
    password = PROXY_PASSWORD

    def __init__(self, process: subprocess.Popen[bytes], port: int, directory: Path) -> None:
        super().__init__(process, port, directory / "tinyproxy.out")
        self.directory = directory
        self.config_path = directory / "tinyproxy.conf"
        self.log_path = directory / "tinyproxy.log"
        self._log = _LogFile(self.log_path)

    @classmethod
    def start(cls, directory: Path) -> TinyProxy:
        """Start tinyproxy with its config, log and output under ``directory``."""
        binary = find_binary("tinyproxy", package="tinyproxy-bin")
        config_path = directory / "tinyproxy.conf"
        log_path = directory / "tinyproxy.log"

        def build(port: int) -> list[str]:
            config_path.write_text(
                "\n".join(
                    [
                        f"Port {port}",
                        f"Listen {LOOPBACK}",
                        "Timeout 30",
                        f"Allow {LOOPBACK}",
                        f"BasicAuth {PROXY_USER} {PROXY_PASSWORD}",
                        f'LogFile "{log_path}"',
                        "LogLevel Info",
                        "DisableViaHeader Yes",
                        # One thread per client; room for 200 concurrent connections and more.
                        "MaxClients 1024",
                        # No ConnectPort lines: CONNECT may reach any port. No User/Group: it stays
                        # the current user (it warns "You SHOULD set a UserName"). No PidFile.
                        "",
                    ]
                )
            )
            return [binary, "-d", "-c", str(config_path)]

        process, port = _spawn("tinyproxy", build, directory / "tinyproxy.out", extra_logs=(log_path,))
        return cls(process, port, directory)

    @property
    def url(self) -> str:
        return f"http://{self.user}:{self.password}@{self.host}:{self.port}"

    @property
    def url_without_credentials(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def proxy_authorization(self) -> str:
        return basic_credentials(self.user, self.password)

    def mark(self) -> int:
        """A position in the log; pass it to the ``*_since`` methods."""
        return self._log.mark()

    def log_since(self, mark: int = 0) -> list[str]:
        """The log lines written after ``mark`` (under concurrency, lines can be garbled together)."""
        return self._log.text_since(mark).splitlines()

    def requests_since(self, mark: int = 0) -> list[str]:
        """The request lines received after ``mark``, in log order (refused ones included)."""
        return _TINYPROXY_REQUEST.findall(self._log.text_since(mark))

    def targets_since(self, mark: int = 0) -> list[str]:
        """``"host:port"`` of each target connection opened (or tried) after ``mark``, in log order."""
        return _TINYPROXY_TARGET.findall(self._log.text_since(mark))


class SocksProxy(_Daemon):
    """microsocks, a SOCKS5 proxy with username/password auth, on ``127.0.0.1:port``.

    Attributes: ``url`` (``socks5://socksuser:s3cret-socks-pass@127.0.0.1:PORT``),
    ``url_without_credentials``, ``host``, ``port``, ``user``, ``password``, ``pid``,
    ``log_path`` (microsocks' stderr).

    ``targets_since(m)`` (after ``m = proxy.mark()``): ``"host:port"`` of each target it connected
    to, from its stderr line ``client[FD] CLIENT_IP: connected to HOST:PORT``, printed once the
    target connection is up and before the client gets its SOCKS reply. With microsocks 1.0.3
    (Debian 12) HOST is what the client sent: an IP for ``socks5://`` (the client resolved the
    name) and the host name for ``socks5h://`` (the proxy resolved it), so the log tells which of
    the two a client used; newer microsocks versions print the resolved IP in both cases.
    Refused credentials and failed target connections print nothing (a refused target gets
    SOCKS reply 5, "connection refused").
    """

    user = SOCKS_USER
    password = SOCKS_PASSWORD

    def __init__(self, process: subprocess.Popen[bytes], port: int, directory: Path) -> None:
        super().__init__(process, port, directory / "microsocks.log")
        self.directory = directory
        self.log_path = self.output_path
        self._log = _LogFile(self.log_path)

    @classmethod
    def start(cls, directory: Path) -> SocksProxy:
        """Start microsocks with its log under ``directory``."""
        binary = find_binary("microsocks", package="microsocks")

        def build(port: int) -> list[str]:
            return [binary, "-i", LOOPBACK, "-p", str(port), "-u", SOCKS_USER, "-P", SOCKS_PASSWORD]

        process, port = _spawn("microsocks", build, directory / "microsocks.log")
        return cls(process, port, directory)

    @property
    def url(self) -> str:
        return f"socks5://{self.user}:{self.password}@{self.host}:{self.port}"

    @property
    def url_without_credentials(self) -> str:
        return f"socks5://{self.host}:{self.port}"

    def mark(self) -> int:
        """A position in the log; pass it to the ``*_since`` methods."""
        return self._log.mark()

    def log_since(self, mark: int = 0) -> list[str]:
        """The lines microsocks printed after ``mark``."""
        return self._log.text_since(mark).splitlines()

    def targets_since(self, mark: int = 0) -> list[str]:
        """``"host:port"`` of each target it connected to after ``mark``, in order."""
        return _MICROSOCKS_TARGET.findall(self._log.text_since(mark))


class HttpsProxy(_Daemon):
    """The ``tinyproxy`` instance reached over TLS: stunnel on ``127.0.0.1:port`` in front of it.

    The TLS listener presents the test CA's server certificate, so a client trusts
    ``ca_pem`` (``test_ca.ca_pem``) and checks the name "127.0.0.1". Inside the TLS connection it
    is the plain tinyproxy, same credentials and behaviour.

    Attributes: ``url`` (``https://proxyuser:s3cret-proxy-pass@127.0.0.1:PORT``),
    ``url_without_credentials``, ``host``, ``port``, ``user``, ``password``,
    ``proxy_authorization``, ``ca_pem``, ``tinyproxy`` (the :class:`TinyProxy` behind it),
    ``pid``, ``config_path``, ``log_path`` (stunnel's own log). ``mark()``, ``requests_since(m)``,
    ``targets_since(m)`` and ``log_since(m)`` read the tinyproxy log, which is shared with the
    ``tinyproxy`` fixture.
    """

    def __init__(
        self, process: subprocess.Popen[bytes], port: int, directory: Path, tinyproxy: TinyProxy, ca_pem: Path
    ) -> None:
        super().__init__(process, port, directory / "stunnel.log")
        self.directory = directory
        self.config_path = directory / "stunnel.conf"
        self.log_path = self.output_path
        self.tinyproxy = tinyproxy
        self.ca_pem = ca_pem
        self.user = tinyproxy.user
        self.password = tinyproxy.password

    @classmethod
    def start(cls, directory: Path, tinyproxy: TinyProxy, test_ca: LoopbackCA) -> HttpsProxy:
        """Start stunnel (foreground, no pid file) from a TLS port to ``tinyproxy``."""
        binary = find_binary("stunnel4", "stunnel", package="stunnel4")
        config_path = directory / "stunnel.conf"

        def build(port: int) -> list[str]:
            config_path.write_text(
                "\n".join(
                    [
                        "foreground = yes",
                        "pid =",
                        "syslog = no",
                        "debug = notice",
                        "[https-proxy]",
                        f"accept = {LOOPBACK}:{port}",
                        f"connect = {tinyproxy.host}:{tinyproxy.port}",
                        f"cert = {test_ca.server_cert_pem}",
                        f"key = {test_ca.server_key_pem}",
                        "",
                    ]
                )
            )
            return [binary, str(config_path)]

        process, port = _spawn("stunnel", build, directory / "stunnel.log")
        return cls(process, port, directory, tinyproxy, test_ca.ca_pem)

    @property
    def url(self) -> str:
        return f"https://{self.user}:{self.password}@{self.host}:{self.port}"

    @property
    def url_without_credentials(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def proxy_authorization(self) -> str:
        return self.tinyproxy.proxy_authorization

    def mark(self) -> int:
        return self.tinyproxy.mark()

    def log_since(self, mark: int = 0) -> list[str]:
        return self.tinyproxy.log_since(mark)

    def requests_since(self, mark: int = 0) -> list[str]:
        return self.tinyproxy.requests_since(mark)

    def targets_since(self, mark: int = 0) -> list[str]:
        return self.tinyproxy.targets_since(mark)


# --------------------------------------------------------------------------- stall servers


class NoReadServer:
    """Accepts TCP connections on 127.0.0.1 and never reads from them (nor writes to them).

    Accepted sockets have a small receive buffer (SO_RCVBUF 4096 set before listen), so a client
    writing a large body blocks once its own send buffer is full. On Linux that buffer grows up to
    ``net.ipv4.tcp_wmem``'s max (4 MiB by default), so send clearly more than that (16 MiB) to be
    sure to block. Connections stay open until ``close()``.

    Attributes: ``host``, ``port``, ``url`` (``http://127.0.0.1:PORT``), ``connections`` (how many
    it accepted so far). ``close()`` stops it and closes the connections.
    """

    def __init__(self) -> None:
        self.host = LOOPBACK
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(128)
        self._listener.settimeout(0.05)
        self.port = int(self._listener.getsockname()[1])
        self._held: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_forever, name="no_read_server", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def connections(self) -> int:
        return len(self._held)

    def _accept_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._held.append(conn)

    def close(self) -> None:
        self._stopping.set()
        self._thread.join()
        self._listener.close()
        for conn in self._held:
            conn.close()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCA:
    """A trustme CA with its PEM files and SSL contexts (see :class:`LoopbackCA`)."""
    return LoopbackCA.create(tmp_path_factory.mktemp("test-ca"))


@pytest.fixture(scope="session")
def tinyproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyProxy]:
    """An HTTP proxy with Basic auth on 127.0.0.1, shared by the session (see :class:`TinyProxy`)."""
    proxy = TinyProxy.start(tmp_path_factory.mktemp("tinyproxy"))
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="session")
def socks_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SocksProxy]:
    """A SOCKS5 proxy with user/password auth on 127.0.0.1, shared by the session (see :class:`SocksProxy`)."""
    proxy = SocksProxy.start(tmp_path_factory.mktemp("microsocks"))
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="session")
def https_proxy(
    tmp_path_factory: pytest.TempPathFactory, tinyproxy: TinyProxy, test_ca: LoopbackCA
) -> Iterator[HttpsProxy]:
    """The ``tinyproxy`` proxy reached over TLS with the test CA's certificate (see :class:`HttpsProxy`)."""
    proxy = HttpsProxy.start(tmp_path_factory.mktemp("stunnel"), tinyproxy, test_ca)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="session")
def connect_blackhole() -> Iterator[ConnectBlackhole]:
    """An ``http://127.0.0.1:PORT`` where TCP connects hang (see :class:`ConnectBlackhole`)."""
    blackhole = ConnectBlackhole()
    try:
        yield blackhole
    finally:
        blackhole.close()


@pytest.fixture(scope="session")
def no_read_server() -> Iterator[NoReadServer]:
    """An ``http://127.0.0.1:PORT`` that accepts and never reads (see :class:`NoReadServer`)."""
    server = NoReadServer()
    try:
        yield server
    finally:
        server.close()
