"""Fan out one question to several providers at once, and fall back when one fails.

Two local fake servers stand in for two providers here; with real ones, only the
``providers`` settings change (a base URL is already known for plugin providers, and
the keys come from their environment variables)."""

import asyncio

import llmadapters as la
from llmadapters.testing import FakeServer


async def main() -> None:
    async with FakeServer() as first, FakeServer() as second:
        providers = {"alpha": {"base_url": first.base_url}, "beta": {"base_url": second.base_url}}
        async with la.AsyncClient(providers=providers) as client:
            question = [{"role": "user", "content": "what is 2 + 2"}]
            replies = await asyncio.gather(
                *(client.chat.completions.create(model=f"{name}/echo", messages=question) for name in providers)
            )
            for reply in replies:
                print(reply.provider, reply.choices[0].message.content)

            # alpha's model always fails with a 400 here: the chain moves on to beta.
            reply = await client.chat.completions.create(model=["alpha/fail-400", "beta/echo"], messages=question)
            print("answered by", reply.provider)


asyncio.run(main())
