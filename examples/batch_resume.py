"""A batch with resume, from Python: results are appended as they arrive, and running the
script again skips what is already done (as `llmadapters batch --resume` does).

    python examples/batch_resume.py examples/prompts.jsonl results.jsonl
"""

import asyncio
import sys
from collections.abc import Iterable
from typing import IO

import llmadapters as la
from llmadapters.batch import BatchItem, completed_ids, read_jsonl, write_record


async def answer(todo: Iterable[BatchItem], out: IO[str]) -> None:
    async with la.AsyncClient() as client:
        async for result in client.batch(todo, concurrency=64):
            write_record(out, result)  # appended and flushed: a crash loses no result


def main(source: str, target: str) -> None:
    done = completed_ids(target)  # also mends a last line cut short by a crash
    with open(source) as lines, open(target, "a") as out:
        asyncio.run(answer((item for item in read_jsonl(lines) if item.custom_id not in done), out))
    print(f"{len(done)} already done; {len(completed_ids(target)) - len(done)} answered now")


main(sys.argv[1], sys.argv[2])
