"""The redis backend of the ratelimit middleware, against a real redis-server (Debian's
redis-server, started here on a free loopback port) and the fake server."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import llmadapters_redis
import pytest
import redis.asyncio as aioredis
from llmadapters_redis.testing import END, most_in_a_window, note_grants

import llmadapters as la
from llmadapters.plugins import Registry
from llmadapters.testing import FakeServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

MESSAGES = [{"role": "user", "content": "hi"}]


class RedisServer:
    """redis-server on a free loopback port, without persistence; stop and start again."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            pytest.fail("redis-server not found: install the Debian package redis-server")
        self.binary = binary
        self.directory = directory
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(args, cwd=self.directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        pytest.fail("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def registry() -> Registry:
    registry = Registry.builtin()
    llmadapters_redis.register_middleware(registry.add_middleware)
    return registry


@pytest.fixture
async def fake_server() -> AsyncIterator[FakeServer]:
    async with FakeServer() as server:
        yield server


def client(fake_server: FakeServer, limits: dict[str, Any], **local: Any) -> la.AsyncClient:
    providers = {"local": {"base_url": fake_server.base_url, "limits": limits, **local}}
    return la.AsyncClient({}, providers=providers, middleware=["ratelimit"], registry=registry())


async def ask(client: la.AsyncClient, model: str = "local/echo") -> str:
    reply = await client.chat.completions.create(model=model, messages=MESSAGES)
    return reply.choices[0].message.content or ""


def test_a_shared_backend_no_plugin_provides_is_refused() -> None:
    with pytest.raises(la.ConfigError, match=r"providers.x.limits.backend: no plugin provides .* 'memcached'"):
        la.AsyncClient({}, providers={"x": {"base_url": "http://127.0.0.1:9", "limits": {"backend": "memcached"}}})


async def test_the_redis_backend_needs_a_url(fake_server: FakeServer) -> None:
    async with client(fake_server, {"backend": "redis", "rpm": 60}) as c:
        with pytest.raises(la.ConfigError, match=r"limits\.url: the redis backend needs a redis:// URL"):
            await ask(c)


async def test_a_429_seen_by_one_process_pauses_the_others(fake_server: FakeServer, redis_server: RedisServer) -> None:
    limits = {"backend": "redis", "url": redis_server.url, "max_concurrency": 8}
    headers = {"x-fake-retry-after": "1"}
    async with client(fake_server, limits, headers=headers) as one, client(fake_server, limits) as other:
        with pytest.raises(la.RateLimitError):
            await ask(one, "local/fail-429")
        await asyncio.sleep(0.1)  # the 429 is reported after the reply, without holding the caller up
        started = time.monotonic()
        assert await ask(other) == "hi"
        assert time.monotonic() - started >= 0.7  # paused for the other's Retry-After: 1


async def test_token_usage_corrects_the_estimate_for_every_process(
    fake_server: FakeServer, redis_server: RedisServer
) -> None:
    # 600 tokens/minute: 10 per second, a burst of 10. Each call uses 6 (5 prompt, 1
    # completion) but is estimated at 1 + 300: without the correction the second call
    # of the other client would wait about 30 s.
    limits = {"backend": "redis", "url": redis_server.url, "tpm": 600}
    async with client(fake_server, limits) as one, client(fake_server, limits) as other:
        reply = await one.chat.completions.create(model="local/echo", messages=MESSAGES, max_tokens=300)
        assert reply.usage is not None
        assert reply.usage.total_tokens == 6
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await other.chat.completions.create(model="local/echo", messages=MESSAGES, max_tokens=3)
        assert time.monotonic() - started < 10


async def test_a_rate_learned_from_headers_by_one_process_paces_the_others(
    fake_server: FakeServer, redis_server: RedisServer
) -> None:
    # The fake server sends back what x-fake-reply-* asks for: OpenAI's headers stating
    # 120 requests per minute (2 per second, a burst of 2), to the first client only.
    stated = {"limit-requests": "120", "remaining-requests": "119", "reset-requests": "500ms"}
    headers = {f"x-fake-reply-x-ratelimit-{name}": value for name, value in stated.items()}
    limits = {"backend": "redis", "url": redis_server.url, "account": "team"}
    async with client(fake_server, limits, headers=headers) as one, client(fake_server, limits) as other:
        assert await ask(one) == "hi"
        state = aioredis.Redis.from_url(redis_server.url)
        for _ in range(100):  # stored after the reply, without holding the caller up
            if await state.hget("llmadapters:{team}:state", "rpm"):
                break
            await asyncio.sleep(0.05)
        assert await state.hget("llmadapters:{team}:state", "rpm") == b"120.0"
        await state.aclose()
        started = time.monotonic()
        for _ in range(6):  # the other process's replies state nothing: it paces by Redis
            assert await ask(other) == "hi"
        # 6 calls at 2 per second after a burst of at most 2 take 2 s at least (a lower
        # bound: a loaded machine only makes it longer); unpaced they take milliseconds.
        assert time.monotonic() - started >= 1.5
        assert other.limits()["local"]["rate_limited"] == 0


async def test_redis_stopped_mid_run_falls_back_to_local_limits_with_a_warning(
    fake_server: FakeServer, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    limits = {"backend": "redis", "url": redis_server.url, "rpm": 6000}
    async with client(fake_server, limits) as c:
        assert [await ask(c) for _ in range(3)] == ["hi"] * 3
        redis_server.stop()
        with caplog.at_level(logging.WARNING, logger="llmadapters.redis"):
            assert [await ask(c) for _ in range(3)] == ["hi"] * 3
    warnings = [r.getMessage() for r in caplog.records if r.name == "llmadapters.redis"]
    assert len(warnings) == 1
    assert "unreachable" in warnings[0]
    assert "using this process's own limits" in warnings[0]
    assert fake_server.requests_served == 6


async def test_with_fail_closed_calls_fail_clearly_when_redis_is_down(
    fake_server: FakeServer, redis_server: RedisServer
) -> None:
    limits = {"backend": "redis", "url": redis_server.url, "rpm": 6000, "fail_closed": True}
    async with client(fake_server, limits) as c:
        assert await ask(c) == "hi"
        redis_server.stop()
        with pytest.raises(la.ConnectError, match=r"shared rate limiter of provider 'local'.*fail_closed is set"):
            await ask(c)
        c_route = c._routes["local"]
        limiter = c_route.middleware[0]
        limiter._unreachable(OSError("a release failed"))  # as a background release would
        with pytest.raises(la.ConnectError, match="fail_closed is set"):
            await ask(c)  # still no fallback to local budgets
    assert fake_server.requests_served == 1


def _batch(config: Path, source: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "llmadapters.cli", "batch", str(source), "-o", str(out), "--config", str(config)]
    env = {**os.environ, "LLMADAPTERS_DISABLE_PLUGIN_AUTOLOAD": "0"}
    return subprocess.Popen([*args, "--quiet", *extra], env=env, stderr=subprocess.PIPE)


def _config(path: Path, base_url: str, limits: str) -> Path:
    path.write_text(f'[providers.local]\nbase_url = "{base_url}"\nlimits = {{ {limits} }}\n')
    return path


async def test_a_killed_process_gives_its_permits_back_after_the_lease(
    fake_server: FakeServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    limits = f'backend = "redis", url = "{redis_server.url}", max_concurrency = 2, lease = 2'
    config = _config(tmp_path / "llmadapters.toml", fake_server.base_url, limits)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"custom_id": f"s{i}", "model": "local/stall", "messages": MESSAGES}) + "\n"
                              for i in range(2)))  # fmt: skip
    worker = _batch(config, source, tmp_path / "out.jsonl")
    deadline = time.monotonic() + 20
    while fake_server.active < 2 and time.monotonic() < deadline:  # noqa: ASYNC110 - a counter, not an event
        await asyncio.sleep(0.05)
    assert fake_server.active == 2  # both permits held, both calls stalled
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    limit = {"backend": "redis", "url": redis_server.url, "max_concurrency": 2, "lease": 2}
    async with client(fake_server, limit) as c:
        started = time.monotonic()
        assert await ask(c) == "hi"
        waited = time.monotonic() - started
    assert 0.5 < waited < 30  # the dead worker's leases lapsed (2 s after its last renewal), not never


