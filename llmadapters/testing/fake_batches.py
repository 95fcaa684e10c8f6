"""The fake server's OpenAI Files and Batches endpoints.

``POST /v1/files`` (multipart, ``purpose=batch``), ``GET /v1/files/ID`` and
``GET /v1/files/ID/content``; ``POST /v1/batches``, ``GET /v1/batches`` (newest first,
``limit`` and ``after``), ``GET /v1/batches/ID`` and ``POST /v1/batches/ID/cancel``.

A batch is ``in_progress`` until its delay has passed, then ends: ``completed`` (every
line answered as ``POST /v1/chat/completions`` would answer it, a line whose model asks
for a failure such as ``fail-400`` going to the error file with its status and body),
``expired`` (the first N lines answered, the others in the error file as
``batch_expired``), or ``failed`` (nothing answered). A cancelled batch ends
``cancelled`` with the first N lines answered. The create request's headers choose:

- ``x-fake-batch-delay-s``: seconds from creation to the end (default 0);
- ``x-fake-batch-outcome``: ``completed`` (default), ``expired`` or ``failed``;
- ``x-fake-batch-answered``: N, the lines answered by an expired or cancelled batch (default 0).
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from .fake_server import _Exchange

__all__ = ["FakeBatches"]

_EXPIRED = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}


@attrs.define
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str | None
    metadata: dict[str, Any]
    created_at: int
    ends_at: float  # time.monotonic()
    outcome: str
    answered: int
    status: str = "in_progress"
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = attrs.field(factory=lambda: {"total": 0, "completed": 0, "failed": 0})
    errors: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "request_counts": self.counts,
            "metadata": self.metadata,
            "errors": self.errors,
        }


class FakeBatches:
    """The files and batches of one fake server, in memory."""

    def __init__(self, answer: Callable[[Any], tuple[int, dict[str, Any]]], clock: Callable[[], float]) -> None:
        """``answer``: one line's body answered as the chat endpoint would, (status, JSON)."""
        self._answer = answer
        self._clock = clock
        self.files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self.batches: dict[str, _Batch] = {}
        self._ids = itertools.count(1)
        self.lines_answered = 0  # over all batches, for tests

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-fake{next(self._ids):06d}"

    async def handle(self, ex: _Exchange, method: str, target: str, headers: Mapping[str, str], body: bytes) -> None:
        path, _, query = target.partition("?")
        parts = path.strip("/").split("/")[1:]  # after "v1"
        try:
            status, reply = self._route(method, parts, urllib.parse.parse_qs(query), headers, body)
        except _NotFound as exc:
            status, reply = 404, {"error": {"message": str(exc), "type": "invalid_request_error", "code": None}}
        except ValueError as exc:
            status, reply = 400, {"error": {"message": str(exc), "type": "invalid_request_error", "code": None}}
        if isinstance(reply, bytes):
            await ex.send_bytes(status, reply, "application/octet-stream")
        else:
            await ex.send_json(status, reply)

    def _route(
        self, method: str, parts: list[str], query: dict[str, list[str]], headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, Any] | bytes]:
        if parts == ["files"] and method == "POST":
            return 200, self._upload(headers.get("content-type", ""), body)
        if len(parts) >= 2 and parts[0] == "files" and method == "GET":
            meta, data = self._file(parts[1])
            return 200, data if parts[2:] == ["content"] else meta
        if parts == ["batches"] and method == "POST":
            return 200, self._create(json.loads(body or b"{}"), headers).as_dict()
        if parts == ["batches"] and method == "GET":
            return 200, self._list(query)
        if len(parts) == 2 and parts[0] == "batches" and method == "GET":
            return 200, self._batch(parts[1]).as_dict()
        if len(parts) == 3 and parts[0] == "batches" and parts[2] == "cancel" and method == "POST":
            return 200, self._cancel(parts[1]).as_dict()
        raise _NotFound(f"no route {method} /v1/{'/'.join(parts)}")

    def _upload(self, content_type: str, body: bytes) -> dict[str, Any]:
        if not content_type.startswith("multipart/form-data"):
            raise ValueError("upload a file as multipart/form-data")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"content-type: " + content_type.encode() + b"\r\n\r\n" + body
        )
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            fields[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
        if fields.get("purpose", (None, b""))[1] != b"batch" or "file" not in fields:
            raise ValueError("expected the fields 'purpose' (batch) and 'file'")
        filename, data = fields["file"]
        return self._add_file(filename or "upload.jsonl", "batch", data)

    def _add_file(self, filename: str, purpose: str, data: bytes) -> dict[str, Any]:
        meta = {
            "id": self._new_id("file"),
            "object": "file",
            "bytes": len(data),
            "created_at": int(self._clock()),
            "filename": filename,
            "purpose": purpose,
        }
        self.files[str(meta["id"])] = (meta, data)
        return meta

    def _file(self, file_id: str) -> tuple[dict[str, Any], bytes]:
        if file_id not in self.files:
            raise _NotFound(f"no file {file_id}")
        return self.files[file_id]

    def _create(self, request: Any, headers: Mapping[str, str]) -> _Batch:
        if not isinstance(request, dict) or not isinstance(request.get("input_file_id"), str):
            raise ValueError("input_file_id is required")
        self._file(request["input_file_id"])
        outcome = headers.get("x-fake-batch-outcome", "completed")
        if outcome not in ("completed", "expired", "failed"):
            raise ValueError(f"x-fake-batch-outcome: {outcome!r}")
        batch = _Batch(
            id=self._new_id("batch"),
            input_file_id=request["input_file_id"],
            endpoint=str(request.get("endpoint", "")),
            completion_window=request.get("completion_window"),
            metadata=request.get("metadata") or {},
            created_at=int(self._clock()),
            ends_at=time.monotonic() + float(headers.get("x-fake-batch-delay-s", "0")),
            outcome=outcome,
            answered=int(headers.get("x-fake-batch-answered", "0")),
        )
        batch.counts["total"] = len(self._lines(batch))
        self.batches[batch.id] = batch
        return batch

    def _list(self, query: dict[str, list[str]]) -> dict[str, Any]:
        newest = list(reversed(self.batches))
        after = query.get("after", [None])[0]
        if after in self.batches:
            newest = newest[newest.index(after) + 1 :]
        limit = int(query.get("limit", ["20"])[0])
        page = [self._batch(batch_id).as_dict() for batch_id in newest[:limit]]
        return {"object": "list", "data": page, "has_more": len(newest) > limit}

    def _batch(self, batch_id: str) -> _Batch:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise _NotFound(f"no batch {batch_id}")
        if batch.status in ("in_progress", "cancelling") and time.monotonic() >= batch.ends_at:
            self._end(batch, "cancelled" if batch.status == "cancelling" else batch.outcome)
        return batch

    def _cancel(self, batch_id: str) -> _Batch:
        batch = self._batch(batch_id)
        if batch.status == "in_progress":
            batch.status = "cancelling"
        return batch

    def _lines(self, batch: _Batch) -> list[Any]:
        data = self.files[batch.input_file_id][1]
        return [json.loads(line) for line in data.splitlines() if line.strip()]

    def _end(self, batch: _Batch, status: str) -> None:
        lines = self._lines(batch) if status != "failed" else []
        answered = len(lines) if status == "completed" else batch.answered
        output: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for n, line in enumerate(lines):
            record: dict[str, Any] = {"id": f"batch_req_{batch.id}_{n}", "custom_id": line.get("custom_id")}
            if n >= answered:
                errors.append({**record, "response": None, "error": _EXPIRED})
                continue
            code, body = self._answer(line.get("body"))
            self.lines_answered += 1
            record["response"] = {"status_code": code, "request_id": f"req_{batch.id}_{n}", "body": body}
            record["error"] = None
            (output if code == 200 else errors).append(record)
        batch.counts.update(completed=len(output), failed=len(errors))
        batch.output_file_id = self._store(batch, "output", output)
        batch.error_file_id = self._store(batch, "error", errors)
        if status == "failed":
            batch.errors = {"object": "list", "data": [{"code": "failed", "message": "the batch failed (injected)"}]}
        batch.status = status

    def _store(self, batch: _Batch, kind: str, records: list[dict[str, Any]]) -> str | None:
        if not records:
            return None
        data = "".join(json.dumps(record) + "\n" for record in records).encode()
        return str(self._add_file(f"{batch.id}_{kind}.jsonl", "batch_output", data)["id"])


class _NotFound(Exception):
    pass
