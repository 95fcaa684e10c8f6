"""Auth: puts the provider's credentials on every call; always the innermost middleware,
so no other middleware ever sees a key.

A provider may have several keys (``api_key_env = ["KEY_1", "KEY_2"]``). They make one
`KeyRing`, shared by the route's middleware through ``Call.keys``: the rate limiter keeps
budgets per key and names the key of each call (``Call.key``); without it, auth takes
the keys in turn. A key the provider refuses for good (401, 402, or an error code that
says its balance or quota is spent) is retired, with a warning naming its variable, and
the call is sent again with the next key. A 429 cools only its key: its
``retry_after`` becomes the time until another key can take the call. Every key's value is
scrubbed from whatever the server sent back (error messages, bodies, headers, stream
events) before anything above auth sees it, and from every log record made while the
route lives, whichever library logs it (httpcore logs response headers at DEBUG).
A call that brings its own auth header (``extra_headers``) is sent with it: that key is
scrubbed too, and what the server says of it retires or cools none of the provider's.
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ..errors import APIStatusError, AuthenticationError, LLMAdapterError, RateLimitError
from ..streaming import ChatCompletionStream
from .base import EndpointMemo
from .retry import KEY_SPENT_CODES, error_type, provider_verdict, quota_spent

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Iterable, Sequence

    from ..transports.base import Endpoint
    from ..types import ChatCompletionChunk, ResponseInfo
    from .base import Call, CallNext, Reply

__all__ = ["KEY_SPENT_CODES", "AuthMiddleware", "KeyRing", "Scrubber", "key_spent", "scrub_logs"]

logger = logging.getLogger("llmadapters")

_COOL = 1.0  # seconds a key cools after a 429 that named no Retry-After


def key_spent(call: Call, exc: APIStatusError) -> bool:
    """Whether ``exc`` refuses the call's key for good, not just this call: a 401; a 402
    or a code of `KEY_SPENT_CODES`, unless the provider says to retry it (MiMo's burst
    402; DashScope's ``insufficient_quota``, which is its tokens-per-minute limit)."""
    if exc.status == 401:
        return True
    return (exc.status == 402 or quota_spent(exc)) and provider_verdict(call.spec, exc) is not True


class Scrubber:
    """Replaces every value of ``secrets`` in what a server sent with ``****`` and its
    last four characters (as providers show keys), so that a key a server or a proxy
    echoes never reaches an exception, a log line or an output record.

    A value shorter than 8 characters (a placeholder such as ``"x"`` or ``"EMPTY"`` for a
    local server) is masked only where it stands as a word of its own, not inside
    others (``max_tokens`` keeps its ``x``)."""

    __slots__ = ("__weakref__", "_masks", "_secrets")

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = frozenset(s for s in secrets if s)
        # Longest first, so that a key containing another is masked whole.
        self._masks = [(s, _mask(s), _alone(s)) for s in sorted(self._secrets, key=len, reverse=True)]

    @classmethod
    def of_auth(cls, values: Iterable[str], *, also: Scrubber | None = None) -> Scrubber:
        """A scrubber of the values of auth headers and of the key alone in each
        ``Bearer KEY``, and of ``also``'s secrets."""
        values = list(values)
        secrets = [*values, *(value.split(" ", 1)[1] for value in values if " " in value)]
        return cls(secrets if also is None else also._secrets.union(secrets))

    def text(self, text: str) -> str:
        for secret, mask, alone in self._masks:
            if secret not in text:
                continue
            if alone is None:
                text = text.replace(secret, mask)
            elif alone.search(text):
                text = alone.sub(mask, text)
        return text

    def holds(self, text: str) -> bool:
        return any(secret in text and (alone is None or alone.search(text)) for secret, _, alone in self._masks)

    def value(self, value: Any) -> Any:
        """``value`` (JSON-like: strings, mappings, lists), scrubbed; the same object when
        it holds no secret."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            items = [(k, self.value(k), v, self.value(v)) for k, v in value.items()]
            if all(k is k2 and v is v2 for k, k2, v, v2 in items):
                return value
            return {k2: v2 for _, k2, _, v2 in items}
        if isinstance(value, (list, tuple)):
            scrubbed = [self.value(v) for v in value]
            if all(a is b for a, b in zip(scrubbed, value, strict=True)):
                return value
            if isinstance(value, list):
                return scrubbed
            make = getattr(value, "_make", None)  # a named tuple
            return make(scrubbed) if make is not None else tuple(scrubbed)
        return value

    def error(self, exc: BaseException) -> None:
        """Scrub ``exc`` in place: its arguments (hence its message) and attributes (the
        ``body``, ``headers`` and ``request_id`` of an error from a server), and so on
        down its causes. A cause of another library's that holds a key where it cannot
        be scrubbed (aiohttp's request info holds the request's headers) is cut off."""
        seen: set[int] = set()
        current: BaseException = exc
        while id(current) not in seen:
            seen.add(id(current))
            current.args = tuple(self.value(arg) for arg in current.args)
            for name, value in vars(current).items():
                if isinstance(value, (str, Mapping, list, tuple)):
                    setattr(current, name, self.value(value))
            cause = current.__cause__ or current.__context__
            if cause is None:
                return
            if not isinstance(cause, LLMAdapterError) and self.holds(repr(cause)):
                current.__cause__ = current.__context__ = None
                current.__suppress_context__ = True
                return
            current = cause

    def info(self, info: ResponseInfo) -> ResponseInfo:
        """``info``, its header values scrubbed (the same object when none holds a key;
        else its headers as a dict with lower-case names, as `ResponseInfo` allows)."""
        if not any(self.holds(value) for value in info.headers.values()):
            return info
        return attrs.evolve(info, headers={k.lower(): self.text(v) for k, v in info.headers.items()})


# The scrubbers of the live AuthMiddleware, for log records: what a library logs (httpcore
# logs response headers at DEBUG, hpack decoded headers) is scrubbed as it is made.
_LIVE: weakref.WeakSet[Scrubber] = weakref.WeakSet()
_FACTORY: list[Callable[..., logging.LogRecord]] = []


def _scrubbed_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _FACTORY[0](*args, **kwargs)
    scrubbers = list(_LIVE)
    if not scrubbers:
        return record
    try:
        message = record.getMessage()
    except Exception:  # a record whose arguments do not fit its message: left to logging
        return record
    for scrubber in scrubbers:
        if scrubber.holds(message):
            record.msg, record.args = scrubber.text(message), None
            message = record.msg
    if record.exc_info and record.exc_info[1] is not None:
        text = logging.Formatter().formatException(record.exc_info)
        for scrubber in scrubbers:
            text = scrubber.text(text)
        record.exc_text = text
    return record


def scrub_logs(scrubber: Scrubber) -> None:
    """Scrub ``scrubber``'s secrets from every log record made while it lives, whatever
    logger makes it (a record factory, installed once over the one in place)."""
    if not _FACTORY:
        _FACTORY.append(logging.getLogRecordFactory())
        logging.setLogRecordFactory(_scrubbed_record)
    _LIVE.add(scrubber)


def _mask(secret: str) -> str:
    return f"****{secret[-4:]}" if len(secret) >= 16 else "****"


_SHORT = 8


def _alone(secret: str) -> re.Pattern[str] | None:
    """For a secret under `_SHORT` characters, the pattern of it as a word of its own."""
    if len(secret) >= _SHORT:
        return None
    return re.compile(rf"(?<!\w){re.escape(secret)}(?!\w)")


@attrs.define(eq=False)
class _Key:
    name: str
    retired: str | None = None  # why, when it was
    cool_until: float = 0.0


class KeyRing:
    """A provider's API keys, by name (the variable each came from, or ``api_key[i]``
    for a key given in code); their values stay with the `AuthMiddleware`.

    Which keys may take calls, which are retired and why, and which are cooling after a
    429; shared by the middleware of one route through ``Call.keys``.
    """

    def __init__(self, provider: str, names: Sequence[str]) -> None:
        if not names:
            raise ValueError("a KeyRing needs at least one key")
        self.provider = provider
        self._keys = {name: _Key(name) for name in names}
        self._order = list(self._keys)
        self._turn = 0

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeyRing({self.provider!r}, {self._order!r})"

    @property
    def names(self) -> list[str]:
        """Every key's name, in the order configured."""
        return list(self._order)

    def usable(self) -> list[str]:
        """The keys not retired, in the order configured."""
        return [name for name in self._order if self._keys[name].retired is None]

    def in_turn(self) -> list[str]:
        """The keys not retired, starting from the next in turn: callers that take the
        first that suits them spread their calls over the keys."""
        start = self._turn = (self._turn + 1) % len(self._order)
        ordered = self._order[start:] + self._order[:start]
        return [name for name in ordered if self._keys[name].retired is None]

    def is_usable(self, name: str) -> bool:
        key = self._keys.get(name)
        return key is not None and key.retired is None

    def pick(self) -> str:
        """The next key in turn that is neither retired nor cooling (or, when all that
        are left are cooling, the one that cools down first). Raises an
        `AuthenticationError` that lists why each key was retired when none is left."""
        usable = self.in_turn()
        if not usable:
            reasons = "; ".join(f"{key.name}: {key.retired}" for key in self._keys.values())
            raise AuthenticationError(
                f"provider {self.provider!r} has no API key left: every one was refused ({reasons})",
                status=401,
                provider=self.provider,
            )
        now = asyncio.get_running_loop().time()
        return min(usable, key=lambda name: self.cooling(name, now))  # the first not cooling

    def retire(self, name: str, exc: APIStatusError) -> None:
        """Take key ``name`` out of use for good, with a warning naming it (never its
        value) and what the provider said."""
        key = self._keys[name]
        if key.retired is not None:
            return
        code = exc.code or error_type(exc)
        key.retired = f"{exc.status}" + (f" {code}" if code else "")
        left = sum(1 for k in self._keys.values() if k.retired is None)
        logger.warning(
            "provider %r: the API key in %s was refused (%s) and is no longer used; %d key(s) left",
            self.provider,
            name,
            key.retired,
            left,
        )

    def cool(self, name: str, seconds: float | None) -> float:
        """Prefer other keys to ``name`` for ``seconds`` (its 429's Retry-After); returns
        the seconds until a usable key is not cooling, when the call may go again."""
        key = self._keys[name]
        now = asyncio.get_running_loop().time()
        key.cool_until = max(key.cool_until, now + (seconds if seconds and seconds > 0 else _COOL))
        return min((self.cooling(k, now) for k in self.usable()), default=0.0)

    def cooling(self, name: str, now: float) -> float:
        """Seconds key ``name`` still cools after a 429 (0 when it does not)."""
        return max(0.0, self._keys[name].cool_until - now)

    def retired(self) -> dict[str, str]:
        """The keys retired, by name, each with why (the status, and the code if any)."""
        return {key.name: key.retired for key in self._keys.values() if key.retired is not None}


