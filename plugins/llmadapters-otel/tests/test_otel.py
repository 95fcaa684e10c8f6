from __future__ import annotations

import contextlib

from llmadapters_otel import OTelMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import llmadapters as la
from llmadapters.plugins import Registry
from llmadapters.testing import FakeServer

MESSAGES = [{"role": "user", "content": "trace me"}]


def traced() -> tuple[OTelMiddleware, InMemorySpanExporter]:
    """The middleware, and where its spans end up."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return OTelMiddleware(provider.get_tracer("test")), exporter


async def test_one_span_per_call_with_genai_attributes() -> None:
    otel, exporter = traced()
    async with FakeServer() as server:
        port = int(server.base_url.split(":")[2].split("/")[0])
        providers = {"local": {"base_url": server.base_url, "api_key": "sk-otel-SECRET"}}
        async with la.AsyncClient(
            {}, providers=providers, middleware=[otel, "retry"], retry={"max_attempts": 2}
        ) as client:
            await client.chat.completions.create(model="local/echo", messages=MESSAGES)
            stream = await client.chat.completions.create(
                model="local/echo", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            async for _ in stream:
                pass
            with contextlib.suppress(la.BadRequestError):
                await client.chat.completions.create(model="local/fail-400", messages=MESSAGES)
    unary, streamed, failed = exporter.get_finished_spans()
    assert unary.name == "chat echo"
    assert unary.kind.name == "CLIENT"
    assert dict(unary.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "local",
        "gen_ai.request.model": "echo",
        "server.address": "127.0.0.1",
        "server.port": port,
        "gen_ai.response.model": "echo",
        "gen_ai.response.id": unary.attributes["gen_ai.response.id"],  # type: ignore[index]
        "gen_ai.usage.input_tokens": 6,
        "gen_ai.usage.output_tokens": 2,
        "gen_ai.response.finish_reasons": ("stop",),
        "llmadapters.attempts": 1,
    }
    assert streamed.attributes is not None
    assert streamed.attributes["gen_ai.usage.output_tokens"] == 2
    assert streamed.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert failed.attributes is not None
    assert failed.attributes["error.type"] == "BadRequestError"
    assert failed.status.status_code.name == "ERROR"
    assert all("SECRET" not in repr(dict(s.attributes or {})) for s in (unary, streamed, failed))


def test_registered_and_named_in_config() -> None:
    registry = Registry.load(allow=["otel"])
    assert registry.source["middleware:otel"] == "otel"
    la.AsyncClient({"defaults": {"middleware": ["otel", "logging"]}}, registry=registry)


async def test_the_cost_of_a_priced_call_is_on_its_span() -> None:
    otel, exporter = traced()
    async with FakeServer() as server:
        prices = {"echo": {"input": 2.0, "output": 10.0, "currency": "EUR"}}
        providers = {"local": {"base_url": server.base_url, "prices": prices}}
        async with la.AsyncClient({}, providers=providers, middleware=[otel]) as client:
            await client.chat.completions.create(model="local/echo", messages=MESSAGES)
            await client.chat.completions.create(model="local/unpriced", messages=MESSAGES)
    priced, unpriced = exporter.get_finished_spans()
    assert priced.attributes is not None
    # 6 prompt tokens at 2 and 2 completion tokens at 10, per million
    assert priced.attributes["llmadapters.cost"] == (6 * 2.0 + 2 * 10.0) / 1e6
    assert priced.attributes["llmadapters.cost.currency"] == "EUR"
    assert "llmadapters.cost" not in (unpriced.attributes or {})


async def test_an_embeddings_call_is_an_embeddings_span() -> None:
    otel, exporter = traced()
    async with FakeServer() as server:
        providers = {"local": {"base_url": server.base_url}}
        async with la.AsyncClient({}, providers=providers, middleware=[otel]) as client:
            await client.embeddings.create(model="local/embed", input=["one two", "three"])
    (span,) = exporter.get_finished_spans()
    assert span.name == "embeddings embed"
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.operation.name"] == "embeddings"
    assert attributes["gen_ai.usage.input_tokens"] == 3
    assert "gen_ai.usage.output_tokens" not in attributes
    assert "gen_ai.response.finish_reasons" not in attributes
