"""The shipped Grafana dashboard and compose stack work: a real Prometheus scrapes a real gateway
while it serves traffic through the demo upstream, and every PromQL expression of the dashboard
returns a real number from it. Plus fast checks of the deploy/ files that need no Prometheus."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.cli import DEMO_MEMBER_KEY
from gateway.config import load_settings
from gateway.metrics import Metrics
from tests.conftest import free_port, running

DEPLOY = Path(__file__).parents[1] / "deploy"
DASHBOARD = json.loads((DEPLOY / "grafana" / "dashboards" / "nanogpt-gateway.json").read_text())
# What Grafana puts in place of its own variables, and of "All" for the dashboard's.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "$member": ".*",
    "$model": ".*",
}
LABEL_VALUES = re.compile(r"label_values\((\w+),\s*(\w+)\)")
# Panels whose number the demo upstream cannot move; they must still be numbers, not NaN.
MAY_BE_ZERO = {
    ("Error rate", "A"),  # 5xx: the in-process stand-in never fails
    ("In-flight requests", "A"),  # nothing is in flight when Prometheus is asked
    ("Catalog", "B"),  # failed refreshes: the one catalog fetch succeeds
    ("Reserved in flight", "A"),  # nothing is in flight when Prometheus is asked
}


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def targets() -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) for every query of every panel, rows' panels included."""
    return [
        (p["title"], t["refId"], t["expr"])
        for p in panels(DASHBOARD["panels"])
        for t in p.get("targets", [])
    ]


def variable_queries() -> list[tuple[str, str, str]]:
    """(variable, metric, label) for every `label_values(metric, label)` template variable."""
    found = []
    for variable in DASHBOARD["templating"]["list"]:
        match = LABEL_VALUES.fullmatch(variable["query"]["query"])
        assert match, f"${variable['name']}: not a label_values() query"
        found.append((variable["name"], match[1], match[2]))
    return found


def promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
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
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "prometheus", panel["title"]
            used = set(re.findall(r"\bnanogpt_[a-z_]+", target["expr"]))
            assert used and used <= names, f"{panel['title']}: {used - names}"
    for variable, metric, _ in variable_queries():
        assert metric in names, f"${variable}: {metric}"


def test_every_variable_an_expression_uses_is_defined() -> None:
    defined = {v["name"] for v in DASHBOARD["templating"]["list"]}
    assert defined == {"member", "model"}
    for title, _, expr in targets():
        assert "$" not in promql(expr), f"{title}: unknown Grafana variable in {expr}"
    for variable in DASHBOARD["templating"]["list"]:
        assert variable["includeAll"] and variable["allValue"] == ".*", variable["name"]


