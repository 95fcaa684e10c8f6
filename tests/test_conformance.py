"""The conformance suites of llmadapters.testing, run on the built-in transports (every
package in plugins/ runs them on itself), and the pytest plugin's fixture."""

from __future__ import annotations

from typing import TYPE_CHECKING

import llmadapters as la
from llmadapters.testing.conformance import TransportConformance
from llmadapters.transports.builtin import httpx_transport, openai_transport
from llmadapters.transports.openai_sdk import OpenAITransport

if TYPE_CHECKING:
    from llmadapters.testing import FakeServer


class TestHttpxTransport(TransportConformance):
    transport_factory = staticmethod(httpx_transport)


class TestOpenAITransport(TransportConformance):
    transport_factory = staticmethod(openai_transport)


class TestOpenAITransportOnHttpx2(TransportConformance):
    transport_factory = staticmethod(lambda options: OpenAITransport(options, http_client="httpx"))


def test_the_pytest_plugin_serves_a_fake_server(llmadapters_fake_server: FakeServer) -> None:
    with la.Client({}, providers={"local": {"base_url": llmadapters_fake_server.base_url}}) as client:
        reply = client.chat.completions.create(model="local/echo", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "hi"
    assert llmadapters_fake_server.requests_served == 1
