"""The shipped Grafana dashboard works: a real Prometheus scrapes a real gateway that served
traffic through the demo upstream, and every PromQL expression of the dashboard parses and
returns data. Plus fast checks that need no Prometheus."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.cli import DEMO_MEMBER_KEY
from gateway.metering import Metrics
from tests.test_cli import free_port, running

DEPLOY = Path(__file__).parents[1] / "deploy"
DASHBOARD = json.loads((DEPLOY / "grafana" / "dashboards" / "nanogpt-gateway.json").read_text())
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "$member": ".*",
    "$model": ".*",
}


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def expressions() -> list[str]:
    return [t["expr"] for p in panels(DASHBOARD["panels"]) for t in p.get("targets", [])]


def promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def exported_names() -> set[str]:
    """Every series name the gateway exports, as Prometheus stores them."""
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    return {
        family.name + suffix
        for family in Metrics().registry.collect()
        if family.name.startswith("nanogpt")
        for suffix in suffixes[family.type]
    }


def test_every_panel_is_complete_and_names_only_exported_metrics() -> None:
    names = exported_names()
    visible = [p for p in panels(DASHBOARD["panels"]) if p["type"] != "row"]
    assert len(visible) >= 12
    for panel in visible:
        assert panel["title"] and panel["description"], panel
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\bnanogpt_[a-z_]+", target["expr"]))
            assert used and used <= names, f"{panel['title']}: {used - names}"


def test_the_datasource_uid_matches_the_provisioned_one() -> None:
    provisioned = (
        DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
    ).read_text()
    assert "uid: prometheus" in provisioned


@pytest.fixture
def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus is not installed: .ci/run installs Debian's package")
        pytest.skip("needs the prometheus binary (apt-get install prometheus)")
    return binary


def test_the_shipped_prometheus_config_is_valid(prometheus_binary: str) -> None:
    promtool = Path(prometheus_binary).with_name("promtool")
    result = subprocess.run(
        [str(promtool), "check", "config", str(DEPLOY / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def traffic(base: str) -> None:
    """Requests of every kind the dashboard shows: plain and streamed chats (a reasoning model
    too), embeddings, a listing, an unknown model and a bad key."""
    member = {"authorization": f"Bearer {DEMO_MEMBER_KEY}"}
    messages = [{"role": "user", "content": "Hello"}]
    with httpx.Client(base_url=base, headers=member, timeout=30) as http:
        for model in ("deepseek/deepseek-v3.2", "moonshotai/kimi-k2.5:thinking"):
            for stream in (False, True):
                body = {"model": model, "messages": messages, "stream": stream}
                assert http.post("/v1/chat/completions", json=body).status_code == 200
        embedding = {"model": "text-embedding-3-small", "input": "hello"}
        assert http.post("/v1/embeddings", json=embedding).status_code == 200
        assert http.get("/v1/models").status_code == 200
        unknown = {"model": "no/such-model", "messages": messages}
        assert http.post("/v1/chat/completions", json=unknown).status_code == 404
        bad_key = {"authorization": "Bearer sk-nobody"}
        assert http.get("/v1/models", headers=bad_key).status_code == 401


@contextlib.contextmanager
def prometheus(
    binary: str, target: str, workdir: Path
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: gateway\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    log = (workdir / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        until(lambda: httpx.get(f"{url}/-/ready").status_code == 200, process, "ready")
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def until(condition: Any, process: subprocess.Popen[str], what: str, seconds: float = 30) -> None:
    """Poll `condition` (a readiness check, never a timed wait) until it holds."""
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, f"prometheus exited with {process.returncode}"
        with contextlib.suppress(httpx.TransportError):
            if condition():
                return
        assert time.monotonic() < deadline, f"prometheus: not {what} after {seconds}s"
        time.sleep(0.1)


def query(url: str, expr: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{url}/api/v1/query", params={"query": expr}).json()
    return answer


def test_every_dashboard_query_returns_data_from_a_real_scrape(
    prometheus_binary: str, tmp_path: Path
) -> None:
    with running(["serve", "--demo"], "/readyz") as (base, _, _):
        traffic(base)
        target = base.removeprefix("http://")
        with prometheus(prometheus_binary, target, tmp_path) as (url, process):

            def scraped_enough() -> bool:
                # rate() needs two samples in its window; three scrapes after the traffic.
                result = query(url, "count_over_time(nanogpt_balance_usd[1m])")["data"]["result"]
                return bool(result) and float(result[0]["value"][1]) >= 3

            until(scraped_enough, process, "scraped three times")
            for variable in ("member", "model"):
                values = httpx.get(f"{url}/api/v1/label/{variable}/values").json()["data"]
                assert values, variable
            failures = []
            for expr in expressions():
                answer = query(url, promql(expr))
                if answer["status"] != "success" or not answer["data"]["result"]:
                    failures.append(f"{expr}\n    -> {answer}")
    assert not failures, "\n".join(failures)
