"""nginx on loopback as a server no one of us wrote, fast enough not to be what limits a
client: one worker, no access log, ``return 200`` with a fixed OpenAI-shaped reply.

``start_nginx()`` runs Debian's nginx (``apt-get install nginx``) from a temporary
prefix and returns the process and two base URLs: ``.../unary/v1`` answers every
``POST /chat/completions`` with one chat.completion JSON body, ``.../sse/v1`` with a
stream of ``STREAM_CHUNKS`` chunk events (the last with the finish_reason) and
``[DONE]``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from common import free_port, wait_for_port

STREAM_CHUNKS = 50

COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "echo",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "benchmark reply"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 6, "completion_tokens": 2, "total_tokens": 8},
}


def _sse_body() -> str:
    # Chunks carry only their choices: nginx takes at most 4 KB in one `return`. The last
    # one ends the reply with its finish_reason, as a real stream does (LiteLLM fails a
    # stream without one).
    choices: list[dict[str, object]] = [{"index": 0, "delta": {"content": f"w{i} "}} for i in range(STREAM_CHUNKS - 1)]
    choices.append({"index": 0, "delta": {}, "finish_reason": "stop"})
    events = [f"data: {json.dumps({'choices': [c]}, separators=(',', ':'))}\n\n" for c in choices]
    return "".join(events) + "data: [DONE]\n\n"


def _config(prefix: Path, port: int) -> str:
    unary = json.dumps(COMPLETION, separators=(",", ":"))
    return f"""
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /unary/v1/chat/completions {{
            default_type application/json;
            return 200 '{unary}';
        }}
        location = /sse/v1/chat/completions {{
            default_type text/event-stream;
            return 200 '{_sse_body()}';
        }}
    }}
}}
"""


def start_nginx() -> tuple[subprocess.Popen[bytes], str, str]:
    """nginx on a free loopback port; returns it and the unary and streaming base URLs."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise SystemExit("nginx not found: apt-get install nginx")
    prefix = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
    port = free_port()
    (prefix / "nginx.conf").write_text(_config(prefix, port))
    proc = subprocess.Popen([binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf")], stderr=subprocess.DEVNULL)
    if not wait_for_port(port):
        proc.kill()
        raise SystemExit(f"nginx did not start: {(prefix / 'error.log').read_text()}")
    base = f"http://127.0.0.1:{port}"
    return proc, f"{base}/unary/v1", f"{base}/sse/v1"
