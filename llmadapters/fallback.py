"""Fallback chains: ``model=["alpha/x", "beta/y"]`` tries each model in turn until one
answers, in ``create`` and in a batch line alike.

A model's call that fails for good (its route's retries used up, or an error not worth
retrying) passes the call on to the next model; a mistake in the configuration or the
arguments does not. When every model failed, the error raised is the last model's (its
class and fields kept, so ``except RateLimitError`` catches a chain that ended in a 429)
with a message naming each model and its failure, and each model's error the
``__cause__`` of the next one's.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from .errors import APIStatusError, LLMAdapterError, MalformedResponseError, StreamError, TransportError, shown

__all__ = ["FALLBACK_ON", "ModelChoice", "chain_error", "models_of"]

ModelChoice = str | Sequence[str] | None

# What moves a fallback chain to its next model: the failures of a call, not mistakes in
# the configuration or the arguments.
FALLBACK_ON = (APIStatusError, TransportError, MalformedResponseError, StreamError)


def models_of(model: object) -> tuple[str | None, ...]:
    """The models to try, in turn: ``model`` alone (None for the default model), or
    the models of a fallback chain (a non-empty list of non-empty strings)."""
    if model is None or isinstance(model, str):
        return (model,)
    if isinstance(model, (list, tuple)) and model and all(isinstance(m, str) and m for m in model):
        return tuple(model)
    if isinstance(model, (list, tuple)) and not model:
        raise ValueError("model: an empty list of fallbacks; give at least one 'provider/model'")
    raise TypeError(f"model must be a 'provider/model' string or a list of them (a fallback chain), got {shown(model)}")


def chain_error(failures: Sequence[tuple[str | None, LLMAdapterError]]) -> LLMAdapterError:
    """The error of a fallback chain whose every model failed, from each model (as
    written) and its error, in the order tried: see the module's docstring."""
    message = "; ".join(f"{model or 'the default model'}: {error}" for model, error in failures)
    for (_, cause), (_, error) in itertools.pairwise(failures):
        error.__cause__ = cause
    last = failures[-1][1]
    last.args = (f"every model of the fallback chain failed: {message}",)
    return last
