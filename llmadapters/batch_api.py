"""``llmadapters batch IN -o OUT --via batch-api``: a job sent through the provider's own
Batch API (`llmadapters.providers.base.BatchAPI`), at its batch price.

The input is read in order and cut into files within the provider's limits (lines,
bytes, one model per file where the API asks it); each file is uploaded (``purpose``
``batch``) and a batch created of it; the batches are polled, backing off from
``poll_interval`` to ``max_poll_interval``; when one ends, its output and error files are
downloaded and written to OUT in the format of the online mode (`write_record`), one
record per custom_id. Lines the batch did not answer (expired, cancelled, a failed
batch) get an error record, or are sent online with ``finish_online``.

What was submitted is kept in a small state file next to OUT (``OUT.batch-api.json``):
each chunk of the input (a range of its requests), its file and its batch. It is
rewritten whole and renamed over the old one at each step, so a kill at any point
leaves one or the other; a resumed run (``--resume``) goes on from it and never submits
a line again: a file uploaded but not recorded is uploaded again (an orphan file, no
batch); a batch created but not recorded is found again by its input file in the
provider's list of batches. Records already in OUT are not written twice. The state file
is removed when every chunk is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
from typing import IO, TYPE_CHECKING, Any

import attrs

from .batch import write_record
from .errors import BadRequestError, ConfigError, LLMAdapterError, status_error
from .pricing import cost_of
from .provider_http import ProviderHTTP
from .types import BatchResult, ChatCompletion, ResponseInfo

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from .batch import BatchItem, BatchSummary
    from .client import AsyncClient
    from .providers.base import BatchAPI
    from .routes import Route

__all__ = ["BatchAPIError", "BatchAPIJob", "JobState", "state_path"]

# The batch statuses after which nothing changes (OpenAI's, which the others share).
ENDED = frozenset({"completed", "expired", "failed", "cancelled"})
# Error codes of lines the batch did not answer, which --finish-online sends online.
UNANSWERED = frozenset({"batch_expired", "batch_cancelled", "batch_failed"})


class BatchAPIError(LLMAdapterError):
    """A line the provider's batch did not answer (``code``: ``batch_expired``,
    ``batch_cancelled``, ``batch_failed``), or a Batch API request that failed."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(f"{code}: {message}" if code else message)
        self.code = code


def state_path(output: str | os.PathLike[str]) -> str:
    """The state file of the job writing ``output``."""
    return f"{os.fspath(output)}.batch-api.json"


@attrs.define
class Chunk:
    """The requests ``start`` to ``end`` (input positions, end excluded), in one file."""

    start: int
    end: int
    file_id: str
    batch_id: str | None = None
    created_at: float | None = None
    done: bool = False


@attrs.define
class JobState:
    """What a job submitted: its provider and chunks, saved after every step."""

    path: str
    provider: str
    chunks: list[Chunk] = attrs.field(factory=list)

    @classmethod
    def load(cls, path: str, provider: str) -> JobState:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return cls(path, provider)
        if data.get("provider") != provider:
            raise ConfigError(f"{path} is a job of provider {data.get('provider')!r}, not {provider!r}")
        return cls(path, provider, [Chunk(**chunk) for chunk in data["chunks"]])

    def save(self) -> None:
        data = {"provider": self.provider, "chunks": [attrs.asdict(chunk) for chunk in self.chunks]}
        temporary = f"{self.path}.tmp"
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path)

    @property
    def submitted(self) -> int:
        """The input position after the last chunk submitted."""
        return self.chunks[-1].end if self.chunks else 0


