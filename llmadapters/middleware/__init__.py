"""Per-call policies, composed once per route, outermost first.

The default stack is ``logging -> retry -> ratelimit -> timeout -> auth``; auth is always
innermost.
See `llmadapters.middleware.base` for the protocol.
"""

from .auth import AuthMiddleware
from .base import Call, CallNext, Middleware, Reply, compose
from .logging import LoggingMiddleware
from .ratelimit import Limits, RateLimitMiddleware
from .retry import RetryMiddleware, RetryPolicy
from .timeout import TimeoutMiddleware

__all__ = [
    "AuthMiddleware",
    "Call",
    "CallNext",
    "Limits",
    "LoggingMiddleware",
    "Middleware",
    "RateLimitMiddleware",
    "Reply",
    "RetryMiddleware",
    "RetryPolicy",
    "TimeoutMiddleware",
    "compose",
]
