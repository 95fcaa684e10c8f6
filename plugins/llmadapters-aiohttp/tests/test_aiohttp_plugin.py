"""The installed plugin is found and chosen by name, and passes llmadapters' transport
conformance suite (llmadapters' own tests/test_transports.py also runs through it)."""

from __future__ import annotations

from llmadapters_aiohttp import FEATURES, aiohttp_transport
from llmadapters_aiohttp.transport import AiohttpTransport

import llmadapters as la
from llmadapters.plugins import Registry
from llmadapters.testing import FakeServer
from llmadapters.testing.conformance import TransportConformance


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


class TestConformance(TransportConformance):
    transport_factory = staticmethod(aiohttp_transport)
    supports = FEATURES