def test_the_layout_fits_the_grid_without_overlaps() -> None:
    taken: dict[tuple[int, int], str] = {}
    ids = [p["id"] for p in panels(DASHBOARD["panels"])]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels(DASHBOARD["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_the_compose_stack_files_agree() -> None:
    compose = (DEPLOY / "docker-compose.yml").read_text()
    prometheus_yml = (DEPLOY / "prometheus.yml").read_text()
    datasource = (
        DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
    ).read_text()
    assert "uid: prometheus" in datasource  # the uid every panel names
    scrape = re.search(r"scrape_interval: (\w+)", prometheus_yml)
    assert scrape and f"timeInterval: {scrape[1]}" in datasource
    assert 'targets: ["gateway:9464"]' in prometheus_yml
    assert '"--port", "8080"' in compose and "ledger:/var/lib/nanogpt-gateway" in compose

    # The sample config loads with exactly the keys compose passes, and keeps its ledger on the
    # volume; no key of any kind is written in it.
    config = (DEPLOY / "gateway.toml").read_text()
    key_envs = re.findall(r'key_env = "(\w+)"', config)
    assert key_envs and "key_sha256" not in config
    environ = {"NANOGPT_API_KEY": "sk-team"}
    for name in key_envs:
        assert f"{name}: ${{{name}:?" in compose, f"compose does not pass {name}"
        environ[name] = f"sk-{name.lower()}"
    settings = load_settings(DEPLOY / "gateway.toml", environ)
    assert settings.metering.ledger_path == "/var/lib/nanogpt-gateway/usage.db"
    assert settings.metering.metrics_port == 9464  # what Prometheus scrapes
    assert len(settings.members) == len(key_envs)


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


def traffic(base: str) -> int:
    """Requests of every kind the dashboard shows: plain and streamed chats (a reasoning model
    too), embeddings, a listing, an unknown model, a bad key, a request NanoGPT refuses
    (an upstream 4xx, unmetered) and one a limit refuses. Returns how many requests were
    made."""
    member = {"authorization": f"Bearer {DEMO_MEMBER_KEY}"}
    messages = [{"role": "user", "content": "Hello"}]
    expected: list[tuple[str, str, dict[str, Any], int]] = [
        ("POST", "/v1/chat/completions", {"model": model, "messages": messages, "stream": s}, 200)
        for model in ("deepseek/deepseek-v3.2", "moonshotai/kimi-k2.5:thinking")
        for s in (False, True)
    ]
    expected += [
        ("POST", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "hello"}, 200),
        ("GET", "/v1/models", {}, 200),
        ("POST", "/v1/chat/completions", {"model": "no/such-model", "messages": messages}, 404),
        ("POST", "/v1/chat/completions", {**expected[0][2], "max_tokens": 0}, 400),
        # 100 choices of up to 20,000 tokens: more than tokens_per_minute, refused by a limit
        ("POST", "/v1/chat/completions", {**expected[0][2], "max_tokens": 20000, "n": 100}, 429),
    ]
    with httpx.Client(base_url=base, headers=member, timeout=30) as http:
        for method, path, body, status in expected:
            response = http.request(method, path, json=body or None)
            assert response.status_code == status, (path, body, response.text)
        bad_key = {"authorization": "Bearer sk-nobody"}
        assert http.get("/v1/models", headers=bad_key).status_code == 401
    return len(expected) + 1


class Prometheus:
    """A running Prometheus, asked through its HTTP API."""

    def __init__(self, url: str, process: subprocess.Popen[bytes]) -> None:
        self.url, self.process = url, process

    def until(self, condition: Callable[[], bool], what: str, seconds: float = 20) -> None:
        """Poll `condition` (a readiness check, never a timed wait) until it holds."""
        deadline = time.monotonic() + seconds
        while True:
            assert self.process.poll() is None, f"prometheus exited: {self.process.returncode}"
            with contextlib.suppress(httpx.TransportError):
                if condition():
                    return
            assert time.monotonic() < deadline, f"prometheus: not {what} after {seconds}s"
            time.sleep(0.1)

    def get(self, path: str, **params: str) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(self.url + path, params=params, timeout=10).json()
        return answer

    def query(self, expr: str) -> dict[str, Any]:
        return self.get("/api/v1/query", query=expr)

    def value(self, expr: str) -> float | None:
        """The first sample of an instant query, `None` if there is none."""
        result = self.query(expr)["data"]["result"]
        return float(result[0]["value"][1]) if result else None


@contextlib.contextmanager
def prometheus(binary: str, target: str, workdir: Path) -> Iterator[Prometheus]:
    """Prometheus scraping `target` every second, on a free loopback port, until it is ready."""
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: gateway\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    with (workdir / "prometheus.log").open("w") as log:
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
        )
        server = Prometheus(f"http://127.0.0.1:{port}", process)
        try:
            server.until(lambda: httpx.get(f"{server.url}/-/ready").status_code == 200, "ready")
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def verdict(title: str, ref: str, answer: dict[str, Any]) -> str | None:
    """Why a panel's query would not show a number in Grafana, or `None` if it would."""
    if answer.get("status") != "success":
        return f"{answer.get('errorType')}: {answer.get('error')}"
    values = [float(series["value"][1]) for series in answer["data"]["result"]]
    if not values:
        return "no data"
    if not all(math.isfinite(v) for v in values):
        return f"not a number: {values}"
    if (title, ref) not in MAY_BE_ZERO and not any(v > 0 for v in values):
        return f"only zeros after traffic that should move it: {values}"
    return None


def test_every_dashboard_query_returns_a_number_from_a_real_scrape(
    prometheus_binary: str, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.toml"  # budgets, so the Limits row has series to show
    config.write_text(
        "[limits]\nbudget_usd_daily = 50\nbudget_usd_monthly = 500\n"
        "team_budget_usd_daily = 100\nteam_budget_usd_monthly = 1000\n"
        "tokens_per_minute = 1000000\n"
    )
    with running(["serve", "--demo", "--config", str(config)], "/readyz") as (base, _, _):
        traffic(base)  # every labelled series exists from Prometheus's first scrape on
        with prometheus(prometheus_binary, base.removeprefix("http://"), tmp_path) as server:
            total = "sum(nanogpt_gateway_requests_total)"
            server.until(lambda: server.value('up{job="gateway"}') == 1, "scraping the gateway")
            server.until(lambda: server.value(total) is not None, "holding the first round")
            before = server.value(total) or 0
            # A second round between scrapes: rate() and increase() see it, so every panel
            # shows a real number (after one round only, rates are 0 and quantiles NaN).
            made = traffic(base)
            server.until(lambda: (server.value(total) or 0) >= before + made, "holding round two")

            failures = []
            for variable, metric, label in variable_queries():
                answer = server.get(f"/api/v1/label/{label}/values", **{"match[]": metric})
                if answer.get("status") != "success" or not answer["data"]:
                    failures.append(f"${variable}: label_values({metric}, {label}): {answer}")
            for title, ref, expr in targets():
                problem = verdict(title, ref, server.query(promql(expr)))
                if problem:
                    failures.append(f"{title} [{ref}]: {expr}\n    -> {problem}")
    assert not failures, "\n".join(failures)
