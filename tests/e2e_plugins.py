"""Run by test_plugin_packages.py inside a fresh venv where llmadapters and the plugin
packages were pip-installed as a user would (see the Makefile's .venv-e2e): calls every
provider plugin's model through every transport, against a fake server standing in for
the providers, configured from a TOML file. Prints the results as JSON."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import subprocess
import sys
from typing import TYPE_CHECKING, Any, ClassVar

import llmadapters as la
from llmadapters.plugins import Registry
from llmadapters.testing import FakeServer
from llmadapters.types import ResponseInfo

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping

    from llmadapters.transports.base import Endpoint

PROVIDERS = {
    "deepseek": "DEEPSEEK_API_KEY",
    "zhipu": "ZHIPUAI_API_KEY",
    "mimo": "MIMO_API_KEY",
    "moonshot": "MOONSHOT_API_KEY",
    "qwen": "DASHSCOPE_API_KEY",
}
TRANSPORTS = ("httpx", "openai", "aiohttp")


async def calls() -> dict[str, object]:
    results: dict[str, object] = {"llmadapters": la.__file__}
    async with FakeServer() as server:
        config = pathlib.Path("llmadapters.toml")
        text = "".join(f'[providers.{name}]\nbase_url = "{server.base_url}"\n' for name in PROVIDERS)
        await asyncio.to_thread(config.write_text, text)
        made = []
        for name, env in PROVIDERS.items():
            os.environ[env] = f"sk-{name}-e2e"
            for transport in TRANSPORTS:
                async with la.AsyncClient(transport=transport) as client:  # reads ./llmadapters.toml
                    reply = await client.chat.completions.create(
                        model=f"{name}/echo", messages=[{"role": "user", "content": f"{name} via {transport}"}]
                    )
                    stream = await client.chat.completions.create(
                        model=f"{name}/echo", messages=[{"role": "user", "content": "streamed"}], stream=True
                    )
                    streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
                    seen = server.seen_headers[-1]
                made.append(
                    {
                        "provider": reply.provider,
                        "transport": transport,
                        "content": reply.choices[0].message.content,
                        "streamed": streamed,
                        "auth": seen.get("authorization") or seen.get("api-key"),
                    }
                )
        results["calls"] = made
    async with la.AsyncClient({}) as client:
        results["default_base_urls"] = {name: client.registry.providers[name].base_url for name in PROVIDERS}
    # Where a call to the real DeepSeek would go, seen by a transport that records instead
    # of sending (no traffic leaves the machine).
    registry = Registry.load()
    registry.add_transport("record", lambda options: Recording())
    async with la.AsyncClient({}, transport="record", registry=registry) as client:
        reply = await client.chat.completions.create(
            model="deepseek/deepseek-chat", messages=[{"role": "user", "content": "hi"}]
        )
    results["recorded"] = {**Recording.seen[-1], "reply": reply.choices[0].message.content}
    return results


class Recording:
    """A transport that answers without sending, noting where it was asked to send."""

    seen: ClassVar[list[dict[str, object]]] = []

    async def send(self, endpoint: Endpoint, payload: Mapping[str, Any]) -> tuple[dict[str, Any], ResponseInfo]:
        auth = {k: v for k, v in endpoint.headers.items() if k.lower() == "authorization"}
        Recording.seen.append({"url": endpoint.url, "auth": auth, "model": payload["model"]})
        reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "recorded"}}]}
        return reply, ResponseInfo(200, {})

    async def stream(
        self, endpoint: Endpoint, payload: Mapping[str, Any]
    ) -> AsyncGenerator[ResponseInfo | dict[str, Any], None]:
        data, info = await self.send(endpoint, payload)
        yield info
        yield data

    async def aclose(self) -> None:
        return None


results = asyncio.run(calls())
listing = subprocess.run([sys.executable, "-m", "llmadapters.cli", "plugins"], capture_output=True, text=True)
results["plugins"] = listing.stdout
print(json.dumps(results))
