"""Prices, and what a call costs.

A provider plugin declares its models' prices (`ProviderSpec.prices`: model name ->
`ModelPrice`), and a config adds or overrides them per model
(``[providers.NAME.prices.MODEL]``). A `ModelPrice` is a `Price` per million tokens,
with the hours of the week when another price is in force (`PriceWindow`: DeepSeek bills
its peak hours at twice the off-peak price). A reply's cost is priced at the price in
force when its call was sent (`PriceList.cost`), from its usage: prompt tokens served
from the cache at the cached price, reasoning tokens at the reasoning price where one is
set. A model with no known price costs None: never a guess, never zero.

`estimate_tokens` is the prompt's size before anything is sent, for ``--estimate`` and
budgets: the provider's own counter where it declares one that works offline, else the
documented rule of thumb of about four characters a token.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .types import Cost, Usage

if TYPE_CHECKING:
    import datetime as dt

__all__ = [
    "CostTally",
    "ModelPrice",
    "Price",
    "PriceList",
    "PriceWindow",
    "TokenCounter",
    "cost_of",
    "estimate_tokens",
    "message_text",
    "parse_amount",
    "words_and_four",
]

PER = 1_000_000  # prices are per million tokens

# Counts a request's prompt tokens from its messages.
TokenCounter = Callable[[Sequence[Mapping[str, Any]]], int]


@attrs.frozen(kw_only=True)
class Price:
    """Prices per million tokens, in ``currency``.

    Attributes:
        input: a prompt token (a cache miss).
        output: a completion token.
        cached_input: a prompt token served from the provider's cache; None: ``input``.
        reasoning: a reasoning token, where billed unlike other output; None: ``output``.
        currency: an ISO 4217 code (``"USD"``, ``"CNY"``).
    """

    input: float
    output: float
    cached_input: float | None = None
    reasoning: float | None = None
    currency: str = "USD"

    def scaled(self, factor: float) -> Price:
        """Every figure times ``factor`` (a discount of a Batch API, a peak surcharge)."""

        def times(value: float | None) -> float | None:
            return None if value is None else value * factor

        return attrs.evolve(
            self,
            input=self.input * factor,
            output=self.output * factor,
            cached_input=times(self.cached_input),
            reasoning=times(self.reasoning),
        )


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@attrs.frozen(kw_only=True)
class PriceWindow:
    """Hours when ``price`` is in force instead of the model's base price: from
    ``start`` (included) to ``end`` (excluded), UTC, on ``weekdays`` (0 is Monday, UTC's).

    A window may not wrap past midnight: write two (UTC is where DeepSeek's peak hours,
    09:00-12:00 and 14:00-18:00 Beijing time, fall within one day). An ``end`` of
    00:00 is the day's end (the config takes "24:00" for it too).
    """

    price: Price
    start: dt.time
    end: dt.time
    weekdays: frozenset[int] = frozenset(range(7))

    def __attrs_post_init__(self) -> None:
        if not _second_of_day(self.start) < self._end_second:
            raise ValueError(f"a price window must start before it ends (UTC, same day): {self.start}-{self.end}")

    @property
    def _end_second(self) -> float:
        return _second_of_day(self.end) or 86_400.0

    def covers(self, when: float) -> bool:
        """Whether the window holds ``when`` (seconds since the epoch, UTC)."""
        days, second = divmod(when, 86_400)
        weekday = (int(days) + 3) % 7  # 1970-01-01 was a Thursday
        return weekday in self.weekdays and _second_of_day(self.start) <= second < self._end_second


def _second_of_day(moment: dt.time) -> float:
    return moment.hour * 3600 + moment.minute * 60 + moment.second + moment.microsecond / 1e6


@attrs.frozen(kw_only=True)
class ModelPrice:
    """A model's price: ``price``, except in the first of ``windows`` that covers the time."""

    price: Price
    windows: tuple[PriceWindow, ...] = ()

    def at(self, when: float) -> Price:
        """The price in force at ``when`` (seconds since the epoch)."""
        if not self.windows:
            return self.price
        return next((w.price for w in self.windows if w.covers(when)), self.price)


def cost_of(usage: Usage | None, price: Price) -> Cost | None:
    """What ``usage`` costs at ``price``; None when the usage lacks a token count."""
    if usage is None or usage.prompt_tokens is None or usage.completion_tokens is None:
        return None
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    reasoning = min(usage.reasoning_tokens, usage.completion_tokens)
    cached_price = price.input if price.cached_input is None else price.cached_input
    reasoning_price = price.output if price.reasoning is None else price.reasoning
    amount = (
        (usage.prompt_tokens - cached) * price.input
        + cached * cached_price
        + (usage.completion_tokens - reasoning) * price.output
        + reasoning * reasoning_price
    ) / PER
    return Cost(amount, price.currency)


@attrs.define
class PriceList:
    """One provider's prices by model name, and the clock that says when a call is sent
    (``time.time``; a test fixes it to price a call at a given hour).

    Attributes:
        models: the `ModelPrice` of each priced model.
        clock: seconds since the epoch, now.
    """

    models: Mapping[str, ModelPrice] = attrs.field(factory=dict)
    clock: Callable[[], float] = time.time

    def price(self, model: str, when: float | None = None) -> Price | None:
        """The price of ``model`` in force at ``when`` (now by default); None when unknown."""
        found = self.models.get(model)
        return None if found is None else found.at(self.clock() if when is None else when)

    def cost(self, model: str, usage: Usage | None, sent: float) -> Cost | None:
        """What a call of ``model`` sent at ``sent`` cost, by its ``usage``."""
        price = self.price(model, sent)
        return None if price is None else cost_of(usage, price)


def message_text(content: object) -> str:
    """The text of a message's ``content``: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def words_and_four(messages: Sequence[Mapping[str, Any]]) -> int:
    """Whitespace-separated words, plus 4 a message: how the fake server counts."""
    return sum(len(message_text(m.get("content")).split()) + 4 for m in messages)


def text_tokens(text: str) -> int:
    """About how many tokens ``text`` is: OpenAI's rule of thumb for English, a token
    about 4 characters (help.openai.com, "What are tokens and how to count them?"), and
    a token a character of any other script (Chinese, Japanese, ...), which leans high as
    an estimate for a budget should: DeepSeek counts a Chinese character about 0.6 token
    (api-docs.deepseek.com/quick_start/token_usage)."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    return math.ceil(ascii_chars / 4) + (len(text) - ascii_chars)


def _four_characters(messages: Sequence[Mapping[str, Any]]) -> int:
    # `text_tokens` of each message, and 4 a message of framing.
    return sum(text_tokens(message_text(message.get("content"))) + 4 for message in messages)


def estimate_tokens(messages: Sequence[Mapping[str, Any]], counter: TokenCounter | None = None) -> int:
    """The prompt tokens of ``messages``: by ``counter`` (a provider's own), else by
    about four characters a token (of ASCII; a token a character of any other script)."""
    return (counter or _four_characters)(messages)


def parse_amount(value: object) -> Cost:
    """An amount of money: a `Cost`, a number (USD), or text such as ``"5"``, ``"5 USD"``,
    ``"30CNY"``."""
    if isinstance(value, Cost):
        amount, currency = value.amount, value.currency
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        amount, currency = float(value), "USD"
    elif isinstance(value, str):
        text = value.strip()
        figure = text.rstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz").strip()
        currency = text[len(figure) :].strip().upper() or "USD"
        try:
            amount = float(figure)
        except ValueError:
            amount = float("nan")
        if len(currency) != 3:
            amount = float("nan")
    else:
        amount, currency = float("nan"), ""
    if not 0 < amount < float("inf"):
        raise ValueError(f'expected a positive amount, in USD or with a currency code ("5", "30 CNY"), got {value!r}')
    return Cost(amount, currency)


@attrs.define
class CostTally:
    """Money added up by ``provider/model`` and by currency (never across currencies)."""

    by_model: dict[str, dict[str, float]] = attrs.field(factory=dict)

    def add(self, model: str, cost: Cost) -> None:
        amounts = self.by_model.setdefault(model, {})
        amounts[cost.currency] = amounts.get(cost.currency, 0.0) + cost.amount

    def total(self) -> dict[str, float]:
        """The sum of every model's, by currency (rounded to 1e-9)."""
        total: dict[str, float] = {}
        for amounts in self.by_model.values():
            for currency, amount in amounts.items():
                total[currency] = total.get(currency, 0.0) + amount
        return _rounded(total)

    def of(self, model: str) -> dict[str, float]:
        return _rounded(self.by_model.get(model, {}))

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total(), "by_model": {model: self.of(model) for model in sorted(self.by_model)}}


def _rounded(amounts: Mapping[str, float]) -> dict[str, float]:
    return {currency: round(amount, 9) for currency, amount in sorted(amounts.items())}
