"""``client.models.list(provider)`` and ``llmadapters models PROVIDER``: the provider's
``GET /models``, sent beside the chain, against the fake server over loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

import llmadapters as la
from llmadapters.plugin import ProviderSpec
from llmadapters.testing import FakeServer, FakeServerOptions
from llmadapters.testing.fake_server import BEHAVIOURS, EMBEDDING_MODELS
from tests.conftest import answering, test_registry

if TYPE_CHECKING:
    from pathlib import Path

KEY = "sk-models-test-0123456789"


async def test_the_models_of_a_provider_come_with_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_KEY", KEY)
    async with FakeServer(FakeServerOptions(api_key=KEY)) as server:
        providers = {"local": {"base_url": server.base_url, "api_key_env": "LOCAL_KEY"}}
        async with la.AsyncClient({}, providers=providers) as client:
            models = await client.models.list("local")
    assert [model.id for model in models] == [*EMBEDDING_MODELS, *BEHAVIOURS]
    assert models[0] == la.Model(id="embed", object="model", owned_by="llmadapters", provider="local")
    assert models[0].to_dict() == {"id": "embed", "object": "model", "owned_by": "llmadapters"}
    assert server.seen_targets[-1] == "/v1/models"
    assert server.seen_headers[-1]["authorization"] == f"Bearer {KEY}"


async def test_a_refused_key_is_an_authentication_error_without_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_KEY", KEY)
    async with FakeServer(FakeServerOptions(api_key="sk-another-key")) as server:
        providers = {"local": {"base_url": server.base_url, "api_key_env": "LOCAL_KEY"}}
        async with la.AsyncClient({}, providers=providers) as client:
            with pytest.raises(la.AuthenticationError) as caught:
                await client.models.list("local")
    assert caught.value.status == 401
    assert KEY not in str(caught.value)
    assert KEY not in repr(caught.value)


async def test_a_missing_endpoint_is_a_status_error(fake_server: FakeServer) -> None:
    providers = {"local": {"base_url": fake_server.base_url + "/nothing-here"}}
    async with la.AsyncClient({}, providers=providers) as client:
        with pytest.raises(la.APIStatusError, match="no route GET /v1/nothing-here/models") as caught:
            await client.models.list("local")
    assert caught.value.status == 404


async def test_a_reply_with_no_list_of_models_is_malformed() -> None:
    """Not an empty list: the models could not be read."""
    async with answering(200, "application/json", b'{"data": {"id": "x"}}') as base_url:
        client = la.AsyncClient({}, providers={"local": {"base_url": base_url}})
        async with client:
            with pytest.raises(la.MalformedResponseError, match=r"GET /models of local answered no list of models"):
                await client.models.list("local")


async def test_a_provider_without_a_models_endpoint_is_refused_before_sending(fake_server: FakeServer) -> None:
    registry = test_registry()
    registry.add_providers([ProviderSpec(name="quiet", base_url=fake_server.base_url, key_required=False)])
    async with la.AsyncClient({}, registry=registry) as client:
        with pytest.raises(la.ConfigError, match="provider 'quiet' lists no models"):
            await client.models.list("quiet")
        with pytest.raises(la.ConfigError, match="unknown provider 'nowhere'"):
            await client.models.list("nowhere")
    assert fake_server.requests_served == 0


def test_the_sync_client_lists_the_default_providers_models() -> None:
    with la.Client({"defaults": {"model": "fake/echo"}}) as client:
        models = client.models.list()
    assert "embed" in [model.id for model in models]
    assert {model.provider for model in models} == {"fake"}


def cli_models(provider: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "llmadapters.cli", "models", provider]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=120)


def test_cli_models_prints_one_id_a_line(tmp_path: Path) -> None:
    run = cli_models("fake", tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [*EMBEDDING_MODELS, *BEHAVIOURS]
    refused = cli_models("nowhere", tmp_path)
    assert refused.returncode == 2  # a usage problem, as batch's
    assert "unknown provider 'nowhere'" in refused.stderr


def test_cli_models_into_a_reader_that_went_away_stops_quietly(tmp_path: Path) -> None:
    """`llmadapters models fake | head -1`: the pipe closes before the listing is out."""
    read, write = os.pipe()
    os.close(read)  # no reader: the first write meets EPIPE
    with os.fdopen(write, "w") as pipe:
        done = subprocess.run(
            [sys.executable, "-m", "llmadapters.cli", "models", "fake"],
            stdout=pipe,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
    assert done.returncode == 141
    assert done.stderr == ""  # no traceback
