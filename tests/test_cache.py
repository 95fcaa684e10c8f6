"""The response cache (the ``cache`` middleware), against the fake server over loopback."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

import llmadapters as la
from llmadapters.testing import FakeServer

if TYPE_CHECKING:
    from pathlib import Path


MESSAGES = [{"role": "user", "content": "hi"}]
CHAIN = ["logging", "cache", "retry", "ratelimit", "timeout"]


def cached_client(fake_server: FakeServer, path: Path, **cache: Any) -> la.AsyncClient:
    config = {
        "defaults": {"middleware": CHAIN, "cache": {"path": str(path), **cache}},
        "providers": {"local": {"base_url": fake_server.base_url}},
    }
    return la.AsyncClient(config)


async def test_a_repeated_call_is_answered_from_the_cache(fake_server: FakeServer, tmp_path: Path) -> None:
    async with cached_client(fake_server, tmp_path / "cache.sqlite") as client:
        first = await client.chat.completions.create(model="local/echo", messages=MESSAGES)
        again = await client.chat.completions.create(model="local/echo", messages=MESSAGES)
        other = await client.chat.completions.create(model="local/echo", messages=[{"role": "user", "content": "ho"}])
    assert len(fake_server.arrivals) == 2  # the repeated call never reached the server
    assert first.http is not None
    assert not first.http.cached
    assert again.http is not None
    assert again.http.cached
    assert again.choices[0].message.content == first.choices[0].message.content == "hi"
    assert again.usage == first.usage
    assert again.http.request_id == first.http.request_id  # the headers it first came with
    assert other.choices[0].message.content == "ho"
    # Another client on the same file (a later run) finds it too.
    async with cached_client(fake_server, tmp_path / "cache.sqlite") as client:
        later = await client.chat.completions.create(model="local/echo", messages=MESSAGES)
    assert later.http is not None
    assert later.http.cached
    assert len(fake_server.arrivals) == 2


async def test_a_provider_name_on_another_server_is_not_answered_from_the_first_s_replies(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    """The cache file is the user's, shared by configs in which ``local`` may be any
    server."""
    async with FakeServer() as other:
        for server in (fake_server, other):
            async with cached_client(server, tmp_path / "cache.sqlite") as client:
                reply = await client.chat.completions.create(model="local/echo", messages=MESSAGES)
            assert reply.http is not None
            assert not reply.http.cached
        assert len(other.arrivals) == 1


async def test_a_stream_is_stored_as_its_chunks_and_replayed_as_a_stream(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    async def read(client: la.AsyncClient) -> tuple[list[str], bool]:
        stream = await client.chat.completions.create(
            model="local/lorem", messages=MESSAGES, stream=True, max_tokens=20
        )
        assert stream.http is not None
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return parts, stream.http.cached

    async with cached_client(fake_server, tmp_path / "cache.sqlite") as client:
        first, first_cached = await read(client)
        again, again_cached = await read(client)
        unary = await client.chat.completions.create(model="local/lorem", messages=MESSAGES, max_tokens=20)
    assert len(first) > 5
    assert again == first
    assert (first_cached, again_cached) == (False, True)
    assert unary.http is not None
    assert not unary.http.cached  # a whole reply is not a stream's: asked for and stored apart
    assert len(fake_server.arrivals) == 2


async def test_a_stream_closed_early_is_not_stored(fake_server: FakeServer, tmp_path: Path) -> None:
    async with cached_client(fake_server, tmp_path / "cache.sqlite") as client:
        for _ in range(2):
            stream = await client.chat.completions.create(
                model="local/lorem", messages=MESSAGES, stream=True, max_tokens=20
            )
            async with stream:
                async for _chunk in stream:
                    break
    assert len(fake_server.arrivals) == 2


async def test_errors_are_not_cached(fake_server: FakeServer, tmp_path: Path) -> None:
    async with cached_client(fake_server, tmp_path / "cache.sqlite") as client:
        for _ in range(2):
            with pytest.raises(la.BadRequestError):
                await client.chat.completions.create(model="local/fail-400", messages=MESSAGES)
    assert len(fake_server.arrivals) == 2


@pytest.mark.parametrize(
    ("params", "nondeterministic", "arrivals"),
    [
        ({"temperature": 0.7}, False, 2),  # sampled: the next answer would differ
        ({"temperature": 0.7, "seed": 1}, False, 1),
        ({"temperature": 0}, False, 1),
        ({"temperature": 0.7}, True, 1),  # asked for
    ],
)
async def test_sampled_requests_are_cached_only_when_asked(
    fake_server: FakeServer, tmp_path: Path, params: dict[str, Any], nondeterministic: bool, arrivals: int
) -> None:
    async with cached_client(fake_server, tmp_path / "c.sqlite", nondeterministic=nondeterministic) as client:
        for _ in range(2):
            await client.chat.completions.create(model="local/echo", messages=MESSAGES, **params)
    assert len(fake_server.arrivals) == arrivals


async def test_a_hit_costs_no_rate_limit_budget(fake_server: FakeServer, tmp_path: Path) -> None:
    config = {
        "defaults": {"middleware": CHAIN, "cache": {"path": str(tmp_path / "c.sqlite")}},
        # One request every 10 s: a second call that took the budget would wait 10 s.
        "providers": {"local": {"base_url": fake_server.base_url, "limits": {"rpm": 6, "adaptive": False}}},
    }
    async with la.AsyncClient(config) as client:
        await client.chat.completions.create(model="local/echo", messages=MESSAGES)
        hit = await asyncio.wait_for(client.chat.completions.create(model="local/echo", messages=MESSAGES), 5)
        assert hit.http is not None
        assert hit.http.cached
        assert client.limits()["local"]["waited_s"] == 0


def _rows(path: Path) -> tuple[int, int, int]:
    with sqlite3.connect(path) as db:
        count, stored = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM replies").fetchone()
        (total,) = db.execute("SELECT size FROM totals").fetchone()
    return count, stored, total


async def test_the_cache_keeps_within_its_size_dropping_the_least_recently_used(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    path = tmp_path / "c.sqlite"
    async with cached_client(fake_server, path, max_size=4000) as client:

        async def ask(text: str) -> bool:
            reply = await client.chat.completions.create(
                model="local/echo", messages=[{"role": "user", "content": text}]
            )
            assert reply.http is not None
            return reply.http.cached

        for i in range(40):
            await ask(f"question {i}")
        count, stored, total = _rows(path)
        assert stored == total <= 4000
        assert 0 < count < 40
        assert await ask("question 39")  # the newest are kept
        assert not await ask("question 0")  # the oldest went first


async def test_an_expired_reply_is_asked_again(fake_server: FakeServer, tmp_path: Path) -> None:
    async with cached_client(fake_server, tmp_path / "c.sqlite", expire=0.3) as client:
        await client.chat.completions.create(model="local/echo", messages=MESSAGES)
        await client.chat.completions.create(model="local/echo", messages=MESSAGES)
        assert len(fake_server.arrivals) == 1
        await asyncio.sleep(0.4)
        reply = await client.chat.completions.create(model="local/echo", messages=MESSAGES)
    assert reply.http is not None
    assert not reply.http.cached
    assert len(fake_server.arrivals) == 2


_WRITER = """
import asyncio, json, sys
import llmadapters as la

