"""Embeddings (``client.embeddings.create``) over real loopback HTTP to the fake server,
through every transport and the same middleware as chat calls."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

import llmadapters as la
from llmadapters.middleware import Limits, LoggingMiddleware, RateLimitMiddleware
from llmadapters.middleware.ratelimit import estimate_tokens
from llmadapters.plugin import ProviderSpec
from llmadapters.testing.fake_server import embedding_of
from llmadapters.types import decode_base64_floats
from tests.conftest import test_registry

if TYPE_CHECKING:
    from pathlib import Path

    from llmadapters.testing import FakeServer

MakeClient = Callable[..., la.AsyncClient]
TEXTS = ["the quick brown fox", "jumps over", "the lazy dog"]


async def test_embeddings_come_back_as_floats_in_order_through_each_transport(
    make_client: MakeClient, fake_server: FakeServer, transport: str
) -> None:
    client = make_client(transport)
    reply = await client.embeddings.create(model="local/embed", input=TEXTS, dimensions=16)
    assert isinstance(reply, la.CreateEmbeddingResponse)
    assert [item.index for item in reply.data] == [0, 1, 2]
    assert [item.embedding for item in reply.data] == [embedding_of(text, 16) for text in TEXTS]
    assert reply.model == "embed"
    assert reply.provider == "local"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.total_tokens) == (9, 9)
    assert reply.http is not None
    assert reply.http.status == 200
    # Asked for no encoding: base64 went over the wire, as the openai SDK sends it.
    assert fake_server.seen_targets[-1] == "/v1/embeddings"
    assert fake_server.seen_bodies[-1] == {
        "model": "embed",
        "input": TEXTS,
        "dimensions": 16,
        "encoding_format": "base64",
    }
    assert isinstance(reply.raw["data"][0]["embedding"], str)


async def test_an_asked_encoding_is_sent_and_left_as_it_came(make_client: MakeClient, fake_server: FakeServer) -> None:
    client = make_client()
    floats = await client.embeddings.create(model="local/embed", input="hi", encoding_format="float")
    assert fake_server.seen_bodies[-1]["encoding_format"] == "float"
    encoded = await client.embeddings.create(model="local/embed", input="hi", encoding_format="base64")
    text = encoded.data[0].embedding
    assert isinstance(text, str)
    assert decode_base64_floats(text) == floats.data[0].embedding == embedding_of("hi", 64)
    assert math.isclose(sum(x * x for x in floats.data[0].embedding), 1.0, rel_tol=1e-5)


def test_base64_decodes_to_the_float32s_it_encodes() -> None:
    values = [0.5, -1.25, 3.0, 1e-3]
    text = base64.b64encode(struct.pack("<4f", *values)).decode()
    assert decode_base64_floats(text) == pytest.approx(values, rel=1e-6)
    with pytest.raises(ValueError, match="base64"):
        decode_base64_floats("not base64!")
    with pytest.raises(ValueError, match="multiple of item size"):
        decode_base64_floats(base64.b64encode(b"12345").decode())


async def test_token_ids_and_one_string_are_inputs_too(make_client: MakeClient) -> None:
    client = make_client()
    reply = await client.embeddings.create(model="local/embed", input=[[1, 2, 3], [4]], dimensions=4)
    assert [item.embedding for item in reply.data] == [embedding_of("1 2 3", 4), embedding_of("4", 4)]
    one = await client.embeddings.create(model="local/embed", input=[5, 6], dimensions=4)
    assert len(one.data) == 1


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        ("", ValueError, "empty string"),
        ([], TypeError, "an empty list"),
        ([1.5], TypeError, "a list holding float"),
        (["ok", ""], TypeError, "non-empty strings"),
        ({"text": "hi"}, TypeError, "a dict"),
    ],
)
async def test_a_bad_input_is_refused_before_anything_is_sent(
    make_client: MakeClient, fake_server: FakeServer, bad: Any, error: type[Exception], message: str
) -> None:
    client = make_client()
    with pytest.raises(error, match=message):
        await client.embeddings.create(model="local/embed", input=bad)
    with pytest.raises(ValueError, match="encoding_format must be 'float' or 'base64'"):
        await client.embeddings.create(model="local/embed", input="hi", encoding_format="int8")  # type: ignore[arg-type]
    assert fake_server.requests_served == 0


async def test_the_servers_refusal_is_a_bad_request_error(make_client: MakeClient) -> None:
    client = make_client()
    with pytest.raises(la.BadRequestError, match="does not embed"):
        await client.embeddings.create(model="local/echo", input="hi")
    with pytest.raises(la.BadRequestError, match="'dimensions' must be an integer from 1 to 64"):
        await client.embeddings.create(model="local/embed", input="hi", dimensions=65)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"object": "list", "data": []}, "answered 0 embeddings for 1 inputs"),
        ({"data": [{"index": 0, "embedding": "AAA"}]}, "cannot be read"),
    ],
)
async def test_a_reply_that_does_not_hold_the_vectors_is_malformed(
    make_client: MakeClient, body: dict[str, Any], message: str
) -> None:
    headers = {"x-fake-error-status": "200", "x-fake-error-body": json.dumps(body)}
    client = make_client(headers=headers)
    with pytest.raises(la.MalformedResponseError, match=message):
        await client.embeddings.create(model="local/embed", input="hi")


async def test_vectors_sent_out_of_order_are_put_in_the_inputs_order(make_client: MakeClient) -> None:
    """``data[i]`` is the vector of ``input[i]`` whatever order the server sends them in
    (by their ``index``, as OpenAI's guide says to read them); indexes that are not one
    per input are malformed."""
    vectors = [{"index": i, "embedding": [float(i)]} for i in (2, 0, 1)]
    client = make_client(headers={"x-fake-error-status": "200", "x-fake-error-body": json.dumps({"data": vectors})})
    reply = await client.embeddings.create(model="local/embed", input=["a", "b", "c"])
    assert [(item.index, item.embedding) for item in reply.data] == [(0, [0.0]), (1, [1.0]), (2, [2.0])]
    twice = [{"index": i, "embedding": [float(i)]} for i in (0, 0, 1)]
    client = make_client(headers={"x-fake-error-status": "200", "x-fake-error-body": json.dumps({"data": twice})})
    with pytest.raises(la.MalformedResponseError, match=r"indexed \[0, 0, 1\], not one per input"):
        await client.embeddings.create(model="local/embed", input=["a", "b", "c"])


async def test_failed_attempts_are_retried_like_chat_calls(make_client: MakeClient, fake_server: FakeServer) -> None:
    client = make_client(
        middleware=["retry"], headers={"x-fake-fail-times": "2"}, retry={"max_attempts": 3, "initial_delay": 0.001}
    )
    reply = await client.embeddings.create(model="local/embed+fail-500", input="hi", dimensions=4)
    assert reply.data[0].embedding == embedding_of("hi", 4)
    assert fake_server.requests_served == 3


async def test_the_input_tokens_count_against_tokens_per_minute(make_client: MakeClient) -> None:
    limiter = RateLimitMiddleware(Limits(tpm=60_000, adaptive=False))  # 1,000 tokens/s, 1,000 at once
    client = make_client(middleware=[limiter])
    text = "word " * 400  # 2,000 characters: 500 tokens estimated, 400 counted by the server
    request = client.embedding_request(model="local/embed", input=[text, text])
    assert estimate_tokens(request) == 1000  # no completion tokens are added for an embedding
    assert limiter.budget().estimate(request).tokens == 1000
    started = time.monotonic()
    await asyncio.gather(*(client.embeddings.create(model="local/embed", input=text) for _ in range(8)))
    elapsed = time.monotonic() - started
    # 8 x 400 tokens at 1,000/s after a 1,000-token bucket: over 2 s; no bound above.
    assert elapsed >= 1.5
    assert limiter.stats()["waited_s"] > 0


async def test_logging_records_an_embeddings_call(make_client: MakeClient) -> None:
    records: list[dict[str, Any]] = []
    client = make_client(middleware=[LoggingMiddleware(on_record=records.append)])
    await client.embeddings.create(model="local/embed", input=TEXTS)
    assert records[0]["model"] == "embed"
    assert records[0]["stream"] is False
    assert records[0]["outcome"] == "ok"
    assert records[0]["tokens_in"] == 9
    assert records[0]["tokens_out"] is None


async def test_a_repeated_embedding_is_answered_from_the_cache(fake_server: FakeServer, tmp_path: Path) -> None:
    config = {
        "defaults": {"middleware": ["cache", "retry"], "cache": {"path": str(tmp_path / "c.sqlite")}},
        "providers": {"local": {"base_url": fake_server.base_url}},
    }
    async with la.AsyncClient(config) as client:
        first = await client.embeddings.create(model="local/embed", input=TEXTS)
        again = await client.embeddings.create(model="local/embed", input=TEXTS)
        floats = await client.embeddings.create(model="local/embed", input=TEXTS, encoding_format="float")
        shorter = await client.embeddings.create(model="local/embed", input=TEXTS, dimensions=8)
    assert fake_server.requests_served == 3  # the encoding and the dimensions are part of the key
    assert again.http is not None
    assert again.http.cached
    assert again.data == first.data
    assert floats.http is not None
    assert not floats.http.cached
    assert floats.data == first.data  # the same floats, sent as floats
    assert len(shorter.data[0].embedding) == 8


def test_the_sync_client_embeds() -> None:
    with la.Client({}) as client:
        reply = client.embeddings.create(model="fake/embed", input="hi", dimensions=4)
    assert reply.data[0].embedding == embedding_of("hi", 4)


async def test_a_provider_named_alone_embeds_with_its_first_embedding_model() -> None:
    async with la.AsyncClient({}) as client:
        reply = await client.embeddings.create(model="fake", input="hi")
        assert reply.model == "embed"
        assert len(reply.data[0].embedding) == 64
        chat = await client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}])
        assert chat.model == "echo"  # the chat default is untouched


async def test_a_provider_without_an_embeddings_endpoint_is_refused(fake_server: FakeServer) -> None:
    registry = test_registry()
    registry.add_providers([ProviderSpec(name="chatonly", base_url=fake_server.base_url, key_required=False)])
    async with la.AsyncClient({}, registry=registry) as client:
        with pytest.raises(la.ConfigError, match="provider 'chatonly' has no embeddings endpoint"):
            await client.embeddings.create(model="chatonly/embed", input="hi")
        with pytest.raises(ValueError, match="lists no embedding model"):
            await client.embeddings.create(model="chatonly", input="hi")
    assert fake_server.requests_served == 0
