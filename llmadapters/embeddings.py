"""A large embeddings input split into provider-sized requests, and their replies joined
back into one, as if one request had answered (``llmadapters batch --embed-chunk N``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from .pricing import text_tokens
from .types import CreateEmbeddingResponse, Embedding, ResponseInfo, Usage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .types import Cost, EmbeddingRequest

__all__ = ["chunked", "joined"]


def chunked(request: EmbeddingRequest, size: int | None, max_tokens: int | None = None) -> list[EmbeddingRequest]:
    """``request`` as requests of ``size`` inputs at most and, with ``max_tokens``, of an
    estimated four fifths of that many tokens at most (an input alone may pass it: the
    provider judges), in order; itself when it fits."""
    texts = request.texts
    room = None if max_tokens is None else max_tokens * 4 // 5
    parts: list[list[Any]] = [[]]
    tokens = 0
    for text in texts:
        cost = text_tokens(text) if isinstance(text, str) else len(text)  # (token ids: one each)
        full = size is not None and len(parts[-1]) >= size
        if parts[-1] and (full or (room is not None and tokens + cost > room)):
            parts.append([])
            tokens = 0
        parts[-1].append(text)
        tokens += cost
    if len(parts) == 1:
        return [request]
    return [attrs.evolve(request, input=part) for part in parts]


def _total(counts: Sequence[int | None]) -> int | None:
    return None if any(count is None for count in counts) else sum(count or 0 for count in counts)


def _cost(costs: Sequence[Cost | None]) -> Cost | None:
    known = [cost for cost in costs if cost is not None]
    if len(known) < len(costs) or len({cost.currency for cost in known}) != 1:
        return None
    return attrs.evolve(known[0], amount=sum(cost.amount for cost in known))


def joined(replies: Sequence[CreateEmbeddingResponse]) -> CreateEmbeddingResponse:
    """The replies to the `chunked` requests of one input, in their order, as one reply:
    each vector's ``index`` counts from the start of the whole input, the usage and cost
    are summed (the cost is None unless every part's is known), the HTTP metadata is the
    last part's, ``cached`` only when every part came from the cache."""
    if len(replies) == 1:
        return replies[0]
    data: list[Embedding] = []
    for reply in replies:
        offset = len(data)
        data += [
            attrs.evolve(item, index=offset + item.index, raw={**item.raw, "index": offset + item.index})
            for item in reply.data
        ]
    usages = [reply.usage or Usage() for reply in replies]
    usage = Usage(
        prompt_tokens=_total([u.prompt_tokens for u in usages]), total_tokens=_total([u.total_tokens for u in usages])
    )
    usage = attrs.evolve(usage, raw={k: v for k, v in usage.to_dict().items() if v is not None})
    last = replies[-1]
    http = last.http
    if http is not None:
        http = ResponseInfo(
            http.status, http.headers, cached=all(r.http is not None and r.http.cached for r in replies)
        )
    raw = {**last.raw, "data": [item.raw for item in data], "usage": usage.raw}
    return attrs.evolve(last, data=tuple(data), usage=usage, raw=raw, http=http, cost=_cost([r.cost for r in replies]))
