"""The conformance suites of llmadapters.testing, run on the built-in transports (every
package in plugins/ runs them on itself), and the pytest plugin's fixture."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import pytest

import llmadapters as la
from llmadapters.plugin import FEATURES
from llmadapters.providers.base import ProviderSpec
from llmadapters.testing.conformance import ProviderConformance, TransportConformance
from llmadapters.transports.builtin import httpx_transport, openai_transport
from llmadapters.transports.openai_sdk import OpenAITransport

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from llmadapters.testing import FakeServer


class TestHttpxTransport(TransportConformance):
    transport_factory = staticmethod(httpx_transport)
    supports = FEATURES


class TestOpenAITransport(TransportConformance):
    transport_factory = staticmethod(openai_transport)
    supports = FEATURES


class TestOpenAITransportOnHttpx2(TransportConformance):
    transport_factory = staticmethod(lambda options: OpenAITransport(options, http_client="httpx"))
    supports = FEATURES


@pytest.mark.parametrize(
    ("check", "feature"),
    [
        ("test_tls_verifies_against_the_given_ca", "tls"),
        ("test_an_https_proxy_carries_the_call", "https_proxy"),
        ("test_http2_is_asked_for_when_set", "http2"),
    ],
)
def test_a_tls_check_without_trustme_fails_saying_what_to_install(
    check: str, feature: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "trustme", None)  # as if not installed
    with pytest.raises(pytest.fail.Exception, match=rf"claims '{feature}', whose check .* pip install trustme"):
        getattr(TestHttpxTransport(), check)(tmp_path)


def test_the_pytest_plugin_serves_a_fake_server(llmadapters_fake_server: FakeServer) -> None:
    with la.Client({}, providers={"local": {"base_url": llmadapters_fake_server.base_url}}) as client:
        reply = client.chat.completions.create(model="local/echo", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "hi"
    assert llmadapters_fake_server.requests_served == 1


def _provider_check(retryable: Callable[[la.LLMAdapterError], Any] | None) -> ProviderConformance:
    """`ProviderConformance` on a provider of the test's own, not an installed one."""

    class Check(ProviderConformance):
        provider = "subject"

        def _spec(self) -> Any:
            return ProviderSpec(name="subject", key_required=False, retryable=retryable)

    return Check()


@pytest.mark.parametrize("verdict", [True, False, None])
def test_provider_conformance_takes_true_false_and_none_for_verdicts(verdict: bool | None) -> None:
    _provider_check(lambda exc: verdict).test_its_verdicts_do_not_crash_on_odd_errors()


@pytest.mark.parametrize("verdict", [0, 1, "yes"])
def test_provider_conformance_refuses_verdicts_that_only_look_boolean(verdict: object) -> None:
    check = _provider_check(lambda exc: verdict)
    with pytest.raises(AssertionError, match=rf"retryable\(\) returned {verdict!r}, not True, False or None"):
        check.test_its_verdicts_do_not_crash_on_odd_errors()


def test_provider_conformance_says_why_it_skips_the_verdicts_of_a_provider_without_retryable() -> None:
    # The plugin author sees the check skipped, with its reason; it does not pass unseen.
    with pytest.raises(pytest.skip.Exception, match=r"provider 'subject' has no retryable\(\)"):
        _provider_check(None).test_its_verdicts_do_not_crash_on_odd_errors()
