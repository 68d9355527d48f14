"""The fixed-response upstream: nginx answering as NanoGPT would, so that it is never the
bottleneck. One port answers chat completions with a JSON body, one with a 64-event stream,
and one drips that stream at a few KB/s so the soak holds streams open; all three serve the
stand-in's catalog, embedding models and balance, which the gateway fetches at start."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from starlette.testclient import TestClient

from gateway.demo_upstream import DEMO_TEAM_KEY, create_demo_upstream

STREAM_EVENTS = 64
MODEL = "deepseek/deepseek-v3.2"


@dataclass(frozen=True)
class Ports:
    json: int
    stream: int
    slow_stream: int


def chat_json() -> str:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1764547200,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello, team! " * 8},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 24, "total_tokens": 36},
        }
    )


def chat_stream(events: int = STREAM_EVENTS) -> str:
    """`events` SSE events as NanoGPT sends them when asked for usage: content deltas with
    `"usage": null`, a usage-only event, then `[DONE]` (which is not counted)."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1764547200}
    lines = []
    for i in range(events - 1):
        delta = {"content": f"word{i} "} if i else {"role": "assistant", "content": ""}
        choice = {"index": 0, "delta": delta, "finish_reason": None}
        lines.append({**base, "model": MODEL, "choices": [choice], "usage": None})
    usage = {"prompt_tokens": 12, "completion_tokens": events - 2, "total_tokens": events + 10}
    lines.append({**base, "model": MODEL, "choices": [], "usage": usage})
    return "".join(f"data: {json.dumps(line)}\n\n" for line in lines) + "data: [DONE]\n\n"


def catalog_paths() -> tuple[str, ...]:
    return ("/api/v1/models", "/api/v1/embedding-models", "/api/check-balance")


def catalog() -> dict[str, str]:
    """Path → body of the stand-in's metadata endpoints, as fetched from the stand-in itself."""
    auth = {"authorization": f"Bearer {DEMO_TEAM_KEY}"}
    with TestClient(create_demo_upstream()) as client:
        return {
            "/api/v1/models": client.get("/api/v1/models?detailed=true", headers=auth).text,
            "/api/v1/embedding-models": client.get("/api/v1/embedding-models", headers=auth).text,
            "/api/check-balance": client.post("/api/check-balance", headers=auth).text,
        }


def nginx_config(workdir: Path, ports: Ports) -> str:
    """A complete nginx.conf, the bodies it serves and everything it writes under `workdir`."""
    bodies = {**catalog(), "/chat.json": chat_json(), "/chat.sse": chat_stream()}
    for path, body in bodies.items():
        (workdir / path.strip("/").replace("/", "_")).write_text(body)

    def serve(path: str, media_type: str, as_path: str | None = None) -> str:
        # nginx's static module refuses POST with a 405; the error page turns that into a 200.
        file = workdir / path.strip("/").replace("/", "_")
        return (
            f"location = {as_path or path} {{ default_type {media_type}; alias {file}; "
            f"error_page 405 =200 $uri; }}"
        )

    metadata = "\n    ".join(serve(path, "application/json") for path in catalog_paths())
    chat = "/api/v1/chat/completions"
    temp = "".join(
        f"  {kind}_temp_path {workdir / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
{temp}  client_max_body_size 16m;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{ports.json};
    {metadata}
    {serve("/chat.json", "application/json", chat)}
  }}
  server {{
    listen 127.0.0.1:{ports.stream};
    {metadata}
    {serve("/chat.sse", "text/event-stream", chat)}
  }}
  server {{
    listen 127.0.0.1:{ports.slow_stream};
    limit_rate 2k;
    {metadata}
    {serve("/chat.sse", "text/event-stream", chat)}
  }}
}}
"""
