"""Sanity tests of the netservers fixtures, through raw sockets and ``ssl`` only (not llmadapters)."""

from __future__ import annotations

import asyncio
import socket
import socketserver
import ssl
import struct
import threading
import time
from typing import TYPE_CHECKING

import pytest
from netservers import (
    TINYPROXY_WRONG_CREDENTIALS_STATUSES,
    LoopbackCA,
    basic_credentials,
    find_binary,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from netservers import ConnectBlackhole, HttpsProxy, NoReadServer, SocksProxy, TinyProxy


class _EchoHead(socketserver.BaseRequestHandler):
    """Answers one HTTP request with 200 and the request's head as the body, then closes."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        head = _read_head(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(head), head))


class _Target(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512


@pytest.fixture(scope="module")
def target() -> Iterator[tuple[str, int]]:
    """A loopback HTTP server that echoes each request's head; yields its (host, port)."""
    server = _Target(("127.0.0.1", 0), _EchoHead)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield "127.0.0.1", int(server.server_address[1])
    server.shutdown()
    server.server_close()
    thread.join()


def _read_head(sock: socket.socket) -> bytes:
    """Reads up to the end of an HTTP head, byte by byte so nothing after it is consumed."""
    data = b""
    while not data.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            break
        data += byte
    return data


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def _get(host: str, port: int, path: str = "/") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()


def _proxy_get(host: str, port: int, path: str, authorization: str | None) -> bytes:
    auth = f"Proxy-Authorization: {authorization}\r\n" if authorization else ""
    url = f"http://{host}:{port}{path}"
    return f"GET {url} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}Connection: close\r\n\r\n".encode()


def _connect_request(host: str, port: int, authorization: str | None) -> bytes:
    auth = f"Proxy-Authorization: {authorization}\r\n" if authorization else ""
    return f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}\r\n".encode()


# --------------------------------------------------------------------------- test_ca


def test_ca_files(test_ca: LoopbackCA) -> None:
    combined = test_ca.client_cert_pem.read_text()
    assert "BEGIN CERTIFICATE" in combined
    assert "PRIVATE KEY" in combined
    assert "PRIVATE KEY" not in test_ca.client_cert_only_pem.read_text()
    assert "BEGIN CERTIFICATE" not in test_ca.client_key_pem.read_text()
    assert "PRIVATE KEY" in test_ca.server_chain_and_key_pem.read_text()
    context = ssl.create_default_context(cafile=str(test_ca.ca_pem))
    context.load_cert_chain(test_ca.client_cert_only_pem, test_ca.client_key_pem)
    context.load_cert_chain(test_ca.client_cert_pem)


async def _tls_echo(
    test_ca: LoopbackCA, require_client_cert: bool, client: ssl.SSLContext, server_hostname: str
) -> bytes:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(await reader.readline())
            await writer.drain()
        except (ssl.SSLError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(
        echo, "127.0.0.1", 0, ssl=test_ca.server_ssl_context(require_client_cert=require_client_cert)
    )
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname=server_hostname)
        writer.write(b"ping\n")
        line = await reader.read(100)
        writer.close()
        return line
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("name", LoopbackCA.SERVER_IDENTITIES)
async def test_ca_server_cert_verifies_for_each_loopback_name(test_ca: LoopbackCA, name: str) -> None:
    assert await _tls_echo(test_ca, False, test_ca.client_ssl_context(), name) == b"ping\n"


async def test_ca_server_cert_is_not_trusted_by_default(test_ca: LoopbackCA) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await _tls_echo(test_ca, False, ssl.create_default_context(), "127.0.0.1")


async def test_ca_client_cert_required(test_ca: LoopbackCA) -> None:
    with_cert = test_ca.client_ssl_context(client_cert=True)
    assert await _tls_echo(test_ca, True, with_cert, "127.0.0.1") == b"ping\n"
    # TLS 1.3: a client without a certificate completes its side of the handshake; the server
    # then refuses it, which the client sees on its first read (as EOF with asyncio, here).
    try:
        line = await _tls_echo(test_ca, True, test_ca.client_ssl_context(), "127.0.0.1")
    except (ssl.SSLError, ConnectionError):
        line = b""
    assert line == b""


# --------------------------------------------------------------------------- tinyproxy


def test_tinyproxy_attributes(tinyproxy: TinyProxy) -> None:
    assert tinyproxy.url == f"http://proxyuser:s3cret-proxy-pass@127.0.0.1:{tinyproxy.port}"
    assert tinyproxy.url_without_credentials == f"http://127.0.0.1:{tinyproxy.port}"
    assert (tinyproxy.host, tinyproxy.user, tinyproxy.password) == ("127.0.0.1", "proxyuser", "s3cret-proxy-pass")
    assert tinyproxy.process.poll() is None


