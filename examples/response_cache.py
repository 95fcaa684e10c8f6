"""The same job twice on one response cache: the second run sends nothing."""

import asyncio

import llmadapters as la

CONFIG = {
    "defaults": {
        # Before retry and ratelimit: a hit costs no attempt and no rate-limit budget.
        "middleware": ["logging", "cache", "retry", "ratelimit", "timeout"],
        "cache": {"path": "responses.sqlite", "max_size": 100_000_000, "expire": 7 * 24 * 3600},
    }
}
QUESTIONS = [f"What is {n} + {n}?" for n in range(20)]


async def run() -> int:
    async with la.AsyncClient(CONFIG) as client:
        replies = await asyncio.gather(
            *(
                client.chat.completions.create(model="fake/echo", messages=[{"role": "user", "content": q}])
                for q in QUESTIONS
            )
        )
    return sum(reply.http is not None and reply.http.cached for reply in replies)


async def main() -> None:
    for name in ("first", "second"):
        print(f"{name} run: {await run()} of {len(QUESTIONS)} answered from the cache")


asyncio.run(main())
