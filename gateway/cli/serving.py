"""Serving: the gateway's uvicorn server (with the demo upstream and the metrics port as
companions when configured), its drain at shutdown, and the commands that start it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import secrets
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from gateway.app import create_app, create_metrics_app
from gateway.config import ConfigError, Demo, Settings, load_settings
from gateway.demo_upstream import DEMO_TEAM_KEY, create_demo_upstream
from gateway.keystore import KeyStoreError, open_keystore
from gateway.keystore.fields import clashing_name
from gateway.ledger import LedgerError, prepare
from gateway.logs import configure_logging
from gateway.server import Drain, guarded

logger = logging.getLogger("gateway.serving")

DEMO_MEMBER_KEY = "sk-gateway-demo"
STARTUP_FAILURE = 3  # as uvicorn exits when the application fails to start
CUT_SECONDS = 5.0
"""After the grace, how long cut requests have to say so before uvicorn cancels what is left."""


def serve(args: argparse.Namespace) -> int:
    _one_process_only()
    if args.demo:
        return _serve_demo(args.config, args.host, args.port, args.log_level)

    def load() -> Settings:
        return load_settings(args.config, os.environ, host=args.host, port=args.port)

    return _run(load, args.log_level)


def _serve_demo(config: str | None, host: str | None, port: int | None, log_level: str) -> int:
    """The gateway in front of the stand-in, which listens on a free loopback port."""
    with _loopback_socket(avoid=port) as sock:
        demo_host, demo_port = sock.getsockname()[:2]
        demo = Demo(base_url=f"http://{demo_host}:{demo_port}/api", team_key=DEMO_TEAM_KEY)

        def load() -> Settings:
            return load_settings(
                config,
                os.environ,
                host=host,
                port=port,
                demo=demo,
                fallback_member=("demo", DEMO_MEMBER_KEY),
            )

        return _run(load, log_level, demo_socket=sock)


def quickstart(args: argparse.Namespace) -> int:
    _one_process_only()
    if os.environ.get("NANOGPT_API_KEY", "").strip():
        key = "sk-gateway-" + secrets.token_urlsafe(24)

        def load() -> Settings:
            return load_settings(None, os.environ, port=args.port, fallback_member=("local", key))

        print(f"Gateway on real NanoGPT. Your member key for this run: {key}", file=sys.stderr)
        return _run(load, "info")
    print("NANOGPT_API_KEY is not set: starting on the offline demo upstream.", file=sys.stderr)
    return _serve_demo(None, None, args.port, "info")


class _Companion(uvicorn.Server):
    """A server that stops when the gateway does, never on a signal of its own: the gateway
    must drain its in-flight requests while the demo upstream behind it still answers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _Gateway(uvicorn.Server):
    """uvicorn re-raises the signal that stopped it as soon as it has shut down, which would
    kill the process before its companions stop; this one leaves that to `_run`. From the
    signal on, new requests are refused (503); at the end of the grace, what still runs is
    cut (`Drain`), while uvicorn waits for it to end before the ledger is flushed."""

    def __init__(self, config: uvicorn.Config, drain: Drain, grace: float) -> None:
        super().__init__(config)
        self.caught: list[int] = []
        self.drain = drain
        self.grace = grace

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        signals = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.caught.append(sig)
        self.drain.begin()
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.drain.begin()
        tasks = self.server_state.tasks
        cut = asyncio.get_running_loop().call_later(self.grace, self.drain.cut, tasks)
        try:
            await super().shutdown(sockets)
        finally:
            cut.cancel()


