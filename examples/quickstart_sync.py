"""Sync: the same surface without asyncio; a batch runs concurrently inside."""

import llmadapters as la

with la.Client() as client:
    reply = client.chat.completions.create(model="fake/echo", messages=[{"role": "user", "content": "hi"}])
    print(reply.choices[0].message.content)

    requests = ({"model": "fake/echo", "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(50))
    answered = sum(result.ok for result in client.batch(requests, concurrency=16))
    print(f"{answered} of 50 answered")
