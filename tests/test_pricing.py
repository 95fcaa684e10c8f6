"""Prices and cost: a reply's cost from its usage and the price in force when it was
sent; unknown prices give None; the config adds and overrides prices."""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

import llmadapters_deepseek
import pytest

import llmadapters as la
from llmadapters.config import load_settings
from llmadapters.middleware.logging import LoggingMiddleware
from llmadapters.plugins import Registry
from llmadapters.pricing import ModelPrice, Price, PriceWindow, cost_of, estimate_tokens, parse_amount
from llmadapters.types import Cost, Usage

if TYPE_CHECKING:
    from llmadapters.testing import FakeServer

MESSAGES = [{"role": "user", "content": "one two three"}]
UTC = dt.timezone.utc


def at(*when: int) -> float:
    return dt.datetime(*when, tzinfo=UTC).timestamp()


def test_cost_from_usage_with_cache_hits_and_reasoning_by_hand() -> None:
    usage = Usage.from_dict(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 500,
            "prompt_tokens_details": {"cached_tokens": 400},
            "completion_tokens_details": {"reasoning_tokens": 200},
        }
    )
    price = Price(input=2.0, cached_input=0.5, output=8.0, reasoning=12.0)
    # 600 misses x 2 + 400 hits x 0.5 + 300 output x 8 + 200 reasoning x 12, per million
    expected = (600 * 2.0 + 400 * 0.5 + 300 * 8.0 + 200 * 12.0) / 1_000_000
    assert cost_of(usage, price) == Cost(pytest.approx(expected, rel=1e-12), "USD")  # type: ignore[arg-type]


def test_deepseek_cache_hits_are_read_from_its_own_usage_field() -> None:
    usage = Usage.from_dict({"prompt_tokens": 100, "completion_tokens": 10, "prompt_cache_hit_tokens": 60})
    assert usage.cached_tokens == 60
    cost = cost_of(usage, Price(input=0.15, cached_input=0.003, output=0.6))
    assert cost is not None
    assert cost.amount == pytest.approx((40 * 0.15 + 60 * 0.003 + 10 * 0.6) / 1e6, rel=1e-12)


def test_usage_without_counts_has_no_cost() -> None:
    assert cost_of(None, Price(input=1, output=1)) is None
    assert cost_of(Usage.from_dict({"total_tokens": 5}), Price(input=1, output=1)) is None


def test_deepseek_peak_window_starts_at_01_00_utc_on_weekdays() -> None:
    flash = llmadapters_deepseek.PRICES["deepseek-flash"]
    monday = (2026, 11, 30)
    assert flash.at(at(*monday, 0, 59, 59)).input == 0.15
    assert flash.at(at(*monday, 1, 0)).input == 0.30
    assert flash.at(at(*monday, 3, 59, 59)).output == 1.20
    assert flash.at(at(*monday, 4, 0)).output == 0.60
    assert flash.at(at(*monday, 6, 0)).cached_input == 0.006
    assert flash.at(at(*monday, 10, 0)).cached_input == 0.003
    assert flash.at(at(2026, 12, 5, 1, 30)).input == 0.15  # a Saturday: off-peak all day


def test_a_window_must_not_wrap_past_midnight() -> None:
    with pytest.raises(ValueError, match="start before it ends"):
        PriceWindow(price=Price(input=1, output=1), start=dt.time(22), end=dt.time(2))


def test_a_window_may_end_at_midnight() -> None:
    """An end of 00:00 (the config's "24:00") is the day's end: 23:59:59.5 is in it."""
    window = PriceWindow(price=Price(input=1, output=1), start=dt.time(16, 30), end=dt.time(0))
    monday = (2026, 11, 30)
    assert window.covers(at(*monday, 23, 59, 59) + 0.5)
    assert window.covers(at(*monday, 16, 30))
    assert not window.covers(at(*monday, 16, 29, 59))
    assert not window.covers(at(2026, 12, 1, 0, 0))  # the next day, before its own window
    settings = load_settings(
        {
            "providers": {
                "p": {
                    "prices": {
                        "m": {
                            "input": 2,
                            "output": 2,
                            "windows": [{"start": "16:30", "end": "24:00", "input": 1, "output": 1}],
                        }
                    }
                }
            }
        }
    )
    assert settings.provider("p").prices["m"].at(at(*monday, 23, 59, 59) + 0.5).input == 1


