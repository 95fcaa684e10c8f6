"""The policies a route runs by, as plain values: its timeouts, its retry policy, its
rate limits and its response cache's settings.

The config reads them, the middleware and transports act on them: both import them from
here, so loading a config pulls in no behaviour. Each is also importable from the module
that acts on it, where it was first defined.
"""

from __future__ import annotations

import attrs

__all__ = ["CacheSettings", "Limits", "RetryPolicy", "Timeouts"]


@attrs.frozen(kw_only=True)
class Timeouts:
    """Per-attempt timeouts in seconds (None: no limit).

    Attributes:
        connect: to establish a connection (TCP + TLS).
        read: between two reads of the response; it bounds a stalled stream.
        write: between two writes of the request.
        pool: waiting for a free connection from the pool.
        total: the whole attempt, a stream's last chunk included (enforced by the
            timeout middleware, not the transport).
        first_token: until a stream's first chunk or a unary reply (timeout middleware).
    """

    connect: float | None = 5.0
    read: float | None = 600.0
    write: float | None = 600.0
    pool: float | None = None
    total: float | None = None
    first_token: float | None = None


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Attributes:
    max_attempts: attempts in all, the first included (openai-python: 3).
    deadline: seconds from the first attempt after which no attempt starts; None: no limit.
    initial_delay, max_delay: the exponential backoff, in seconds.
    max_retry_after: the longest server-requested wait honoured; longer ones fail at once.
    """

    max_attempts: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    deadline: float | None = None
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 120.0


@attrs.frozen(kw_only=True)
class Limits:
    """One provider's rate limits (the ``ratelimit`` middleware's, or a shared backend's).

    Attributes:
        max_concurrency: calls in flight at most (None: no limit, found from 429s when adaptive).
        rpm: requests per minute at most (None: no limit, or what the headers say when adaptive).
        tpm: tokens per minute at most, prompt and completion (likewise).
        adaptive: learn the limits from the replies (headers and 429s); see the module docstring.
        per_model: keep separate budgets per model instead of one for the provider.
        account: a name for an account whose limits several providers share (two base URLs
            of one provider, a proxy in front of it): the providers that give the same name
            share one budget, on the limits of the first of them to make a call.
        backend: ``"local"`` (this process's budgets), or the name of a shared backend a
            plugin registers as middleware ``ratelimit-NAME`` (``"redis"``).
        url: the shared backend's address, e.g. ``redis://127.0.0.1:6379/0``.
        fail_closed: when the shared backend is unreachable, fail calls instead of
            falling back to this process's budgets.
        lease: seconds a shared concurrency permit outlives a process that died holding it.
    """

    max_concurrency: int | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(1)))
    rpm: float | None = None
    tpm: float | None = None
    adaptive: bool = True
    per_model: bool = False
    account: str | None = None
    backend: str = "local"
    url: str | None = None
    fail_closed: bool = False
    lease: float = 10.0


@attrs.frozen(kw_only=True)
class CacheSettings:
    """The response cache's settings.

    Attributes:
        path: the SQLite file; None for ``$XDG_CACHE_HOME/llmadapters/responses.sqlite``.
        max_size: bytes of stored replies at most; the least recently used go first.
        expire: seconds after which a stored reply is a miss; None: never.
        nondeterministic: also cache requests that sample (``temperature`` above 0 and
            no ``seed``), whose next answer would differ.
    """

    path: str | None = None
    max_size: int = 1 << 30
    expire: float | None = None
    nondeterministic: bool = False