class _Files(ProviderHTTP):
    """The provider's files and batches endpoints."""

    async def upload(self, name: str, data: bytes) -> str:
        files = {"file": (name, data, "application/jsonl")}
        return str((await self.json("POST", "files", data={"purpose": "batch"}, files=files))["id"])

    async def content(self, file_id: str) -> bytes:
        return (await self.request("GET", f"files/{file_id}/content")).content

    async def create(self, api: BatchAPI, file_id: str) -> dict[str, Any]:
        body: dict[str, Any] = {"input_file_id": file_id, "endpoint": api.endpoint}
        if api.completion_window is not None:
            body["completion_window"] = api.completion_window
        return await self.json("POST", "batches", json=body)

    async def get(self, batch_id: str) -> dict[str, Any]:
        return await self.json("GET", f"batches/{batch_id}")

    async def find(self, file_id: str) -> dict[str, Any] | None:
        """The batch made of ``file_id``, looked up in the list of batches (newest first)."""
        after: str | None = None
        while True:
            params = {"limit": "100", **({"after": after} if after else {})}
            page = await self.json("GET", "batches", params=params)
            batches = [b for b in page.get("data", ()) if isinstance(b, dict)]
            for batch in batches:
                if batch.get("input_file_id") == file_id:
                    return batch
            if not page.get("has_more") or not batches:
                return None
            after = str(batches[-1]["id"])

    async def aclose(self) -> None:
        await self._http.aclose()


def _jsonl(records: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(record, ensure_ascii=False).encode() + b"\n" for record in records)