@pytest.fixture
def deepseek_registry() -> Registry:
    registry = Registry.builtin()
    registry.add_providers([llmadapters_deepseek.DEEPSEEK])
    return registry


async def test_calls_sent_at_00_59_and_01_00_are_priced_by_their_window(
    fake_server: FakeServer, deepseek_registry: Registry
) -> None:
    providers = {"deepseek": {"base_url": fake_server.base_url, "api_key": "sk-test"}}
    async with la.AsyncClient({}, providers=providers, registry=deepseek_registry) as client:
        route = await client.route("deepseek")
        costs = []
        for when in (at(2026, 11, 30, 0, 59), at(2026, 11, 30, 1, 0)):
            route.prices.clock = lambda when=when: when
            reply = await client.chat.completions.create(model="deepseek/deepseek-flash", messages=MESSAGES)
            assert reply.usage is not None
            assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (7, 16)
            costs.append(reply.cost)
    assert costs[0] == Cost(pytest.approx((7 * 0.15 + 16 * 0.60) / 1e6, rel=1e-12))  # type: ignore[arg-type]
    assert costs[1] == Cost(pytest.approx((7 * 0.30 + 16 * 1.20) / 1e6, rel=1e-12))  # type: ignore[arg-type]


async def test_config_prices_a_model_and_a_stream_knows_its_cost_when_finished(fake_server: FakeServer) -> None:
    prices = {"echo": {"input": 1.0, "output": 2.0}}
    providers = {"local": {"base_url": fake_server.base_url, "prices": prices}}
    async with la.AsyncClient({}, providers=providers) as client:
        reply = await client.chat.completions.create(model="local/echo", messages=MESSAGES)
        # "one two three": 3 words + 4 for the message in, 3 tokens out
        assert reply.cost == Cost(pytest.approx((7 * 1.0 + 3 * 2.0) / 1e6, rel=1e-12))  # type: ignore[arg-type]
        stream = await client.chat.completions.create(
            model="local/echo", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        final = await stream.get_final_completion()
        assert final.cost == reply.cost
        assert "cost" not in final.to_dict()


async def test_an_unknown_price_gives_no_cost_never_zero(fake_server: FakeServer) -> None:
    providers = {"local": {"base_url": fake_server.base_url, "prices": {"echo": {"input": 1.0, "output": 1.0}}}}
    async with la.AsyncClient({}, providers=providers) as client:
        reply = await client.chat.completions.create(model="local/other", messages=MESSAGES)
    assert reply.usage is not None
    assert reply.usage.total_tokens
    assert reply.cost is None


async def test_config_overrides_a_plugin_price_model_by_model(
    fake_server: FakeServer, deepseek_registry: Registry
) -> None:
    prices = {"deepseek-flash": {"input": 1.0, "output": 1.0, "currency": "cny"}}
    providers = {"deepseek": {"base_url": fake_server.base_url, "api_key": "sk-test", "prices": prices}}
    async with la.AsyncClient({}, providers=providers, registry=deepseek_registry) as client:
        route = await client.route("deepseek")
        assert route.prices.models["deepseek-flash"] == ModelPrice(price=Price(input=1.0, output=1.0, currency="CNY"))
        assert route.prices.models["deepseek-v4-pro"] == llmadapters_deepseek.PRICES["deepseek-v4-pro"]


async def test_the_log_line_carries_the_cost(fake_server: FakeServer, caplog: pytest.LogCaptureFixture) -> None:
    records: list[dict[str, Any]] = []
    providers = {"local": {"base_url": fake_server.base_url, "prices": {"echo": {"input": 1.0, "output": 2.0}}}}
    logger = LoggingMiddleware(on_record=records.append)
    with caplog.at_level(logging.INFO, logger="llmadapters"):
        async with la.AsyncClient({}, providers=providers, middleware=[logger]) as client:
            await client.chat.completions.create(model="local/echo", messages=MESSAGES)
    assert records[0]["cost"] == pytest.approx(13 / 1e6, rel=1e-12)
    assert records[0]["currency"] == "USD"
    assert "currency=USD" in caplog.text


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"input": 1.0}, "prices.echo.output: required"),
        ({"input": -1, "output": 1}, "prices.echo.input: expected a price per million tokens"),
        ({"input": 1, "output": 1, "currency": "dollars"}, "prices.echo.currency: expected an ISO 4217 code"),
        ({"input": 1, "output": 1, "colour": "red"}, "prices.echo"),
        ({"input": 1, "output": 1, "windows": [{"start": "25:00", "end": "26:00"}]}, "windows[0].start"),
        ({"input": 1, "output": 1, "windows": [{"start": "10:00", "end": "09:00"}]}, "start before it ends"),
        ({"input": 1, "output": 1, "windows": [{"start": "01:00", "end": "02:00", "weekdays": ["xyz"]}]}, "weekdays"),
    ],
)
def test_a_bad_price_is_refused_naming_its_key(table: dict[str, Any], problem: str) -> None:
    with pytest.raises(la.ConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        la.AsyncClient({"providers": {"local": {"base_url": "http://127.0.0.1:1/v1", "prices": {"echo": table}}}})


def test_config_windows_price_the_hours_they_cover() -> None:
    settings = load_settings(
        {
            "providers": {
                "local": {
                    "base_url": "http://127.0.0.1:1/v1",
                    "prices": {
                        "m": {
                            "input": 1,
                            "output": 2,
                            "windows": [{"start": "01:00", "end": "04:00", "weekdays": ["mon"], "input": 5}],
                        }
                    },
                }
            }
        }
    )
    price = settings.provider("local").prices["m"]
    assert price.at(at(2026, 11, 30, 1, 0)) == Price(input=5, output=2)
    assert price.at(at(2026, 12, 1, 1, 0)) == Price(input=1, output=2)  # a Tuesday


@pytest.mark.parametrize(
    ("text", "amount"),
    [("5", Cost(5.0)), (2.5, Cost(2.5)), ("30 CNY", Cost(30.0, "CNY")), ("0.5usd", Cost(0.5, "USD"))],
)
def test_amounts(text: object, amount: Cost) -> None:
    assert parse_amount(text) == amount


@pytest.mark.parametrize("text", ["", "-1", "0", "five", "5 dollars", True, "nan"])
def test_bad_amounts(text: object) -> None:
    with pytest.raises(ValueError, match="expected a positive amount"):
        parse_amount(text)


def test_the_fake_providers_counter_is_exact_and_the_default_is_four_characters() -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a" * 40}]
    assert estimate_tokens(messages, la.AsyncClient({}).registry.providers["fake"].count_tokens) == 2 + 4 + 1 + 4
    assert estimate_tokens(messages) == 2 + 4 + 10 + 4
    # Chinese (or any script but ASCII): a token a character, not a quarter of one.
    assert estimate_tokens([{"role": "user", "content": "你好世界 ok"}]) == 4 + 1 + 4


@pytest.mark.parametrize(
    ("when", "input_price"),
    [
        ((2026, 11, 29, 1, 30), 0.15),  # Sunday
        ((2026, 11, 30, 0, 0), 0.15),  # Monday, midnight
        ((2026, 12, 4, 9, 59, 59), 0.30),  # Friday, the last second of the second window
        ((2026, 12, 4, 10, 0), 0.15),
        ((2026, 12, 4, 5, 0), 0.15),  # between the windows
    ],
)
def test_deepseek_windows_at_their_edges(when: tuple[int, ...], input_price: float) -> None:
    assert llmadapters_deepseek.PRICES["deepseek-v4-flash"].at(at(*when)).input == input_price
