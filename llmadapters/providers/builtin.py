"""The providers that ship with llmadapters: ``openai``, ``fake`` and ad hoc
``openai-compatible`` endpoints configured by ``base_url``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..hookspecs import hookimpl
from ..pricing import words_and_four
from .base import OPENAI_BATCH_API, EmbeddingsAPI, Launched, ProviderSpec

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["BUILTIN_PROVIDERS", "openai_compatible", "register_providers"]


async def _launch_fake_server() -> Launched:
    from ..testing.fake_server import FakeServer

    server = await FakeServer().start()
    return Launched(base_url=server.base_url, aclose=server.aclose)


def openai_compatible(name: str, base_url: str | None = None) -> ProviderSpec:
    """A provider for any OpenAI-compatible server (vLLM, Ollama, a proxy, ...): Bearer
    auth from ``api_key_env`` when one is configured, no quirks."""
    return ProviderSpec(
        name=name, base_url=base_url, key_required=False, embeddings=EmbeddingsAPI(), models_path="/models"
    )


BUILTIN_PROVIDERS: tuple[ProviderSpec, ...] = (
    # https://platform.openai.com/docs/api-reference/chat; embeddings:
    # https://platform.openai.com/docs/api-reference/embeddings (2,048 inputs a request).
    ProviderSpec(
        name="openai",
        base_url="https://api.openai.com/v1",
        api_key_env="OPENAI_API_KEY",
        batch_api=OPENAI_BATCH_API,
        # platform.openai.com/docs/api-reference/embeddings: 2,048 inputs, and 300,000
        # tokens summed over the inputs of one request.
        embeddings=EmbeddingsAPI(
            models=("text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"),
            max_inputs=2048,
            max_tokens=300_000,
        ),
        models_path="/models",  # https://platform.openai.com/docs/api-reference/models/list
    ),
    # A real server on loopback, started in-process on first use; see llmadapters.testing.
    # Its prompt tokens are counted as the server counts them, so estimates are exact.
    ProviderSpec(
        name="fake",
        key_required=False,
        default_model="echo",
        launch=_launch_fake_server,
        count_tokens=words_and_four,
        batch_api=OPENAI_BATCH_API,  # the fake server implements the files and batches endpoints
        embeddings=EmbeddingsAPI(models=("embed", "embed-large"), max_inputs=2048),
        models_path="/models",
    ),
)


@hookimpl
def register_providers(register: Callable[[ProviderSpec], None]) -> None:
    for spec in BUILTIN_PROVIDERS:
        register(spec)
