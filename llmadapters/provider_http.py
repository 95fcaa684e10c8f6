"""Requests to a provider beside the middleware chain: the endpoints that are not a call
of a model (its files and batches, its list of models), which the transports, made to
POST a call's JSON, do not serve.

One ``httpx2`` client on the route's base URL, headers and query, with the first of the
provider's keys; httpx2's errors become `llmadapters.errors`, an error status the
`APIStatusError` a call would raise, and a key a server echoes is masked (`Scrubber`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx2

from .errors import ConnectError, MalformedResponseError, TransportError, credentials, status_error
from .middleware.auth import Scrubber

if TYPE_CHECKING:
    from .routes import Route

__all__ = ["ProviderHTTP"]


class ProviderHTTP:
    """HTTP requests to ``route``'s provider, outside its chain (no retry, no limits)."""

    def __init__(self, route: Route) -> None:
        auth = next(iter(route.auth.values()), {})
        endpoint = route.endpoint
        self.scrub = Scrubber.of_auth([*auth.values(), *credentials(endpoint.headers).values()])
        self._http = httpx2.AsyncClient(
            base_url=endpoint.base_url.rstrip("/") + "/",
            headers={**endpoint.headers, **auth},
            params=dict(endpoint.query),
            timeout=httpx2.Timeout(endpoint.timeouts.read or 600.0, connect=endpoint.timeouts.connect),
        )
        self._provider = route.spec.name

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        """The response to ``method path`` (relative to the base URL; httpx2's keywords),
        or the error its status means."""
        path = path.lstrip("/")
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx2.HTTPError as exc:
            # httpx2 may quote what it sent (a header value it refused: the key).
            kind = ConnectError if isinstance(exc, httpx2.ConnectError) else TransportError
            what = "cannot connect" if kind is ConnectError else type(exc).__name__
            raise kind(self.scrub.text(f"{method} {path} of {self._provider}: {what} ({exc})")) from None
        if response.status_code >= 400:
            try:
                body: object = response.json()
            except ValueError:
                body = response.text
            error = status_error(response.status_code, response.headers, body, provider=self._provider)
            self.scrub.error(error)
            raise error
        return response

    async def json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The JSON object ``method path`` answers."""
        response = await self.request(method, path, **kwargs)
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            what = "no JSON" if data is None else type(data).__name__
            raise MalformedResponseError(f"{method} {path} of {self._provider} answered {what}, not an object")
        return data

    async def aclose(self) -> None:
        await self._http.aclose()
