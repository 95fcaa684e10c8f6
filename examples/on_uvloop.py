"""A program that uses the library runs on uvloop by starting its loop with it."""

import asyncio

import uvloop

import llmadapters as la


async def main() -> None:
    async with la.AsyncClient() as client:
        reply = await client.chat.completions.create(model="fake/echo", messages=[{"role": "user", "content": "hi"}])
        print(reply.choices[0].message.content, type(asyncio.get_running_loop()).__module__)


uvloop.run(main())
