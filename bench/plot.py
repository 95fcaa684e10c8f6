"""The Performance page's plot: requests/s against concurrency, from one run's figures."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from contenders import CONTENDERS

if TYPE_CHECKING:
    from pathlib import Path

# The plot's colour of each contender: that of the HTTP client it runs on, so that each
# llmadapters line stands beside its plain library's.
_COLORS = {
    "aiohttp": ("la-aiohttp", "la-aiohttp-bare", "la-aiohttp-batch", "aiohttp"),
    "httpx2": ("la-httpx", "la-httpx-bare", "la-httpx-batch", "httpx2"),
    "openai on aiohttp": ("la-openai", "la-openai-bare", "la-openai-batch", "openai-aiohttp"),
    "openai on httpx2": ("la-openai-httpx2", "openai-httpx2"),
    "httpx": ("httpx",),
    "sync openai": ("openai-sync",),
    "litellm": ("litellm",),
}


def plot(results: dict[str, Any], path: Path) -> None:
    """Requests/s against concurrency, both on log scales: llmadapters solid (dotted with
    no middleware, dash-dotted through client.batch), the others dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator, ScalarFormatter

    color = {key: f"C{i}" for i, keys in enumerate(_COLORS.values()) for key in keys}
    fig, ax = plt.subplots(figsize=(11, 6))
    for key in results["contenders"]:
        figures = results["unary"].get(key)
        if not figures:
            continue
        levels = sorted(figures, key=int)
        style = ":" if key.endswith("-bare") else "-." if key.endswith("-batch") else "-"
        ax.plot(
            [int(c) for c in levels],
            [figures[c]["req_s"] for c in levels],
            style if key.startswith("la-") else "--",
            marker="o" if key.startswith("la-") else "s",
            color=color[key],
            label=CONTENDERS[key].label,
        )
    levels = results["settings"]["concurrency"]
    ax.set_xscale("log")
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel("concurrency (calls in flight)")
    ax.set_ylabel("requests/s")
    ax.set_title("Non-streamed calls against nginx")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