def _records(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


Event = dict[str, Any]


@attrs.define
class _File:
    """A file being filled: its lines, their bytes, and the model of the last."""

    lines: list[bytes] = attrs.field(factory=list)
    size: int = 0
    model: str | None = None


class BatchAPIJob:
    """One run of a job through ``provider``'s Batch API; see the module's docstring.

    Args:
        client: the client (its route of ``provider`` gives the base URL, keys, prices).
        provider: the provider whose Batch API takes the job.
        items: gives the input's requests, from the first, each time it is called.
        out: the output, open for appending.
        done: the custom_ids already in the output.
        state: the job's state (new, or loaded to resume).
        summary: counts the results written.
        model: the ``provider/model`` of requests that name none.
        finish_online: send the lines a batch did not answer online.
        poll_interval: the first wait between two polls, in seconds; it doubles up to
            ``max_poll_interval`` while no batch ends.
        on_event: told of each step (``{"event": "uploaded", ...}``).
    """

    def __init__(
        self,
        client: AsyncClient,
        provider: str,
        items: Callable[[], Iterator[BatchItem]],
        out: IO[str],
        done: set[str],
        state: JobState,
        summary: BatchSummary,
        *,
        model: str | None = None,
        finish_online: bool = False,
        poll_interval: float = 10.0,
        max_poll_interval: float = 300.0,
        on_event: Callable[[Event], None] = lambda event: None,
    ) -> None:
        self._client = client
        self._provider = provider
        self._items = items
        self._out = out
        self._done = done
        self.state = state
        self._summary = summary
        self._model = model
        self._finish_online = finish_online
        self._poll = (poll_interval, max(poll_interval, max_poll_interval))
        self._event = on_event

    async def run(self) -> None:
        route = await self._client.route(self._provider)
        api = route.spec.batch_api
        if api is None:
            raise ConfigError(f"provider {self._provider!r} has no Batch API")
        files = _Files(route)
        try:
            for chunk in self.state.chunks:
                if chunk.batch_id is None:
                    await self._create(files, api, chunk, adopt=True)
            await self._submit(files, api, route)
            await self._collect(files, route, api)
        finally:
            await files.aclose()
        with contextlib.suppress(FileNotFoundError):  # nothing was submitted
            os.remove(self.state.path)

    # -- submitting ----------------------------------------------------------------------

    def _write(self, result: BatchResult) -> None:
        write_record(self._out, result)
        self._done.add(result.custom_id)
        self._summary.add(result)
        self._event({"event": "written", "custom_id": result.custom_id})

    def _line(self, item: BatchItem, route: Route, api: BatchAPI) -> tuple[str, bytes] | BatchResult:
        """The file line of ``item`` (and its model), or its error result."""
        problem = item.problem
        if item.embeddings:
            problem = f"line {item.line}: an embeddings line is sent online (--via online), not in a Batch API job"
        elif item.body is not None:
            body = dict(item.body)
            messages = body.pop("messages")
            body.pop("stream", None)
            try:
                request = self._client.request(messages=messages, model=body.pop("model", None) or self._model, **body)
            except (ValueError, TypeError, ConfigError) as exc:
                problem = f"line {item.line}: {exc}"
            else:
                if request.provider == self._provider:
                    body = route.spec.prepare(request)
                    line = {"custom_id": item.custom_id, "method": "POST", "url": api.endpoint, "body": body}
                    return request.model, json.dumps(line, ensure_ascii=False).encode() + b"\n"
                problem = (
                    f"line {item.line}: provider {request.provider!r}: this job goes to {self._provider!r}'s "
                    "Batch API; send the other provider's lines in a job of their own"
                )
        return self._refused(item, str(problem))

    @staticmethod
    def _refused(item: BatchItem, problem: str) -> BatchResult:
        error = BadRequestError(f"invalid request: {problem}", status=400)
        return BatchResult(index=item.index, custom_id=item.custom_id, error=error)

    async def _submit(self, files: _Files, api: BatchAPI, route: Route) -> None:
        start = self.state.submitted
        pending = _File()
        position = start
        for item in itertools.islice(self._items(), start, None):
            position = item.index + 1
            if item.custom_id in self._done:
                continue
            line = self._line(item, route, api)
            if isinstance(line, BatchResult):
                self._write(line)
                continue
            model, data = line
            full = len(pending.lines) >= api.max_lines or pending.size + len(data) > api.max_bytes
            if pending.lines and (full or (api.one_model_per_file and model != pending.model)):
                start = await self._upload(files, api, pending, start, item.index)
                pending = _File()
            if len(data) > api.max_bytes:
                self._write(self._refused(item, f"line {item.line} is over the {api.max_bytes} bytes of a file"))
                continue
            pending.lines.append(data)
            pending.size += len(data)
            pending.model = model
        if pending.lines:
            await self._upload(files, api, pending, start, position)

    async def _upload(self, files: _Files, api: BatchAPI, pending: _File, start: int, end: int) -> int:
        name = f"llmadapters-{start}-{end}.jsonl"
        file_id = await files.upload(name, b"".join(pending.lines))
        self._event({"event": "uploaded", "file_id": file_id, "lines": len(pending.lines)})
        chunk = Chunk(start=start, end=end, file_id=file_id)
        self.state.chunks.append(chunk)
        self.state.save()
        await self._create(files, api, chunk, adopt=False)
        return end

    async def _create(self, files: _Files, api: BatchAPI, chunk: Chunk, *, adopt: bool) -> None:
        """Create the batch of ``chunk``; with ``adopt``, first look for one that a run
        killed before it saved the batch's id created."""
        self._event({"event": "submitting", "file_id": chunk.file_id})
        batch = await files.find(chunk.file_id) if adopt else None
        if batch is None:
            batch = await files.create(api, chunk.file_id)
        chunk.batch_id = str(batch["id"])
        chunk.created_at = float(batch.get("created_at") or 0) or None
        self._event({"event": "created", "batch_id": chunk.batch_id, "file_id": chunk.file_id})
        self.state.save()

    # -- collecting ----------------------------------------------------------------------

    async def _collect(self, files: _Files, route: Route, api: BatchAPI) -> None:
        wait, most = self._poll
        delay = wait
        while pending := [chunk for chunk in self.state.chunks if not chunk.done]:
            ended = 0
            for chunk in pending:
                assert chunk.batch_id is not None
                batch = await files.get(chunk.batch_id)
                status = batch.get("status")
                self._event({"event": "polled", "batch_id": chunk.batch_id, "status": status})
                if status in ENDED:
                    await self._finish(files, route, api, chunk, batch)
                    ended += 1
            if ended:
                delay = wait
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, most)

    async def _finish(self, files: _Files, route: Route, api: BatchAPI, chunk: Chunk, batch: dict[str, Any]) -> None:
        sent = self._sent(chunk, route, api)
        answered: list[dict[str, Any]] = []
        for key in ("output_file_id", "error_file_id"):
            if batch.get(key):
                answered += [files.scrub.value(r) for r in _records(await files.content(str(batch[key])))]
        self._event({"event": "downloaded", "batch_id": chunk.batch_id, "records": len(answered)})
        status = str(batch.get("status"))
        unanswered: dict[str, dict[str, Any]] = {}
        for record in answered:
            custom_id = record.get("custom_id")
            if not isinstance(custom_id, str) or custom_id not in sent:
                continue
            index, line = sent.pop(custom_id)
            code = (record.get("error") or {}).get("code")
            if record.get("response") is None and code in UNANSWERED and self._finish_online:
                unanswered[custom_id] = line
            elif custom_id not in self._done:
                self._write(self._result(record, index, line["body"]["model"], route, api, chunk))
        for custom_id, (index, line) in sent.items():  # lines the batch gave nothing for (a failed batch)
            if self._finish_online:
                unanswered[custom_id] = line
            elif custom_id not in self._done:
                error = BatchAPIError(f"the batch {chunk.batch_id} ended {status} without it", f"batch_{status}")
                self._write(BatchResult(index=index, custom_id=custom_id, error=error))
        todo = [(custom_id, line) for custom_id, line in unanswered.items() if custom_id not in self._done]
        if todo:
            self._event({"event": "online", "batch_id": chunk.batch_id, "lines": len(todo)})
            requests = [
                {"custom_id": custom_id, "body": {**line["body"], "model": f"{self._provider}/{line['body']['model']}"}}
                for custom_id, line in todo
            ]
            async for result in self._client.batch(requests):
                self._write(result)
        chunk.done = True
        self.state.save()
        self._event({"event": "done", "batch_id": chunk.batch_id, "status": status})

    def _sent(self, chunk: Chunk, route: Route, api: BatchAPI) -> dict[str, tuple[int, dict[str, Any]]]:
        """The lines of ``chunk``'s file, by custom_id, with their input positions: made
        again from the input as they were made to be sent (the provider may have deleted
        the file), those already in the output left out."""
        sent = {}
        for item in itertools.islice(self._items(), chunk.start, chunk.end):
            if item.custom_id not in self._done:
                line = self._line(item, route, api)
                if not isinstance(line, BatchResult):
                    sent[item.custom_id] = (item.index, json.loads(line[1]))
        return sent

    def _result(
        self, record: dict[str, Any], index: int, model: str, route: Route, api: BatchAPI, chunk: Chunk
    ) -> BatchResult:
        """A record of the batch's output or error file as a result of the online mode,
        priced at the batch's price when it was created."""
        custom_id = record["custom_id"]
        response = record.get("response")
        if not isinstance(response, dict):
            error = record.get("error") or {}
            failure = BatchAPIError(str(error.get("message", "no response")), str(error.get("code") or "batch_error"))
            return BatchResult(index=index, custom_id=custom_id, error=failure)
        # From the batch's creation (the provider's clock) to its collection (ours).
        waited = max(0.0, time.time() - chunk.created_at) if chunk.created_at else 0.0
        status = int(response.get("status_code") or 0)
        request_id = response.get("request_id")
        headers = {"x-request-id": request_id} if isinstance(request_id, str) else {}
        body = response.get("body")
        if status != 200 or not isinstance(body, dict):
            exc = status_error(status, headers, body, provider=self._provider)
            return BatchResult(index=index, custom_id=custom_id, error=exc, attempts=1, latency_s=waited)
        reply = ChatCompletion.from_dict(body, provider=self._provider, http=ResponseInfo(200, headers))
        price = route.prices.price(model, chunk.created_at)
        if price is not None:
            reply = attrs.evolve(reply, cost=cost_of(reply.usage, price.scaled(api.price_factor)))
        return BatchResult(index=index, custom_id=custom_id, response=reply, attempts=1, latency_s=waited)
