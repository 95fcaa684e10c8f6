"""The JSONL of ``llmadapters batch``: reading request lines (the OpenAI Batch API's
format, or plain bodies), writing output records in its output format, and the files' own
bookkeeping (ids already done, failed records set aside, shards, duplicates)."""

from __future__ import annotations

import array
import json
import os
import re
import zlib
from typing import IO, TYPE_CHECKING, Any

import attrs

from ..errors import APIStatusError
from ..fallback import models_of
from ..types import BatchResult, CreateEmbeddingResponse

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from ..client import AsyncClient
    from ..types import Request

__all__ = [
    "BatchItem",
    "Shard",
    "completed_ids",
    "duplicate_ids",
    "duplicates_text",
    "output_record",
    "parse_item",
    "read_jsonl",
    "requests_of",
    "set_aside_failed",
    "write_record",
]

_CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
_EMBEDDINGS_PATHS = ("/v1/embeddings", "/embeddings")


@attrs.frozen(kw_only=True)
class BatchItem:
    """One input request, parsed.

    Attributes:
        index: its position in the input (0-based).
        custom_id: its id: the input's ``custom_id``, else ``line-<index + 1>``.
        body: the chat-completions (or embeddings) body, or None when the input is not
            a valid request.
        problem: why it is not valid (with its line number when read from a file).
        line: its line number in the input file (1-based), when read from one.
        embeddings: whether it asks for embeddings (``url`` ``/v1/embeddings``, or a plain
            body with ``input`` and no ``messages``).
    """

    index: int
    custom_id: str
    body: dict[str, Any] | None = None
    problem: str | None = None
    line: int | None = None
    embeddings: bool = False


def parse_item(index: int, raw: object, *, where: str | None = None, default_id: str | None = None) -> BatchItem:
    """Read one request: an OpenAI Batch API line, or a plain chat-completions (or
    embeddings) body.
    Without a ``custom_id`` its id is ``default_id`` (``line-<index + 1>`` by default)."""
    where = where or f"request {index}"
    default_id = default_id or f"line-{index + 1}"
    if not isinstance(raw, dict):
        return BatchItem(index=index, custom_id=default_id, problem=f"{where}: expected a JSON object")
    custom_id = raw.get("custom_id", default_id)
    if not isinstance(custom_id, str) or not custom_id:
        return BatchItem(index=index, custom_id=default_id, problem=f"{where}: custom_id must be a non-empty string")
    if "body" in raw:
        body, url, method = raw["body"], raw.get("url", "/v1/chat/completions"), raw.get("method", "POST")
        if method != "POST" or url not in (*_CHAT_PATHS, *_EMBEDDINGS_PATHS):
            problem = f"{where}: only POST /v1/chat/completions and /v1/embeddings are supported, got {method} {url}"
            return BatchItem(index=index, custom_id=custom_id, problem=problem)
        embeddings = url in _EMBEDDINGS_PATHS
    else:
        body = {k: v for k, v in raw.items() if k != "custom_id"}
        embeddings = isinstance(body, dict) and "input" in body and "messages" not in body
    if not isinstance(body, dict):
        return BatchItem(index=index, custom_id=custom_id, problem=f"{where}: body must be a JSON object")
    if embeddings:
        if "input" not in body:
            return BatchItem(index=index, custom_id=custom_id, problem=f"{where}: an embeddings body needs 'input'")
        return BatchItem(index=index, custom_id=custom_id, body=body, embeddings=True)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return BatchItem(index=index, custom_id=custom_id, problem=f"{where}: 'messages' must be a non-empty list")
    return BatchItem(index=index, custom_id=custom_id, body=body)


def read_jsonl(lines: Iterable[str | bytes]) -> Iterator[BatchItem]:
    """Parse JSONL lines (text, or bytes of UTF-8) lazily; a line that is not UTF-8, not
    JSON, or not a request becomes an invalid item naming its line number. Blank lines
    are skipped (their numbers still count), and a byte order mark before the first.
    Without a ``custom_id``, an item's id is ``line-<line number>``."""
    index = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            text = line.decode() if isinstance(line, bytes) else line
            raw = json.loads(text.removeprefix("\ufeff") if number == 1 else text)
        except UnicodeDecodeError as exc:
            problem = f"{where}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
            item = BatchItem(index=index, custom_id=f"line-{number}", problem=problem)
        except ValueError as exc:
            item = BatchItem(index=index, custom_id=f"line-{number}", problem=f"{where}: not JSON ({exc})")
        except RecursionError:
            item = BatchItem(index=index, custom_id=f"line-{number}", problem=f"{where}: JSON nested too deep to read")
        else:
            item = parse_item(index, raw, where=where, default_id=f"line-{number}")
            if item.body is not None and _SURROGATE.search(text) and not _encodable(item.body):
                problem = f"{where}: a \\uD800-\\uDFFF escape without its pair: not text, so it cannot be sent"
                item = attrs.evolve(item, body=None, problem=problem)
        index += 1
        yield attrs.evolve(item, line=number)


