"""Cost and budgets: prices in the config, the cost of each reply, and a batch that
stops at its budget, against the fake provider (no key needed).

    python examples/cost_and_budget.py
"""

import asyncio

import llmadapters as la

# Per million tokens. A provider plugin declares its own models' prices; the config adds
# or overrides any model's.
CONFIG = {"providers": {"fake": {"prices": {"echo": {"input": 0.50, "cached_input": 0.05, "output": 2.00}}}}}


async def main() -> None:
    async with la.AsyncClient(CONFIG) as client:
        reply = await client.chat.completions.create(
            model="fake/echo", messages=[{"role": "user", "content": "price this reply"}]
        )
        assert reply.usage is not None
        print(reply.usage.prompt_tokens, "in,", reply.usage.completion_tokens, "out:", reply.cost)

        other = await client.chat.completions.create(model="fake/other", messages=[{"role": "user", "content": "hi"}])
        print("a model with no price:", other.cost)  # None: never a guess, never zero

        # max_tokens bounds each call's output, so the budget can bound its cost before it is sent.
        requests = [
            {
                "custom_id": f"q{i}",
                "body": {"messages": [{"role": "user", "content": f"question number {i}"}], "max_tokens": 5},
            }
            for i in range(100)
        ]
        run = client.batch(requests, model="fake/echo", concurrency=4, max_cost=0.0001)
        results = [result async for result in run]
        assert run.budget is not None
        print(len(results), "answered;", run.budget.reached)


asyncio.run(main())