async def test_four_processes_stay_within_one_shared_request_rate(
    fake_server: FakeServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    rate = 100.0  # requests per second: 4 x 500 requests take 20 s
    limits = f'backend = "redis", url = "{redis_server.url}", rpm = {rate * 60:.0f}'
    config = _config(tmp_path / "llmadapters.toml", fake_server.base_url, limits)
    source = tmp_path / "in.jsonl"
    with source.open("w") as f:
        for i in range(2000):
            f.write(json.dumps({"custom_id": f"q{i}", "model": "local/echo", "messages": MESSAGES}) + "\n")
    redis_client = aioredis.from_url(redis_server.url, socket_timeout=None)  # MONITOR waits: no read timeout
    async with redis_client.monitor() as monitor:
        noting = asyncio.ensure_future(note_grants(monitor))
        workers = [_batch(config, source, tmp_path / f"out.{i}.jsonl", "--shard", f"{i}/4") for i in range(1, 5)]
        # The fake server runs on this loop: wait for the workers in threads.
        await asyncio.gather(*(asyncio.to_thread(w.wait) for w in workers))
        await redis_client.echo(END)
        grants = {grant.call: grant.at for grant in await noting}
    await redis_client.aclose()
    errors = [w.stderr.read().decode() if w.stderr else "" for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0, 0], errors
    assert errors == [""] * 4  # no warning: Redis served every process all along
    assert len(fake_server.arrivals) == 2000
    # Every call was granted once, and the grants, timed by Redis's clock, keep to GCRA's
    # bound over any window: the rate x window, plus the one-second burst (1 for the
    # clock's rounding). Timed at the fake server instead, arrivals lag their grants by
    # whatever the load on the machine makes it, and bunch up past any fixed tolerance.
    assert len(grants) == 2000
    granted = sorted(grants.values())
    for window in (1.0, 5.0, 10.0):
        most = most_in_a_window(granted, window)
        assert most <= rate * window + rate + 1, (window, most)
    observed = (len(granted) - 1) / (granted[-1] - granted[0])
    assert observed >= 0.8 * rate, observed
    print(f"4 processes x 500 requests, shared limit {rate:.0f}/s: granted {observed:.1f}/s overall")


async def test_a_stream_holds_its_permit_until_it_ends(fake_server: FakeServer, redis_server: RedisServer) -> None:
    limits = {"backend": "redis", "url": redis_server.url, "max_concurrency": 1}
    async with client(fake_server, limits) as one, client(fake_server, limits) as other:
        stream = await one.chat.completions.create(model="local/echo", messages=MESSAGES, stream=True)
        # The other client's call waits for the one permit, the open stream's. It is not
        # cancelled to show it (a cancel in the middle of a Redis command is not what is
        # tested here): it goes on once the stream has ended.
        waiting = asyncio.ensure_future(ask(other))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        assert len(fake_server.arrivals) == 1
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "hi"
        assert await asyncio.wait_for(waiting, 30) == "hi"
        assert len(fake_server.arrivals) == 2


async def test_calls_cancelled_at_any_point_leave_no_permit_held(
    fake_server: FakeServer, redis_server: RedisServer
) -> None:
    """A call cancelled while the limiter talks to Redis (before, during or after the
    acquire script's round trip, or while the call is out) gives its permit back at once,
    not when its lease lapses, and leaves the connection usable."""
    limits = {"backend": "redis", "url": redis_server.url, "max_concurrency": 4, "tpm": 100_000, "lease": 600}
    async with client(fake_server, limits) as c:
        for turn in range(80):
            call = asyncio.ensure_future(ask(c))
            for _ in range(turn % 16):  # each turn lets the call run one step further
                await asyncio.sleep(0)
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
        assert [await ask(c) for _ in range(3)] == ["hi"] * 3
    async with aioredis.from_url(redis_server.url) as direct:
        assert await direct.zcard("llmadapters:{local}:leases") == 0


async def test_each_api_key_has_a_shared_budget_of_its_own(
    fake_server: FakeServer, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_TEST_KEY_1", "sk-one-0000000000000000")
    monkeypatch.setenv("REDIS_TEST_KEY_2", "sk-two-0000000000000000")
    limits = {"backend": "redis", "url": redis_server.url, "max_concurrency": 1}
    keys = {"api_key_env": ["REDIS_TEST_KEY_1", "REDIS_TEST_KEY_2"]}
    async with client(fake_server, limits, **keys) as one:
        stream = await one.chat.completions.create(model="local/echo", messages=MESSAGES, stream=True)
        # The open stream holds one key's only permit; the other key's is free.
        assert await asyncio.wait_for(ask(one), 5) == "hi"
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "hi"
    sent = [h["authorization"] for h in fake_server.seen_headers]
    assert sorted(sent) == ["Bearer sk-one-0000000000000000", "Bearer sk-two-0000000000000000"]
