"""A middleware of your own: count tokens and cost per provider, for unary and streamed calls."""

import asyncio
from collections import Counter

import llmadapters as la
from llmadapters.plugin import Call, CallNext, Reply

PRICE_PER_1K_TOKENS = {"fake": 0.002}
spent: Counter[str] = Counter()


async def cost_tracker(call: Call, call_next: CallNext) -> Reply:
    reply = await call_next(call)
    price = PRICE_PER_1K_TOKENS.get(call.provider, 0.0)
    if not isinstance(reply, la.ChatCompletionStream):
        spent[call.provider] += (reply.usage.total_tokens or 0) * price / 1000 if reply.usage else 0
        return reply

    def count(end: la.StreamEnd) -> None:  # a stream's usage comes with its last chunk
        if end.usage:
            spent[call.provider] += (end.usage.total_tokens or 0) * price / 1000

    reply.on_end(count)
    return reply


async def main() -> None:
    async with la.AsyncClient(middleware=["logging", "retry", cost_tracker]) as client:
        for _ in range(10):
            await client.chat.completions.create(model="fake/lorem", messages=[{"role": "user", "content": "hi"}])
        stream = await client.chat.completions.create(
            model="fake/lorem",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        async for _ in stream:
            pass
    print(f"spent on fake: ${spent['fake']:.4f}")


asyncio.run(main())
