"""Async: many calls at once, then a streamed one, against the built-in fake provider."""

import asyncio

import llmadapters as la


async def main() -> None:
    async with la.AsyncClient() as client:
        prompts = [f"Summarise item {i}" for i in range(100)]
        replies = await asyncio.gather(
            *(
                client.chat.completions.create(model="fake/echo", messages=[{"role": "user", "content": p}])
                for p in prompts
            )
        )
        first = replies[0]
        print(first.choices[0].message.content, first.usage.total_tokens if first.usage else None, first.provider)

        stream = await client.chat.completions.create(
            model="fake/echo", messages=[{"role": "user", "content": "streamed word by word"}], stream=True
        )
        async with stream:
            async for chunk in stream:
                print(chunk.choices[0].delta.content or "" if chunk.choices else "", end="")
        print()


asyncio.run(main())
