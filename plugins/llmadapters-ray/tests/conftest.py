"""One local Ray for the session (2 CPUs, as CI has), and a redis-server on a free
loopback port. The fake server is the core's ``llmadapters_fake_server``, in a thread of
its own: Ray's actors call it from their processes while a test waits on Ray.

Ray's processes talk to each other on the machine's own address unless told that there
is no cluster to join (read when ``ray`` is imported): these tests keep every byte on
loopback, and send Ray no usage report."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from typing import TYPE_CHECKING, Any

import pytest

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # a single node, on 127.0.0.1
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    import ray

    # The actors load the plugins their configs name, whatever else is installed.
    env = {"LLMADAPTERS_DISABLE_PLUGIN_AUTOLOAD": "1"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """redis-server (Debian's package, which .ci/run installs), without persistence."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(binary):
        pytest.fail("redis-server not found: install the Debian package redis-server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("redis-server did not start")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(30)
