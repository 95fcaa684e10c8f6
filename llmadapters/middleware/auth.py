"""Auth: puts the provider's credentials on every call; always the innermost middleware,
so no other middleware ever sees a key."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..transports.base import Endpoint
    from .base import Call, CallNext, Reply

__all__ = ["AuthMiddleware"]


class AuthMiddleware:
    """Adds ``headers`` (made once from the key by the provider's ``auth``) to each call.

    The key lives only inside the headers mapping of the endpoints it makes, and
    `Endpoint`'s repr redacts those.
    """

    __slots__ = ("_authed", "_base", "_headers")

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = dict(headers)
        self._base: Endpoint | None = None
        self._authed: Endpoint | None = None

    def __repr__(self) -> str:
        return f"AuthMiddleware(headers={sorted(self._headers)})"

    async def __call__(self, call: Call, call_next: CallNext) -> Reply:
        endpoint = call.endpoint
        if endpoint is not self._base:  # usually the route's own endpoint: made once
            self._base, self._authed = endpoint, endpoint.with_headers(self._headers)
        assert self._authed is not None
        call.endpoint = self._authed
        return await call_next(call)
