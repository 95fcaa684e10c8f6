"""Spending before it happens: what a call will cost at most, a batch's budget, and a
job's estimate before anything is sent.

A call's estimate prices its prompt tokens (`estimate_tokens`: the provider's own
counter where it has one offline, else about four characters a token) and its output
bound: ``max_completion_tokens`` or ``max_tokens`` when the request sets one, else the
most completion tokens a reply of the run has had so far (1,000 before the first).

`Budget` holds a batch to ``max_cost``: a call starts only while what was spent, plus
the estimates of the calls in flight, plus its own, stays within it; when it would not,
the call waits for those in flight to settle (their actual cost replaces their
estimate), and when none is left in flight and it still does not fit, the budget is
reached: the run sends nothing more, and a resumed run (with a larger budget) goes on.
A model whose price is not known (in the budget's currency) cannot be bounded, so a
budget refuses it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING, Any

import attrs

from .errors import ConfigError
from .pricing import CostTally, cost_of, estimate_tokens
from .types import EmbeddingRequest, Usage

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from .batch import BatchItem
    from .client import AsyncClient
    from .pricing import PriceList, TokenCounter
    from .types import ChatCompletion, Cost, CreateEmbeddingResponse, Request

__all__ = ["Budget", "BudgetReached", "JobEstimate", "estimate_job", "output_bound"]

# The output bound of a request that sets no max_tokens, before any reply was seen.
FIRST_OUTPUT_BOUND = 1_000


def output_bound(params: Mapping[str, Any]) -> int | None:
    """The request's own bound on completion tokens, if it sets one."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = params.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def prompt_tokens(request: Request, counter: TokenCounter | None) -> int:
    """The prompt tokens of ``request``: its messages, or each input of an embeddings
    request counted as a message (a list of token ids as its ids, space separated)."""
    if isinstance(request, EmbeddingRequest):
        texts = [text if isinstance(text, str) else " ".join(map(str, text)) for text in request.texts]
        return estimate_tokens([{"content": text} for text in texts], counter)
    return estimate_tokens(request.messages, counter)


class BudgetReached(Exception):
    """Why a budget lets no more calls start (the message says it to the user)."""


class Budget:
    """A batch's spending limit; see the module's docstring.

    Attributes:
        limit: the most the run may spend.
        spent: the cost of the replies so far, in ``limit.currency``.
        reserved: the estimates of the calls in flight.
        calls_out: the calls in flight, each holding its estimate.
        reached: why no more calls start, once that is so.
    """

    def __init__(self, limit: Cost) -> None:
        self.limit = limit
        self.spent = 0.0
        self.reserved = 0.0
        self.calls_out = 0  # (counted: the estimates, floats, do not always sum back to 0)
        self.reached: BudgetReached | None = None
        self._most_output = 0
        self._settled = asyncio.Event()  # set (and replaced) each time a call settles

    def estimate(self, request: Request, prices: PriceList, counter: TokenCounter | None) -> float:
        """The most ``request`` should cost; `BudgetReached` when it cannot be bounded."""
        price = prices.price(request.model)
        where = f"{request.provider}/{request.model}"
        if price is None:
            raise BudgetReached(
                f"no price is known for {where}, so a budget cannot bound its cost: "
                f"set [providers.{request.provider}.prices.{request.model}] in the config"
            )
        if price.currency != self.limit.currency:
            raise BudgetReached(f"{where} is priced in {price.currency}, the budget in {self.limit.currency}")
        prompt = prompt_tokens(request, counter)
        if isinstance(request, EmbeddingRequest):  # all input
            output = 0
        else:
            output = output_bound(request.params) or self._most_output or FIRST_OUTPUT_BOUND
        cost = cost_of(Usage(prompt_tokens=prompt, completion_tokens=output), price)
        assert cost is not None  # both counts are set
        return cost.amount

    async def reserve(self, amount: float) -> bool:
        """Hold ``amount`` for a call about to start, waiting for calls in flight to
        settle while it does not fit; False (and `reached` set) when it never will."""
        while self.spent + self.reserved + amount > self.limit.amount:
            if self.reached is None and self.calls_out == 0:
                spent = f"{self.spent:.6g} {self.limit.currency}"
                self.reached = BudgetReached(
                    f"budget reached: spent {spent} of {self.limit}; the next call would pass it"
                )
            if self.reached is not None:
                return False
            await self._settled.wait()
        self.reserved += amount
        self.calls_out += 1
        return True

    def settle(self, amount: float, reply: ChatCompletion | CreateEmbeddingResponse | None) -> None:
        """Release a call's reservation, counting what its ``reply`` cost (the estimate
        when the reply's cost is not known; nothing when there is no reply, or when it
        came from the response cache)."""
        self.calls_out -= 1
        self.reserved = self.reserved - amount if self.calls_out else 0.0
        if reply is not None and not (reply.http is not None and reply.http.cached):
            cost = reply.cost
            self.spent += cost.amount if cost is not None and cost.currency == self.limit.currency else amount
            tokens = reply.usage.completion_tokens if reply.usage is not None else None
            self._most_output = max(self._most_output, tokens or 0)
        settled, self._settled = self._settled, asyncio.Event()
        settled.set()

    def stop(self, why: BudgetReached) -> None:
        self.reached = self.reached or why


