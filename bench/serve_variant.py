"""One gateway process for the metering benchmark: `--metering on` is the product as shipped;
`--metering off` removes what metering adds to the request path (reading usage from bodies,
hiding the usage event, the metric updates and the ledger row), keeping auth, policy and the
relay. Both still ask the upstream for stream usage, so the stand-in, which shares the core,
does the same work for both and the ratio is the gateway's alone."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import harness
import uvicorn

from gateway import handlers
from gateway.app import create_app
from gateway.config import load_settings
from gateway.tally import Tallies
from gateway.usage import Passthrough


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the stand-in's API root")
    parser.add_argument("--metering", choices=["on", "off"], required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        serve(args, Path(tmp))


def serve(args: argparse.Namespace, workdir: Path) -> None:
    config = workdir / "gateway.toml"
    config.write_text(harness.gateway_config(args.upstream, workdir / "usage.db"))
    if args.metering == "off":
        handlers._watcher = lambda call, upstream, hide_usage: Passthrough()  # type: ignore[assignment]
        Tallies.record = lambda self, finished: self.metrics.inflight.dec()  # type: ignore[method-assign]
    settings = load_settings(config, {"NANOGPT_API_KEY": "demo-team-key"})
    uvicorn.run(create_app(settings), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