# A JSON escape of a UTF-16 surrogate: half of a pair that stands for one character, or
# alone, which is no text at all (and cannot be encoded to send).
_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def _encodable(body: dict[str, Any]) -> bool:
    try:
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


@attrs.frozen
class Shard:
    """Shard ``index`` (1-based) of ``count``: the requests whose custom_id hashes to it.

    The split depends on the custom_id alone (CRC-32, the same on every host and
    Python), so N workers given the same input and ``1/N`` ... ``N/N`` answer every
    request exactly once between them, whatever the order of the lines.
    """

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"``, with 1 <= I <= N."""
        index, _, count = text.partition("/")
        try:
            shard = cls(int(index), int(count))
        except ValueError:
            raise ValueError(f"expected I/N (e.g. 2/4), got {text!r}") from None
        if not 1 <= shard.index <= shard.count:
            raise ValueError(f"expected I/N with 1 <= I <= N, got {text!r}")
        return shard

    def __contains__(self, custom_id: str) -> bool:
        return zlib.crc32(custom_id.encode("utf-8", "surrogatepass")) % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


_MASK = 2**64 - 1


def _mark(custom_id: str) -> tuple[int, int]:
    """The 32-bit fingerprint (never 0) of ``custom_id``, and the rest of its hash."""
    digest = hash(custom_id) & _MASK
    return (digest >> 32) | 1, digest & 0xFFFF_FFFF


def duplicate_ids(
    lines: Callable[[], Iterable[str | bytes]], shard: Shard | None = None
) -> tuple[dict[str, list[int]], int]:
    """The custom_ids that appear on more than one line, with their line numbers; and
    the number of requests read (of ``shard``'s only, when given).

    ``lines()`` gives the input's lines, each time it is called. The ids are not kept: a
    table of their 32-bit fingerprints, 5.3 bytes a line, finds the ones that may repeat,
    and when there are any a second reading keeps only those, so that a check of
    millions of lines costs megabytes, not the hundreds a set of the ids would."""
    size = sum(1 for _ in lines()) * 4 // 3 + 16
    table = array.array("I", bytes(4 * size))  # open addressing; 0 is an empty slot
    suspects: set[int] = set()
    count = 0
    for item in read_jsonl(lines()):
        if shard is None or item.custom_id in shard:
            count += 1
        mark, rest = _mark(item.custom_id)
        slot = rest % size
        while (seen := table[slot]) != 0:
            if seen == mark:  # the same id, or another with the same fingerprint
                suspects.add(mark)
                break
            slot = slot + 1 if slot + 1 < size else 0
        else:
            table[slot] = mark
    if not suspects:
        return {}, count
    del table
    found: dict[str, list[int]] = {}
    for item in read_jsonl(lines()):
        if _mark(item.custom_id)[0] in suspects:
            found.setdefault(item.custom_id, []).append(item.line or 0)
    return {custom_id: numbers for custom_id, numbers in found.items() if len(numbers) > 1}, count


def duplicates_text(duplicates: dict[str, list[int]], numbered: str) -> str:
    """``duplicate custom_id: 'a' on lines 2, 4; ...`` for what `duplicate_ids` found
    (ten ids at most), ``numbered`` saying what the numbers count."""
    shown = "; ".join(
        f"{cid!r} on {numbered} {', '.join(map(str, numbers))}" for cid, numbers in list(duplicates.items())[:10]
    )
    more = f" (and {len(duplicates) - 10} more)" if len(duplicates) > 10 else ""
    return f"duplicate custom_id: {shown}{more}"


