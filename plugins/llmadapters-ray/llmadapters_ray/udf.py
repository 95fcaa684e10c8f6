"""The callable class that answers a Ray Data dataset's rows: `ChatCompletionsUDF`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

import llmadapters as la
from llmadapters.plugin import BatchItem, parse_item

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from llmadapters import BatchResult
    from llmadapters.plugin import Limits, Settings

__all__ = ["OUTPUT_COLUMNS", "ChatCompletionsUDF", "reply_columns", "share_limits"]

# The columns `ChatCompletionsUDF` adds to each row (see `reply_columns`).
OUTPUT_COLUMNS = ("generated_text", "prompt_tokens", "completion_tokens", "attempts", "error")


def share_limits(settings: Settings, actors: int) -> Settings:
    """``settings`` with each local budget (rpm, tpm, calls in flight) split evenly
    between ``actors`` processes, so that together they keep to the configured limits.
    Budgets kept in a shared backend (``limits.backend = "redis"``) are left whole: every
    process already draws on the one budget. A ``max_concurrency`` below ``actors``
    leaves one call in flight to each."""
    if actors < 1:
        raise ValueError(f"actors must be >= 1, got {actors}")

    def share(limits: Limits | None) -> Limits | None:
        if limits is None or limits.backend != "local" or actors == 1:
            return limits
        calls = limits.max_concurrency
        return attrs.evolve(
            limits,
            max_concurrency=None if calls is None else max(1, calls // actors),
            rpm=None if limits.rpm is None else limits.rpm / actors,
            tpm=None if limits.tpm is None else limits.tpm / actors,
        )

    providers = {name: attrs.evolve(p, limits=share(p.limits)) for name, p in settings.providers.items()}
    shared = share(settings.limits)
    assert shared is not None
    return attrs.evolve(settings, limits=shared, providers=providers)


def reply_columns(result: BatchResult) -> dict[str, Any]:
    """One row's outputs: the reply's text, its usage, the calls made, and the error
    (``"RateLimitError: ..."``) instead of the text when the call failed."""
    response = result.response
    usage = response.usage if response is not None else None
    # Seam for issue "Spend": a "cost" column, from the reply's cost, belongs here
    # (and in OUTPUT_COLUMNS) once replies carry one.
    return {
        "generated_text": response.choices[0].message.content if isinstance(response, la.ChatCompletion) else None,
        "prompt_tokens": usage.prompt_tokens if usage is not None else None,
        "completion_tokens": usage.completion_tokens if usage is not None else None,
        "attempts": result.attempts,
        "error": None if result.error is None else f"{type(result.error).__name__}: {result.error}",
    }


def plain(value: Any) -> Any:
    """A cell as plain Python: Ray Data hands nested columns over as NumPy arrays."""
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        value = tolist()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


class ChatCompletionsUDF:
    """A Ray Data callable class that answers each row of a dataset with a chat
    completion, through one `llmadapters.AsyncClient` per actor: the providers,
    transports, retries, rate limits and middleware of its ``config``::

        ds = ds.map_batches(
            ChatCompletionsUDF,
            fn_constructor_kwargs={"config": "llmadapters.toml", "model": "deepseek/deepseek-chat", "actors": 4},
            concurrency=4,
            batch_size=64,
        )

    Each row gets the columns of `OUTPUT_COLUMNS` (`reply_columns`); its other columns
    are kept. A row whose call failed (after its retries) has its ``error`` set and no
    text: one row's failure never fails the dataset.

    Args:
        config: the client's configuration, as `llmadapters.AsyncClient` takes it (a
            TOML path readable on every node, or a dict).
        model: the ``provider/model`` of rows that name none.
        messages_column: the column of each row's messages (a list of
            ``{"role", "content"}``); ignored when ``prompt_column`` is given.
        prompt_column: a column of text, sent as one user message.
        model_column: a column naming each row's ``provider/model``, if any.
        params: more of the request's body for every row (``max_tokens``, ``temperature``).
        actors: how many actors run this class (the ``concurrency`` of ``map_batches``):
            each gets an equal share of the limits kept in this process (`share_limits`);
            limits with ``backend = "redis"`` are shared across the cluster as they are.
        concurrency: calls in flight per provider per batch (Ray runs up to 4 batches
            at once on an actor; the route's ``max_concurrency`` bounds them together).
        line_deadline: how long a row answered 429 is sent again.
        client_options: more keyword arguments of `llmadapters.AsyncClient`.
    """

    def __init__(
        self,
        *,
        config: str | Mapping[str, Any] | None = None,
        model: str | None = None,
        messages_column: str = "messages",
        prompt_column: str | None = None,
        model_column: str | None = None,
        params: Mapping[str, Any] | None = None,
        actors: int = 1,
        concurrency: int = 64,
        line_deadline: float = 3600.0,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.client = la.AsyncClient(config, **dict(client_options or {}))
        self.client.settings = share_limits(self.client.settings, actors)
        self.model = model
        self.messages_column = messages_column
        self.prompt_column = prompt_column
        self.model_column = model_column
        self.params = dict(params or {})
        self.concurrency = concurrency
        self.line_deadline = line_deadline

    async def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        items = self.items(batch)
        results = await self.answer(items)
        return self.columns(batch, results)

    def items(self, batch: Mapping[str, Sequence[Any]]) -> list[BatchItem]:
        """The batch's rows as requests, numbered from 0 in the batch."""
        size = len(next(iter(batch.values()))) if batch else 0
        items = []
        for row in range(size):
            if self.prompt_column is not None:
                messages: Any = [{"role": "user", "content": plain(batch[self.prompt_column][row])}]
            else:
                messages = plain(batch[self.messages_column][row])
            body = {**self.params, "messages": messages}
            if self.model_column is not None:
                body["model"] = plain(batch[self.model_column][row])
            items.append(parse_item(row, body, where=f"row {row} of the batch"))
        return items

    async def answer(self, items: list[BatchItem]) -> list[BatchResult]:
        """Each item's result, in the items' order."""
        place = {item.index: at for at, item in enumerate(items)}
        results: list[BatchResult | None] = [None] * len(items)
        run = self.client.batch(
            iter(items), concurrency=self.concurrency, model=self.model, line_deadline=self.line_deadline
        )
        async for result in run:
            results[place[result.index]] = result
        done = [result for result in results if result is not None]
        assert len(done) == len(items), "the batch engine answers every request once"
        return done

    def columns(self, batch: dict[str, Any], results: list[BatchResult]) -> dict[str, Any]:
        """The batch with the replies' columns added."""
        rows = [reply_columns(result) for result in results]
        return {**batch, **{name: [row[name] for row in rows] for name in OUTPUT_COLUMNS}}
