"""The `nanogpt-gateway` command: serve, quickstart, check-config, hash-key, demo-upstream.

Configuration errors end the process with one line naming the key, and exit status 2.
Nothing imports this module.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import socket
import sys
from collections.abc import Sequence

import uvicorn

from gateway import __version__
from gateway.app import create_app
from gateway.config import ConfigError, Demo, Settings, hash_key, load_settings
from gateway.demo_upstream import DEMO_TEAM_KEY, create_demo_upstream
from gateway.logs import configure_logging

DEMO_MEMBER_KEY = "sk-gateway-demo"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except ConfigError as exc:
        print(f"nanogpt-gateway: configuration error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nanogpt-gateway",
        description="An OpenAI-compatible gateway for a team sharing one NanoGPT account.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway")
    _config_arguments(serve)
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="listen port (overrides server.port)")
    serve.add_argument(
        "--demo",
        action="store_true",
        help="run on the built-in offline stand-in of NanoGPT instead of the real API",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(run=_serve)

    quickstart = commands.add_parser(
        "quickstart",
        help="zero-config local start: real NanoGPT if NANOGPT_API_KEY is set, else the demo",
    )
    quickstart.add_argument("--port", type=int, default=8080)
    quickstart.set_defaults(run=_quickstart)

    check = commands.add_parser("check-config", help="validate a configuration file and exit")
    _config_arguments(check)
    check.set_defaults(run=_check_config)

    hash_cmd = commands.add_parser("hash-key", help="print the key_sha256 of a member key")
    hash_cmd.add_argument("key")
    hash_cmd.set_defaults(run=lambda args: print(hash_key(args.key)))

    demo = commands.add_parser(
        "demo-upstream", help="run only the offline NanoGPT stand-in (not the product)"
    )
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8181)
    demo.set_defaults(run=_demo_upstream)
    return parser


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=os.environ.get("GATEWAY_CONFIG"),
        help="TOML configuration file (default: $GATEWAY_CONFIG)",
    )


def _serve(args: argparse.Namespace) -> int:
    if args.demo:
        return _serve_demo(args.config, args.host, args.port, args.log_level)
    settings = load_settings(args.config, os.environ, host=args.host, port=args.port)
    return _run(settings, args.log_level)


def _serve_demo(config: str | None, host: str | None, port: int | None, log_level: str) -> int:
    """The gateway in front of the stand-in, which listens on a free loopback port."""
    sock = _loopback_socket()
    demo_host, demo_port = sock.getsockname()[:2]
    demo = Demo(base_url=f"http://{demo_host}:{demo_port}/api", team_key=DEMO_TEAM_KEY)
    settings = load_settings(
        config,
        os.environ,
        host=host,
        port=port,
        demo=demo,
        fallback_member=("demo", DEMO_MEMBER_KEY),
    )
    return _run(settings, log_level, demo_socket=sock)


def _quickstart(args: argparse.Namespace) -> int:
    if os.environ.get("NANOGPT_API_KEY", "").strip():
        key = "sk-gateway-" + secrets.token_urlsafe(24)
        settings = load_settings(None, os.environ, port=args.port, fallback_member=("local", key))
        print(f"Gateway on real NanoGPT. Your member key for this run: {key}", file=sys.stderr)
        return _run(settings, "info")
    print("NANOGPT_API_KEY is not set: starting on the offline demo upstream.", file=sys.stderr)
    return _serve_demo(None, None, args.port, "info")


def _check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, os.environ)
    names = ", ".join(m.name for m in settings.members) or "none (auth.mode = none)"
    print(f"{args.config or '(defaults)'}: OK; members: {names}")
    return 0


def _run(settings: Settings, log_level: str, *, demo_socket: socket.socket | None = None) -> int:
    configure_logging(log_level, [settings.team_key.reveal()])
    gateway = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=settings.server.host,
            port=settings.server.port,
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=30,
        )
    )
    if demo_socket is None:
        gateway.run()
        return 0
    print(
        f"Demo mode: NanoGPT stand-in at {settings.upstream.base_url} (not the real API).\n"
        f"  base URL   http://{settings.server.host}:{settings.server.port}/v1\n"
        f"  member key {DEMO_MEMBER_KEY}",
        file=sys.stderr,
    )
    # Not access_log=False: uvicorn applies it to the process-wide "uvicorn.access" logger,
    # which would silence the gateway's access log too.
    upstream = uvicorn.Server(
        uvicorn.Config(create_demo_upstream(chunk_delay_seconds=0.05), log_config=None)
    )

    async def serve_both() -> None:
        demo_task = asyncio.create_task(upstream.serve(sockets=[demo_socket]))
        try:
            await gateway.serve()
        finally:
            upstream.should_exit = True
            await demo_task

    # uvicorn re-raises the signal it caught once it has shut down.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_both())
    return 0


def _demo_upstream(args: argparse.Namespace) -> int:
    print(f"NanoGPT stand-in (not the real API) with team key {DEMO_TEAM_KEY!r}", file=sys.stderr)
    uvicorn.run(create_demo_upstream(chunk_delay_seconds=0.05), host=args.host, port=args.port)
    return 0


def _loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock
