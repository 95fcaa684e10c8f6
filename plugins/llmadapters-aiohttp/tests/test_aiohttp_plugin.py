"""The transport's contract is tested by llmadapters' own suite (tests/test_transports.py
runs every transport test through "aiohttp" too); here, that the installed plugin is found
and chosen by name."""

from __future__ import annotations

from llmadapters_aiohttp.transport import AiohttpTransport

import llmadapters as la
from llmadapters.plugins import Registry
from llmadapters.testing import FakeServer


async def test_chosen_by_name_from_the_installed_plugin() -> None:
    registry = Registry.load(allow=["aiohttp"])
    assert registry.source["transport:aiohttp"] == "aiohttp"
    async with FakeServer() as server:
        providers = {"local": {"base_url": server.base_url, "transport": "aiohttp"}}
        async with la.AsyncClient({}, providers=providers, registry=registry) as client:
            reply = await client.chat.completions.create(
                model="local/echo", messages=[{"role": "user", "content": "hi"}]
            )
            stream = await client.chat.completions.create(
                model="local/echo", messages=[{"role": "user", "content": "a b"}], stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream])
            assert isinstance((await client.route("local")).transport, AiohttpTransport)
    assert (reply.choices[0].message.content, text) == ("hi", "a b")
