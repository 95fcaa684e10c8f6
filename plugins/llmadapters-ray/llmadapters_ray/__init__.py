"""Ray Data for llmadapters: `ChatCompletionsUDF` answers a dataset's rows on a cluster,
with the library's providers, transports, retries and limits, and the batch runner
``ray`` runs ``llmadapters batch IN -o OUT --on ray``.

Ray is imported only when a job runs: loading this plugin (as every client does) costs
nothing to programs that do not use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmadapters import hookimpl

from .udf import OUTPUT_COLUMNS, ChatCompletionsUDF, reply_columns, share_limits

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmadapters.plugin import BatchRunner

__all__ = ["OUTPUT_COLUMNS", "ChatCompletionsUDF", "register_batch_runners", "reply_columns", "share_limits"]


@hookimpl
def register_batch_runners(register: Callable[[str, BatchRunner], None]) -> None:
    from .runner import run_on_ray

    register("ray", run_on_ray)