async def main(base_url, path, me):
    config = {
        "defaults": {"middleware": ["cache"], "cache": {"path": path}},
        "providers": {"local": {"base_url": base_url}},
    }
    async with la.AsyncClient(config) as client:
        texts = [f"shared {i}" for i in range(60)] + [f"{me} {i}" for i in range(60)]
        replies = await asyncio.gather(*(
            client.chat.completions.create(model="local/echo", messages=[{"role": "user", "content": t}])
            for t in texts
        ))
        assert [r.choices[0].message.content for r in replies] == texts
    print(json.dumps("ok"))

asyncio.run(main(*sys.argv[1:]))
"""


async def test_two_processes_can_write_to_one_cache_at_once(fake_server: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    command = [sys.executable, "-c", _WRITER, fake_server.base_url, str(path)]
    writers = [
        await asyncio.create_subprocess_exec(*command, name, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name in ("one", "two")
    ]
    for writer in writers:
        out, err = await writer.communicate()
        assert writer.returncode == 0, err.decode()
        assert json.loads(out) == "ok"
    count, stored, total = _rows(path)
    assert count == 60 + 2 * 60  # each reply stored once, the shared ones included
    assert stored == total
    async with cached_client(fake_server, path) as client:
        reply = await client.chat.completions.create(
            model="local/echo", messages=[{"role": "user", "content": "two 5"}]
        )
    assert reply.http is not None
    assert reply.http.cached


async def test_a_cache_opened_while_another_process_writes_to_the_new_file_waits_for_it(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    # SQLite refuses the switch to its write-ahead log at once, busy timeout or not, while
    # another connection holds a write lock on a file still in rollback mode: what two
    # processes opening a new cache together meet.
    path = tmp_path / "new.sqlite"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE theirs (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO theirs VALUES (1)")
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, other.execute, "COMMIT")
    try:
        async with cached_client(fake_server, path) as client:
            first = await client.chat.completions.create(model="local/echo", messages=MESSAGES)
            again = await client.chat.completions.create(model="local/echo", messages=MESSAGES)
    finally:
        other.close()
    assert first.http is not None
    assert not first.http.cached
    assert again.http is not None
    assert again.http.cached
    assert _rows(path)[0] == 1


def test_a_bad_cache_setting_is_a_clear_error(tmp_path: Path) -> None:
    config = {"defaults": {"cache": {"max_size": "big", "colour": "red"}}}
    with pytest.raises(la.ConfigError) as caught:
        la.AsyncClient(config)
    message = str(caught.value)
    assert "defaults.cache.max_size: expected a whole number >= 1, got 'big'" in message
    assert "defaults.cache.colour: unknown key; allowed: path, max_size, expire, nondeterministic" in message
    with pytest.raises(la.ConfigError, match=r"defaults.cache.expire: expected a positive number of seconds, got -1"):
        la.AsyncClient({"defaults": {"cache": {"expire": -1}}})
    with pytest.raises(la.ConfigError, match=r"defaults.cache.nondeterministic: expected true or false, got 'yes'"):
        la.AsyncClient({"defaults": {"cache": {"nondeterministic": "yes"}}})