class AuthMiddleware:
    """Adds the headers of a key (made once from each key by the provider's ``auth``) to
    each call; retires refused keys and scrubs key values from replies (see the module
    docstring).

    Args:
        ring: the provider's keys, by name, shared by the route's middleware.
        headers: the headers of each key of ``ring``, by its name.
        also: other credentials the route sends (a configured header's, beside a key):
            masked as the keys are, never retired.
    """

    __slots__ = ("_authed", "_names", "_scrub", "ring")

    def __init__(self, ring: KeyRing, headers: Mapping[str, Mapping[str, str]], *, also: Iterable[str] = ()) -> None:
        if set(ring.names) != set(headers):
            raise ValueError("the headers must be those of the ring's keys")
        self.ring = ring
        # Usually the route's own endpoint comes every time: each key's copy is made once.
        self._authed = {name: _memo(own) for name, own in headers.items()}
        self._names = frozenset(name.lower() for own in headers.values() for name in own)
        self._scrub = Scrubber.of_auth([*(value for own in headers.values() for value in own.values()), *also])
        scrub_logs(self._scrub)

    def __repr__(self) -> str:
        return f"AuthMiddleware(keys={self.ring.names})"

    async def __call__(self, call: Call, call_next: CallNext) -> Reply:
        if call.headers and not self._names.isdisjoint(map(str.lower, call.headers)):
            return await self._own_key(call, call_next)
        ring = self.ring
        name = call.key if call.key is not None and ring.is_usable(call.key) else ring.pick()
        endpoint = call.endpoint
        while True:
            call.key = name
            call.endpoint = self._authed[name](endpoint)
            try:
                reply = await call_next(call)
            except LLMAdapterError as exc:
                self._scrub.error(exc)
                if isinstance(exc, APIStatusError) and key_spent(call, exc):
                    ring.retire(name, exc)
                    if ring.usable():
                        name = ring.pick()
                        continue
                elif isinstance(exc, RateLimitError):
                    ready = ring.cool(name, exc.retry_after)
                    if len(ring) > 1 and (exc.retry_after is None or ready < exc.retry_after):
                        exc.retry_after = ready  # another key can take the call sooner
                raise
            except BaseException as exc:
                self._scrub.error(exc)
                raise
            return _scrubbed_reply(reply, self._scrub)

    async def _own_key(self, call: Call, call_next: CallNext) -> Reply:
        """A call whose own headers (``extra_headers``) replace the auth header: sent with
        its key, which is scrubbed too; what the server says of that key (a 401, a 429)
        retires or cools none of the route's keys, which the call did not use."""
        own = [value for name, value in call.headers.items() if name.lower() in self._names]
        scrub = Scrubber.of_auth(own, also=self._scrub)
        scrub_logs(scrub)  # while the call lives (the log scrubbers are held weakly)
        try:
            reply = await call_next(call)
        except BaseException as exc:
            scrub.error(exc)
            raise
        return _scrubbed_reply(reply, scrub)


def _scrubbed_reply(reply: Reply, scrub: Scrubber) -> Reply:
    info = scrub.info(reply.http) if reply.http is not None else None
    if isinstance(reply, ChatCompletionStream):
        return ChatCompletionStream(_scrubbed(reply, scrub), http=info)
    if info is not reply.http:
        reply = attrs.evolve(reply, http=info)
    return reply


async def _scrubbed(stream: ChatCompletionStream, scrub: Scrubber) -> AsyncGenerator[ChatCompletionChunk, None]:
    try:
        async with stream:
            async for chunk in stream:
                yield chunk
    except BaseException as exc:
        scrub.error(exc)
        raise


def _memo(headers: Mapping[str, str]) -> EndpointMemo:
    def authed(endpoint: Endpoint) -> Endpoint:
        return endpoint.with_headers(headers)

    return EndpointMemo(authed)