@attrs.define
class JobEstimate:
    """What a job will cost, by provider/model: its requests, prompt tokens, output
    bound (the requests without one are counted in ``no_output_bound``) and cost, in
    each currency; requests whose price is not known in ``unpriced``."""

    requests: Counter[str] = attrs.field(factory=Counter)
    prompt_tokens: Counter[str] = attrs.field(factory=Counter)
    output_tokens: Counter[str] = attrs.field(factory=Counter)
    no_output_bound: Counter[str] = attrs.field(factory=Counter)
    unpriced: Counter[str] = attrs.field(factory=Counter)
    cost: CostTally = attrs.field(factory=CostTally)
    invalid: int = 0

    def as_dict(self) -> dict[str, Any]:
        models = {
            model: {
                "requests": self.requests[model],
                "prompt_tokens": self.prompt_tokens[model],
                "output_tokens_bound": self.output_tokens[model],
                "no_output_bound": self.no_output_bound[model],
                "unpriced": self.unpriced[model],
                "cost": self.cost.of(model),
            }
            for model in sorted(self.requests)
        }
        return {
            "requests": sum(self.requests.values()),
            "invalid": self.invalid,
            "prompt_tokens": sum(self.prompt_tokens.values()),
            "output_tokens_bound": sum(self.output_tokens.values()),
            "no_output_bound": sum(self.no_output_bound.values()),
            "unpriced": sum(self.unpriced.values()),
            "cost": self.cost.total(),
            "by_model": models,
        }


async def estimate_job(
    client: AsyncClient, items: Iterable[BatchItem], model: str | None = None, *, batch_api: bool = False
) -> JobEstimate:
    """Price ``items`` before anything is sent: no route is built, no server started.
    With ``batch_api``, at the price of each provider's Batch API."""
    from .batch import requests_of
    from .routes import price_list, provider_spec

    estimate = JobEstimate()
    lists: dict[str, tuple[PriceList, TokenCounter | None, float]] = {}
    for item in items:
        if item.body is None:
            estimate.invalid += 1
            continue
        try:
            request = requests_of(client, item, model)[1][0]
        except (ValueError, TypeError, ConfigError):
            estimate.invalid += 1
            continue
        if request.provider not in lists:
            spec = provider_spec(request.provider, client.settings, client.registry)
            factor = spec.batch_api.price_factor if batch_api and spec.batch_api is not None else 1.0
            lists[request.provider] = (price_list(spec, client.settings), spec.count_tokens, factor)
        prices, counter, factor = lists[request.provider]
        where = f"{request.provider}/{request.model}"
        prompt = prompt_tokens(request, counter)
        bound = 0 if isinstance(request, EmbeddingRequest) else output_bound(request.params)
        estimate.requests[where] += 1
        estimate.prompt_tokens[where] += prompt
        estimate.output_tokens[where] += bound or 0
        estimate.no_output_bound[where] += bound is None
        price = prices.price(request.model)
        if price is None:
            estimate.unpriced[where] += 1
            continue
        cost = cost_of(Usage(prompt_tokens=prompt, completion_tokens=bound or 0), price.scaled(factor))
        assert cost is not None
        estimate.cost.add(where, cost)
    return estimate
