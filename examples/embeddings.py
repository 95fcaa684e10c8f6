"""Embeddings: one call, the vectors compared, a batch of large inputs, and the models."""

import asyncio
import math

import llmadapters as la

DOCUMENTS = ["the cat sat on the mat", "a dog barked at the moon", "the cat sat on the mat"]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


async def main() -> None:
    async with la.AsyncClient() as client:
        # Vectors travel as base64 and come back as floats, as the openai SDK does.
        reply = await client.embeddings.create(model="fake/embed", input=DOCUMENTS, dimensions=32)
        first, second, third = (item.embedding for item in reply.data)
        tokens = reply.usage.total_tokens if reply.usage else None
        print(len(reply.data), "vectors of", len(first), "floats;", tokens, "tokens")
        print(f"same text: {cosine(first, third):.3f}; other text: {abs(cosine(first, second)) < 0.9}")

        # A batch: each line's 25 inputs go as requests of 10, joined into one result.
        lines = [
            {"custom_id": f"doc-{n}", "model": "fake/embed", "input": [f"chunk {n}.{i}" for i in range(25)]}
            for n in range(4)
        ]
        done = sorted([result async for result in client.batch(lines, embed_chunk=10)], key=lambda r: r.custom_id)
        for result in done[:2]:
            assert isinstance(result.response, la.CreateEmbeddingResponse)
            indexes = [item.index for item in result.response.data]
            print(result.custom_id, "->", len(indexes), "vectors, indexes", indexes[0], "to", indexes[-1])

        models = await client.models.list("fake")
        print("embedding models:", [model.id for model in models if model.id.startswith("embed")])


asyncio.run(main())
