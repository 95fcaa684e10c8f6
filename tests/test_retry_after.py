"""`parse_retry_after` and `status_error` (llmadapters.errors).

Headers here are plain dicts, so every key is lower-case: `parse_retry_after` and
`status_error` look names up with ``headers.get("retry-after")`` and rely on the mapping
to be case-insensitive (httpx2/aiohttp header objects are); a plain dict is not.
"""

from __future__ import annotations

import email.utils

import httpx2
import pytest

from llmadapters.errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    RateLimitError,
    ServerError,
    parse_retry_after,
    status_error,
)

NOW = 1_750_000_000.0  # a fixed "now" for HTTP dates


# --------------------------------------------------------------------------- parse_retry_after


def test_absent_is_none() -> None:
    assert parse_retry_after({}) is None
    assert parse_retry_after({"x-request-id": "req_1"}) is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("0", 0.0), ("7", 7.0), ("120", 120.0), ("1.5", 1.5), ("0.25", 0.25)],
)
def test_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after({"retry-after": value}) == seconds


@pytest.mark.parametrize(("value", "seconds"), [("1500", 1.5), ("250", 0.25), ("0", 0.0), ("20.5", 0.0205)])
def test_retry_after_ms(value: str, seconds: float) -> None:
    assert parse_retry_after({"retry-after-ms": value}) == pytest.approx(seconds)


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "10"}) == 1.5


def test_garbage_retry_after_ms_falls_back_to_retry_after() -> None:
    assert parse_retry_after({"retry-after-ms": "soon", "retry-after": "10"}) == 10.0
    assert parse_retry_after({"retry-after-ms": "soon"}) is None


def test_http_date() -> None:
    in_30s = email.utils.formatdate(NOW + 30, usegmt=True)
    assert parse_retry_after({"retry-after": in_30s}, now=NOW) == 30.0
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412480.0 - 60) == 60.0


def test_http_date_in_the_past_is_zero() -> None:
    past = email.utils.formatdate(NOW - 3600, usegmt=True)
    assert parse_retry_after({"retry-after": past}, now=NOW) == 0.0


@pytest.mark.parametrize("value", ["soon", "", "  ", "ten", "12 seconds", "Wed, 99 Foo 2015", "1,5"])
def test_garbage_is_none(value: str) -> None:
    assert parse_retry_after({"retry-after": value}, now=NOW) is None


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "infinity"])
def test_non_finite_retry_after_is_none(value: str) -> None:
    # Retry-After is digits (or a date); float() also accepts these, and a NaN or an
    # infinite wait handed to a retry loop would sleep forever or break it.
    assert parse_retry_after({"retry-after": value}) is None


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_retry_after_ms_is_none(value: str) -> None:
    assert parse_retry_after({"retry-after-ms": value}) is None


@pytest.mark.parametrize(
    "headers",
    [{"retry-after": "-5"}, {"retry-after": "-0.5"}, {"retry-after-ms": "-1000"}, {"retry-after-ms": "-1"}],
)
def test_negative_is_zero(headers: dict[str, str]) -> None:
    assert parse_retry_after(headers) == 0.0


def test_case_insensitive_header_object() -> None:
    # A real header object finds "Retry-After" under the lower-case name.
    assert parse_retry_after(httpx2.Headers({"Retry-After": "3"})) == 3.0
    assert parse_retry_after(httpx2.Headers({"Retry-After-Ms": "500", "Retry-After": "3"})) == 0.5


# --------------------------------------------------------------------------- status_error


def _body(message: str = "nope", code: object = None) -> dict[str, object]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (404, BadRequestError),
        (405, BadRequestError),
        (413, BadRequestError),
        (415, BadRequestError),
        (422, BadRequestError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (429, RateLimitError),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (529, ServerError),
    ],
)
def test_status_classes(status: int, cls: type[APIStatusError]) -> None:
    err = status_error(status, {}, _body(), provider="deepseek")
    assert type(err) is cls
    assert isinstance(err, APIStatusError)
    assert err.status == status
    assert err.provider == "deepseek"


@pytest.mark.parametrize("status", [402, 409, 418, 451])
def test_other_status_is_plain_api_status_error(status: int) -> None:
    err = status_error(status, {}, _body())
    assert type(err) is APIStatusError
    assert not isinstance(err, (BadRequestError, AuthenticationError, RateLimitError, ServerError))


def test_rate_limit_carries_retry_after() -> None:
    err = status_error(429, {"retry-after": "7"}, _body("slow down"))
    assert isinstance(err, RateLimitError)
    assert err.retry_after == 7.0
    err = status_error(429, {"retry-after-ms": "250", "retry-after": "7"}, _body())
    assert isinstance(err, RateLimitError)
    assert err.retry_after == 0.25
    err = status_error(429, {}, _body())
    assert isinstance(err, RateLimitError)
    assert err.retry_after is None


def test_message_uses_error_message() -> None:
    err = status_error(400, {}, _body("Model Not Exist"), provider="deepseek")
    assert str(err) == "HTTP 400 from deepseek: Model Not Exist"
    err = status_error(400, {}, _body("Model Not Exist"))
    assert str(err) == "HTTP 400: Model Not Exist"


def test_message_from_string_error_and_top_level_message() -> None:
    assert str(status_error(500, {}, {"error": "upstream died"})) == "HTTP 500: upstream died"
    assert str(status_error(500, {}, {"message": "Internal error"})) == "HTTP 500: Internal error"


def test_html_body_gives_collapsed_snippet() -> None:
    html = "<html>\n  <head><title>502 Bad Gateway</title></head>\n\t<body>  nginx  </body>\n</html>\n"
    err = status_error(502, {}, html, provider="local")
    assert type(err) is ServerError
    assert (
        str(err)
        == "HTTP 502 from local: <html> <head><title>502 Bad Gateway</title></head> <body> nginx </body> </html>"
    )
    assert err.body == html


def test_long_text_body_is_cut() -> None:
    # Whitespace is collapsed first, then the text is cut to 300 characters, and the rest
    # of the word the cut falls in (a key echoed there is then masked whole).
    err = status_error(503, {}, "abcdefg  \n" * 100)
    assert str(err) == "HTTP 503: " + ("abcdefg " * 100)[:303]
    assert str(err).endswith(" abcdefg")


def test_empty_body_message() -> None:
    assert str(status_error(500, {}, "")) == "HTTP 500"


def test_request_id() -> None:
    err = status_error(400, {"x-request-id": "req_abc"}, _body())
    assert err.request_id == "req_abc"
    assert status_error(400, {}, _body()).request_id is None
    assert status_error(400, httpx2.Headers({"X-Request-ID": "req_x"}), _body()).request_id == "req_x"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (_body(code="model_not_found"), "model_not_found"),
        (_body(code=1301), "1301"),
        (_body(code=None), None),
        ({"error": "plain"}, None),
        ("<html></html>", None),
        (None, None),
    ],
)
def test_code(body: object, code: str | None) -> None:
    assert status_error(400, {}, body).code == code


def test_headers_never_in_message_or_repr() -> None:
    headers = {"authorization": "Bearer sk-secret", "x-request-id": "req_1"}
    err = status_error(401, headers, _body("bad key"))
    assert "sk-secret" not in str(err)
    assert "sk-secret" not in repr(err)
    assert repr(err) == "AuthenticationError(status=401, provider=None, message='HTTP 401: bad key')"
