"""Testing tools: the fake OpenAI-compatible server (`FakeServer`)."""

from .fake_server import BEHAVIOURS, FakeServer, FakeServerOptions

__all__ = ["BEHAVIOURS", "FakeServer", "FakeServerOptions"]