def test_tinyproxy_forwards_plain_requests(tinyproxy: TinyProxy, target: tuple[str, int]) -> None:
    host, port = target
    mark = tinyproxy.mark()
    with socket.create_connection((tinyproxy.host, tinyproxy.port), timeout=5) as sock:
        sock.sendall(_proxy_get(host, port, "/plain", tinyproxy.proxy_authorization))
        response = _read_all(sock)  # tinyproxy closes after one plain request
    assert _status(response) == 200
    assert b"GET /plain HTTP/1.1" in response  # the target got an origin-form request ...
    assert b"proxy-authorization" not in response.lower()  # ... without the proxy's credentials
    assert tinyproxy.requests_since(mark) == [f"GET http://{host}:{port}/plain HTTP/1.1"]
    assert tinyproxy.targets_since(mark) == [f"{host}:{port}"]


def test_tinyproxy_tunnels_connect(tinyproxy: TinyProxy, target: tuple[str, int]) -> None:
    host, port = target
    mark = tinyproxy.mark()
    with socket.create_connection((tinyproxy.host, tinyproxy.port), timeout=5) as sock:
        sock.sendall(_connect_request(host, port, tinyproxy.proxy_authorization))
        assert _read_head(sock).startswith(b"HTTP/1.0 200 Connection established\r\n")
        sock.sendall(_get(host, port, "/tunnelled"))
        response = _read_all(sock)
    assert _status(response) == 200
    assert b"GET /tunnelled HTTP/1.1" in response
    assert tinyproxy.requests_since(mark) == [f"CONNECT {host}:{port} HTTP/1.1"]
    assert tinyproxy.targets_since(mark) == [f"{host}:{port}"]


@pytest.mark.parametrize("kind", ["plain", "connect"])
def test_tinyproxy_rejects_bad_credentials(tinyproxy: TinyProxy, target: tuple[str, int], kind: str) -> None:
    host, port = target
    make = _connect_request if kind == "connect" else lambda h, p, a: _proxy_get(h, p, "/x", a)
    statuses = {}
    mark = tinyproxy.mark()
    for label, authorization in [("wrong", basic_credentials("proxyuser", "wrong")), ("missing", None)]:
        with socket.create_connection((tinyproxy.host, tinyproxy.port), timeout=5) as sock:
            sock.sendall(make(host, port, authorization))
            statuses[label] = _status(_read_all(sock))
    assert statuses["missing"] == 407
    # tinyproxy 1.11.1 answers wrong credentials with 401 (its bug #532); later versions with 407.
    assert statuses["wrong"] in TINYPROXY_WRONG_CREDENTIALS_STATUSES
    assert len(tinyproxy.requests_since(mark)) == 2  # logged as received ...
    assert tinyproxy.targets_since(mark) == []  # ... but nothing was forwarded


def test_tinyproxy_200_concurrent_tunnels(tinyproxy: TinyProxy, target: tuple[str, int]) -> None:
    host, port = target
    mark = tinyproxy.mark()
    socks = [socket.create_connection((tinyproxy.host, tinyproxy.port), timeout=10) for _ in range(200)]
    try:
        for sock in socks:
            sock.sendall(_connect_request(host, port, tinyproxy.proxy_authorization))
        for sock in socks:  # all 200 tunnels are open at once
            assert _read_head(sock).startswith(b"HTTP/1.0 200 ")
        for index, sock in enumerate(socks):
            sock.sendall(_get(host, port, f"/{index}"))
        for index, sock in enumerate(socks):
            assert f"GET /{index} HTTP/1.1".encode() in _read_all(sock)
    finally:
        for sock in socks:
            sock.close()
    assert tinyproxy.requests_since(mark).count(f"CONNECT {host}:{port} HTTP/1.1") == 200
    assert tinyproxy.targets_since(mark) == [f"{host}:{port}"] * 200


# --------------------------------------------------------------------------- microsocks


def _socks5_connect(proxy: SocksProxy, password: str, host: str, port: int, by_name: bool = False) -> socket.socket:
    sock = socket.create_connection((proxy.host, proxy.port), timeout=5)
    sock.sendall(b"\x05\x01\x02")  # version 5, one method: username/password
    assert sock.recv(2) == b"\x05\x02"
    user, secret = proxy.user.encode(), password.encode()
    sock.sendall(b"\x01" + bytes([len(user)]) + user + bytes([len(secret)]) + secret)
    if sock.recv(2) != b"\x01\x00":
        sock.close()
        raise PermissionError("SOCKS5 authentication refused")
    name = host.encode()
    address = b"\x03" + bytes([len(name)]) + name if by_name else b"\x01" + socket.inet_aton(host)
    sock.sendall(b"\x05\x01\x00" + address + struct.pack(">H", port))
    reply = sock.recv(10)
    if reply[1] != 0:
        sock.close()
        raise ConnectionError(f"SOCKS5 reply {reply[1]}")
    return sock