def completed_ids(path: str | os.PathLike[str]) -> set[str]:
    """The custom_ids recorded in an output file, for ``--resume``. A last line cut short
    by a killed run is removed from the file first."""
    done: set[str] = set()
    try:
        f = open(path, "rb+")  # noqa: SIM115 - closed below; a missing file is no records
    except FileNotFoundError:
        return done
    with f:
        size = f.seek(0, os.SEEK_END)
        end = _end_of_whole_lines(f, size)
        if end < size:  # a partial last record: the run died while writing it
            f.truncate(end)
        f.seek(0)
        for line in f:  # one at a time: an output of gigabytes is not held whole
            if line.strip():
                record = json.loads(line)
                done.add(record["custom_id"])
    return done


def _end_of_whole_lines(f: IO[bytes], size: int) -> int:
    """Where the last whole line of ``f`` (``size`` bytes) ends: read back from the end."""
    pos = size
    while pos > 0:
        start = max(0, pos - 64 * 1024)
        f.seek(start)
        newline = f.read(pos - start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        pos = start
    return 0


def set_aside_failed(path: str | os.PathLike[str], shard: Shard | None = None) -> set[str]:
    """Move the error records of an output file to ``<path>.retried`` (appended), so that
    their requests count as not done and a resumed run sends them again; the custom_ids
    of the records kept, for ``--resume``. With ``shard``, only that shard's error
    records are moved: the others' are not this run's to send again. Every record is
    read (and a last line cut short repaired, as `completed_ids` does) before any is
    moved; the file is rewritten whole and then renamed over the old one, so a kill at
    any point leaves either the old file or the new one."""
    path = os.fspath(path)
    completed_ids(path)
    done: set[str] = set()
    kept = f"{path}.tmp"
    with open(path, "rb") as source, open(kept, "wb") as good, open(f"{path}.retried", "ab") as failed:
        for line in source:
            if not line.strip():
                continue
            record = json.loads(line)
            if record.get("error") is None or (shard is not None and record["custom_id"] not in shard):
                good.write(line)
                done.add(record["custom_id"])
            else:
                failed.write(line)
        good.flush()
        os.fsync(good.fileno())
        failed.flush()
        os.fsync(failed.fileno())
    os.replace(kept, path)
    return done


def requests_of(
    client: AsyncClient, item: BatchItem, model: str | None = None
) -> tuple[tuple[str | None, ...], tuple[Request, ...]]:
    """The models of a valid ``item`` (its own, else ``model``; one, or a fallback chain)
    and its request to each, a `ChatRequest` or an `EmbeddingRequest` (never streamed:
    a batch gets whole replies). Raises ValueError, TypeError or ConfigError for a
    request that cannot be made."""
    assert item.body is not None
    body = dict(item.body)
    body.pop("stream", None)
    own = body.pop("model", None)
    models = models_of(model if own is None else own)
    if item.embeddings:
        inputs = body.pop("input")
        return models, tuple(client.embedding_request(input=inputs, model=m, **body) for m in models)
    messages = body.pop("messages")
    return models, tuple(client.request(messages=messages, model=m, **body) for m in models)


def output_record(result: BatchResult) -> dict[str, Any]:
    """``result`` in the OpenAI Batch API output format. An embeddings body holds the
    vectors as the line asked for them: floats unless it set ``encoding_format`` (base64
    that went over the wire for speed is decoded)."""
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    reply = result.response
    if reply is not None:
        http = reply.http
        status, request_id = (200, None) if http is None else (http.status, http.request_id)
        body = reply.to_dict() if isinstance(reply, CreateEmbeddingResponse) else reply.raw
        response = {"status_code": status, "request_id": request_id, "body": body}
    exc = result.error
    if isinstance(exc, APIStatusError) and result.attempts:  # a server's answer, not a local refusal
        response = {"status_code": exc.status, "request_id": exc.request_id, "body": exc.body}
    if exc is not None:
        error = {"code": type(exc).__name__, "message": str(exc)}
    return {"id": f"batch_req_{result.index}", "custom_id": result.custom_id, "response": response, "error": error}


def write_record(out: IO[str], result: BatchResult) -> None:
    """Append ``result``'s record and flush: once this returns, a killed process loses it
    no more. A record the output's encoding cannot hold (a lone surrogate, from an escape
    in the input or in a server's reply) is written with ASCII escapes, which read back
    the same."""
    record = output_record(result)
    try:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
    except UnicodeEncodeError:  # raised before anything is written
        out.write(json.dumps(record) + "\n")
    out.flush()
