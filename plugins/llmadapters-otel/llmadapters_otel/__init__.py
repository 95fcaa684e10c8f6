"""OpenTelemetry spans for llmadapters calls, registered as the middleware ``otel``.

A call's cost, when its model's price is known, goes to ``llmadapters.cost`` and
``llmadapters.cost.currency`` (the GenAI conventions name no cost attribute).
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from llmadapters import ChatCompletionStream, CreateEmbeddingResponse, EmbeddingRequest, LLMAdapterError, hookimpl

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable

    from llmadapters import ChatCompletion, ChatCompletionChunk
    from llmadapters.plugin import Call, CallNext, Middleware, MiddlewareFactory, ProviderSpec, Reply, Settings

__all__ = ["OTelMiddleware", "register_middleware"]


def _reply_attributes(
    reply: ChatCompletion | ChatCompletionChunk | CreateEmbeddingResponse, finish: list[str]
) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if reply.model:
        attributes["gen_ai.response.model"] = reply.model
    if not isinstance(reply, CreateEmbeddingResponse) and reply.id:  # an embedding has no id
        attributes["gen_ai.response.id"] = reply.id
    if reply.usage is not None:
        if reply.usage.prompt_tokens is not None:
            attributes["gen_ai.usage.input_tokens"] = reply.usage.prompt_tokens
        if reply.usage.completion_tokens is not None:
            attributes["gen_ai.usage.output_tokens"] = reply.usage.completion_tokens
    if reply.cost is not None:
        attributes["llmadapters.cost"] = reply.cost.amount
        attributes["llmadapters.cost.currency"] = reply.cost.currency
    if not isinstance(reply, CreateEmbeddingResponse):
        finish += [c.finish_reason for c in reply.choices if c.finish_reason]
    return attributes


class OTelMiddleware:
    """One CLIENT span per call, with the GenAI semantic conventions' attributes."""

    def __init__(self, tracer: trace.Tracer | None = None) -> None:
        self._tracer = tracer or trace.get_tracer("llmadapters")

    def _start(self, call: Call) -> trace.Span:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "embeddings" if isinstance(call.request, EmbeddingRequest) else "chat",
            "gen_ai.provider.name": call.provider,
            "gen_ai.request.model": call.request.model,
        }
        url = urllib.parse.urlsplit(call.endpoint.base_url)
        if url.hostname:
            attributes["server.address"] = url.hostname
            attributes["server.port"] = url.port or (443 if url.scheme == "https" else 80)
        operation = attributes["gen_ai.operation.name"]
        return self._tracer.start_span(
            f"{operation} {call.request.model}", kind=trace.SpanKind.CLIENT, attributes=attributes
        )

    @staticmethod
    def _end(span: trace.Span, call: Call, error: BaseException | None, finish: list[str]) -> None:
        span.set_attribute("llmadapters.attempts", call.attempts)
        if finish:
            span.set_attribute("gen_ai.response.finish_reasons", finish)
        if error is not None:
            span.set_attribute("error.type", type(error).__name__)
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(error)))
        span.end()

    async def __call__(self, call: Call, call_next: CallNext) -> Reply:
        span = self._start(call)
        finish: list[str] = []
        try:
            reply = await call_next(call)
        except LLMAdapterError as exc:
            self._end(span, call, exc, finish)
            raise
        if isinstance(reply, ChatCompletionStream):
            return reply.with_chunks(self._traced(reply, span, call))
        span.set_attributes(_reply_attributes(reply, finish))
        self._end(span, call, None, finish)
        return reply

    async def _traced(
        self, stream: ChatCompletionStream, span: trace.Span, call: Call
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        finish: list[str] = []
        error: BaseException | None = None
        try:
            async with stream:
                async for chunk in stream:
                    span.set_attributes(_reply_attributes(chunk, finish))
                    yield chunk
        except LLMAdapterError as exc:
            error = exc
            raise
        finally:
            self._end(span, call, error, finish)


def otel_middleware(spec: ProviderSpec, settings: Settings) -> Middleware:
    return OTelMiddleware()


@hookimpl
def register_middleware(register: Callable[[str, MiddlewareFactory], None]) -> None:
    register("otel", otel_middleware)