def test_socks_proxy_connects_and_logs_targets(socks_proxy: SocksProxy, target: tuple[str, int]) -> None:
    host, port = target
    assert socks_proxy.url == f"socks5://socksuser:s3cret-socks-pass@127.0.0.1:{socks_proxy.port}"
    assert socks_proxy.url_without_credentials == f"socks5://127.0.0.1:{socks_proxy.port}"
    mark = socks_proxy.mark()
    with _socks5_connect(socks_proxy, socks_proxy.password, host, port) as sock:
        sock.sendall(_get(host, port, "/via-socks"))
        assert b"GET /via-socks HTTP/1.1" in _read_all(sock)
    assert socks_proxy.targets_since(mark) == [f"{host}:{port}"]
    with pytest.raises(PermissionError):
        _socks5_connect(socks_proxy, "wrong", host, port)
    with pytest.raises(ConnectionError, match="reply 5"):  # refused target
        _socks5_connect(socks_proxy, socks_proxy.password, "127.0.0.1", 1)
    assert socks_proxy.targets_since(mark) == [f"{host}:{port}"]


def test_socks_proxy_logs_the_name_a_socks5h_client_sends(socks_proxy: SocksProxy, target: tuple[str, int]) -> None:
    _, port = target
    mark = socks_proxy.mark()
    with _socks5_connect(socks_proxy, socks_proxy.password, "localhost", port, by_name=True) as sock:
        sock.sendall(_get("localhost", port))
        assert _status(_read_all(sock)) == 200
    # microsocks 1.0.3 (Debian 12) logs the name the client sent; newer versions log the IP it resolved.
    assert socks_proxy.targets_since(mark) in ([f"localhost:{port}"], [f"127.0.0.1:{port}"])


# --------------------------------------------------------------------------- https_proxy


def test_https_proxy(https_proxy: HttpsProxy, test_ca: LoopbackCA, target: tuple[str, int]) -> None:
    host, port = target
    assert https_proxy.url == f"https://proxyuser:s3cret-proxy-pass@127.0.0.1:{https_proxy.port}"
    assert https_proxy.url_without_credentials == f"https://127.0.0.1:{https_proxy.port}"
    assert https_proxy.ca_pem == test_ca.ca_pem
    context = ssl.create_default_context(cafile=str(https_proxy.ca_pem))
    mark = https_proxy.mark()
    raw = socket.create_connection((https_proxy.host, https_proxy.port), timeout=5)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(_connect_request(host, port, https_proxy.proxy_authorization))
        assert _read_head(sock).startswith(b"HTTP/1.0 200 Connection established\r\n")
        sock.sendall(_get(host, port, "/through-tls-proxy"))
        assert b"GET /through-tls-proxy HTTP/1.1" in _read_all(sock)
    raw = socket.create_connection((https_proxy.host, https_proxy.port), timeout=5)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(_proxy_get(host, port, "/plain-over-tls", basic_credentials("proxyuser", "wrong")))
        assert _status(_read_all(sock)) in TINYPROXY_WRONG_CREDENTIALS_STATUSES
    assert https_proxy.requests_since(mark) == [
        f"CONNECT {host}:{port} HTTP/1.1",
        f"GET http://{host}:{port}/plain-over-tls HTTP/1.1",
    ]
    assert https_proxy.targets_since(mark) == [f"{host}:{port}"]


# --------------------------------------------------------------------------- stall servers


def test_connect_blackhole_times_out_rather_than_refusing(connect_blackhole: ConnectBlackhole) -> None:
    assert connect_blackhole.url == f"http://127.0.0.1:{connect_blackhole.port}"
    for _ in range(2):  # it stays a blackhole
        started = time.monotonic()
        with pytest.raises(TimeoutError):  # socket.timeout; not ConnectionRefusedError
            socket.create_connection((connect_blackhole.host, connect_blackhole.port), timeout=0.5).close()
        assert time.monotonic() - started >= 0.45


def test_no_read_server_blocks_a_large_write(no_read_server: NoReadServer) -> None:
    assert no_read_server.url == f"http://127.0.0.1:{no_read_server.port}"
    with socket.create_connection((no_read_server.host, no_read_server.port), timeout=0.5) as sock:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            sock.sendall(b"x" * (16 << 20))
        assert time.monotonic() - started >= 0.45
    assert no_read_server.connections >= 1


def test_missing_binary_fails_naming_the_debian_package() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"install the Debian package no-such-package"):
        find_binary("no-such-binary-for-netservers", package="no-such-package")