def _run(
    load: Callable[[], Settings], log_level: str, *, demo_socket: socket.socket | None = None
) -> int:
    """Serve the settings `load()` gives, and again on `SIGHUP` (see `_reload`)."""
    settings = load()
    try:
        prepare(settings.database.location)
        store = open_keystore(settings.database.location)
        try:
            clash = clashing_name(settings.members, store.stored_keys())
        finally:
            store.close()
    except (LedgerError, KeyStoreError) as exc:
        raise ConfigError(f"{settings.database.setting}: {exc}") from None
    if clash:
        raise ConfigError(clash)
    configure_logging(
        log_level, [settings.team_key.reveal(), settings.metering.metrics_token or ""]
    )
    app = create_app(settings)
    host = settings.server.host
    drain = Drain(app)
    grace = settings.server.shutdown_grace_seconds
    config = uvicorn.Config(
        drain,
        host=host,
        port=settings.server.port,
        http=guarded(settings),
        ws="none",
        log_config=None,
        access_log=settings.server.access_log,
        server_header=False,
        timeout_graceful_shutdown=math.ceil(grace + CUT_SECONDS),
    )
    gateway = _Gateway(config, drain, grace)
    # Not access_log=False on companions: uvicorn applies it to the process-wide
    # "uvicorn.access" logger, which would silence the gateway's access log too.
    companions: list[tuple[uvicorn.Server, list[socket.socket] | None]] = []
    if demo_socket is not None:
        print(
            f"Demo mode: NanoGPT stand-in at {settings.upstream.base_url} (not the real API).\n"
            f"  base URL   http://{host}:{settings.server.port}/v1\n"
            f"  member key {DEMO_MEMBER_KEY}",
            file=sys.stderr,
        )
        demo = create_demo_upstream(chunk_delay_seconds=0.05)
        companions.append((_Companion(uvicorn.Config(demo, log_config=None)), [demo_socket]))
    if (metrics_port := settings.metering.metrics_port) is not None:
        metrics = create_metrics_app(app.state.metrics, settings.metering.metrics_token)
        config = uvicorn.Config(metrics, host=host, port=metrics_port, log_config=None)
        companions.append((_Companion(config), None))

    async def serve_all() -> None:
        reloading = asyncio.Lock()  # one reload at a time, in the order the signals came

        async def reload() -> None:
            async with reloading:
                await _reload(app, load)

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload()))
        tasks = [asyncio.create_task(server.serve(sockets=s)) for server, s in companions]
        try:
            await gateway.serve()
        finally:
            for server, _ in companions:
                server.should_exit = True
            await asyncio.gather(*tasks)

    # uvicorn.run() would pick the loop (uvloop when installed); serving several servers at
    # once, this picks it the same way.
    with asyncio.Runner(loop_factory=gateway.config.get_loop_factory()) as runner:
        runner.run(serve_all())
    if not gateway.started:
        return STARTUP_FAILURE
    # Exit as the signal says, now that everything has shut down gracefully (Ctrl-C quietly).
    with contextlib.suppress(KeyboardInterrupt):
        for sig in reversed(gateway.caught):
            signal.raise_signal(sig)
    return 0


async def _reload(app: Starlette, load: Callable[[], Settings]) -> None:
    """`SIGHUP`: read the config again and apply it to new requests; requests in flight
    finish under the one they started with. An invalid config changes nothing."""
    apply: Callable[[Settings], Awaitable[list[str]]] | None = getattr(app.state, "reload", None)
    if apply is None:
        logger.warning("config reload ignored: the gateway is still starting")
        return
    try:
        kept = await apply(await asyncio.to_thread(load))
    except (ConfigError, KeyStoreError) as exc:
        logger.error("config reload refused, the running config stays: %s", exc)
        return
    if kept:
        logger.warning(
            "config reloaded; these settings differ but keep their running values until a "
            "restart: %s",
            ", ".join(kept),
        )
    else:
        logger.info("config reloaded")


def _one_process_only() -> None:
    """Metrics, the ledger writer and the catalog cache live in this process: several workers
    would each count a share and Prometheus would see whichever answered the scrape. So the
    gateway runs as one process, and scales with replicas, each scraped on its own."""
    workers = os.environ.get("WEB_CONCURRENCY", "1").strip() or "1"
    if workers != "1":
        raise ConfigError(
            f"WEB_CONCURRENCY={workers}: the gateway runs as one process (its metrics and "
            "ledger are per process); run more replicas instead of more workers"
        )


def demo_upstream(args: argparse.Namespace) -> int:
    print(f"NanoGPT stand-in (not the real API) with team key {DEMO_TEAM_KEY!r}", file=sys.stderr)
    uvicorn.run(create_demo_upstream(chunk_delay_seconds=0.05), host=args.host, port=args.port)
    return 0


def _loopback_socket(*, avoid: int | None = None) -> socket.socket:
    """Listening already, so the gateway's first calls (catalog, balance) wait in the backlog
    for the stand-in to start accepting instead of being refused. Never on port `avoid`: the
    system may hand out the port the gateway was told to take and has not bound yet."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    if sock.getsockname()[1] == avoid:
        other = _loopback_socket(avoid=avoid)  # while this one still holds the port
        sock.close()
        return other
    sock.listen(2048)
    return sock
