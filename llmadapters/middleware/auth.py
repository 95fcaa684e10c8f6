"""Auth: puts the provider's credentials on every call; always the innermost middleware,
so no other middleware ever sees a key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import EndpointMemo

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping

    from .base import Call, CallNext, Reply

__all__ = ["AuthMiddleware"]


class AuthMiddleware:
    """Adds ``headers`` (made once from the key by the provider's ``auth``) to each call.

    The key lives only inside the headers mapping of the endpoints it makes, and
    `Endpoint`'s repr redacts those.
    """

    __slots__ = ("_authed", "_headers")

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = dict(headers)
        # Usually the route's own endpoint comes every time: the copy is made once.
        self._authed = EndpointMemo(lambda endpoint: endpoint.with_headers(self._headers))

    def __repr__(self) -> str:
        return f"AuthMiddleware(headers={sorted(self._headers)})"

    def __call__(self, call: Call, call_next: CallNext) -> Awaitable[Reply]:
        call.endpoint = self._authed(call.endpoint)
        return call_next(call)  # no coroutine frame of its own on every call
