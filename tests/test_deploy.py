"""The deployment files for several replicas work as shipped, checked without Docker, a cluster
or the network: the scale-out compose stack (docker-compose.scale.yml with nginx, Redis,
PostgreSQL, Prometheus and Grafana) and the Kubernetes manifests (deploy/kubernetes).

Every YAML file passes yamllint, every manifest passes Kubernetes 1.30's schemas (strict: an
unknown or misspelt field fails), the configs load with the gateway's own loader, and what a
user would trip over is asserted: probes on the right paths and port, pods that outlive the
shutdown grace, nginx that streams, Prometheus that finds every replica, a dashboard that adds
the replicas up."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from gateway.cli import _parser as cli_parser
from gateway.config import Settings, load_settings
from gateway.config.schema import UpstreamSettings

ROOT = Path(__file__).parents[1]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.30.0"
# Manifests kept out of kustomization.yaml on purpose: the Secret's placeholders must never
# overwrite the real Secret on `kubectl apply -k`, and a ServiceMonitor needs the Prometheus
# Operator's CRD (which the standard schemas do not know either).
NOT_APPLIED = {"secret.example.yaml", "servicemonitor.yaml"}
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
YAMLLINT = [sys.executable, "-m", "yamllint", "--strict", "-c", str(ROOT / ".yamllint")]


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml"))


def documents(path: Path) -> list[dict[str, Any]]:
    loaded = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert all(isinstance(doc, dict) for doc in loaded), path
    return loaded


def manifests() -> list[tuple[str, dict[str, Any]]]:
    """(file name, resource) for every Kubernetes resource under deploy/kubernetes."""
    return [
        (path.name, doc)
        for path in sorted(KUBERNETES.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in documents(path)
    ]


def resource(kind: str, component: str | None = None) -> dict[str, Any]:
    found = [
        doc
        for _, doc in manifests()
        if doc["kind"] == kind
        and component in (None, doc["metadata"]["labels"].get("app.kubernetes.io/component"))
    ]
    assert len(found) == 1, f"{kind} ({component}): {len(found)} found"
    return found[0]


def container(kind: str) -> dict[str, Any]:
    """The one container of the Deployment's or the Job's pods."""
    (only,) = resource(kind)["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = only
    return found


def one(items: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    found = [item for item in items if all(item.get(k) == v for k, v in match.items())]
    assert len(found) == 1, f"{match}: {found}"
    return found[0]


def configmap_toml() -> str:
    text: str = resource("ConfigMap")["data"]["gateway.toml"]
    return text


def secret_env() -> dict[str, str]:
    """The example Secret's keys, with its placeholder values: the pods' environment."""
    data: dict[str, str] = resource("Secret")["stringData"]
    return data


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.scale.yml").read_text())
    return loaded


def interpolated(environment: Mapping[str, str]) -> dict[str, str]:
    """A service's environment as compose would pass it, each `${VAR:?...}` given a value."""
    return {
        name: re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: f"test-{m[1].lower()}", value)
        for name, value in environment.items()
    }


def cli_port(args: list[str]) -> int:
    return int(args[args.index("--port") + 1])


def cli_config(args: list[str]) -> str:
    return args[args.index("--config") + 1]


# --- the configs the replicas run with ------------------------------------------------------
# These load with the gateway's own loader: they need `[database]` and `[state]`, which the
# loader knows from the shared-state work on (issue 13).


def kubernetes_settings(tmp_path: Path) -> Settings:
    config = tmp_path / "gateway.toml"
    config.write_text(configmap_toml())
    return load_settings(config, secret_env())


def compose_settings() -> Settings:
    env = interpolated(compose()["services"]["gateway"]["environment"])
    return load_settings(DEPLOY / "gateway.scale.toml", env)


def test_the_kubernetes_config_loads_with_exactly_the_secrets_keys(tmp_path: Path) -> None:
    """The ConfigMap is a valid config, and the example Secret holds every variable it names:
    a pod given that Secret starts (with real values in it)."""
    settings = kubernetes_settings(tmp_path)
    gateway = container("Deployment")
    assert settings.server.port == cli_port(gateway["args"])
    metrics = one(gateway["ports"], name="metrics")["containerPort"]
    assert settings.metering.metrics_port == metrics  # where Prometheus scrapes
    annotations = resource("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(metrics)
    assert len(settings.members) >= 1


def test_the_compose_config_loads_with_the_environment_compose_passes() -> None:
    settings = compose_settings()
    services = compose()["services"]
    assert settings.server.port == cli_port(services["gateway"]["command"])
    # The migrate service reads the same file with the same secrets.
    assert services["migrate"]["volumes"] == services["gateway"]["volumes"]
    assert services["migrate"]["environment"] == services["gateway"]["environment"]


def test_kubernetes_pods_outlive_the_gateways_shutdown_grace(tmp_path: Path) -> None:
    """SIGTERM comes after the preStop pause; the kubelet's kill after the termination grace.
    In between, the gateway needs its whole shutdown_grace_seconds for streams in flight."""
    grace = kubernetes_settings(tmp_path).server.shutdown_grace_seconds
    pod = resource("Deployment")["spec"]["template"]["spec"]
    pre_stop = container("Deployment")["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + grace


def test_compose_lets_the_replicas_drain_before_killing_them() -> None:
    grace = compose_settings().server.shutdown_grace_seconds
    stop = compose()["services"]["gateway"]["stop_grace_period"]
    assert re.fullmatch(r"\d+s", stop) and int(stop[:-1]) > grace


def test_kubernetes_pods_migrate_before_they_serve() -> None:
    """A pod started before the migrate Job finished would crash-loop on an unmigrated
    database: its init container runs `migrate` first (safe from every pod at once), with the
    gateway's own config, secrets and locked-down security context."""
    pod = resource("Deployment")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    gateway = container("Deployment")
    assert init["args"][0] == "migrate"
    assert (init["image"], init["envFrom"]) == (gateway["image"], gateway["envFrom"])
    assert init["securityContext"] == gateway["securityContext"]
    config = one(gateway["volumeMounts"], name="config")
    assert one(init["volumeMounts"], name="config") == config


@pytest.mark.parametrize(
    ("where", "args"),
    [
        ("compose gateway", compose()["services"]["gateway"]["command"]),
        ("compose migrate", compose()["services"]["migrate"]["command"]),
        ("Deployment", container("Deployment")["args"]),
        ("migrate Job", container("Job")["args"]),
        (
            "Deployment's init",
            resource("Deployment")["spec"]["template"]["spec"]["initContainers"][0]["args"],
        ),
    ],
)
def test_every_command_the_deploy_files_run_is_one_the_cli_accepts(
    where: str, args: list[str]
) -> None:
    """A misspelt subcommand or option would only show as a crash-looping container."""
    try:
        cli_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"{where}: `nanogpt-gateway {shlex.join(args)}` is refused by the CLI")
    assert cli_config(args) == "/etc/nanogpt-gateway/gateway.toml"


# --- YAML and Kubernetes schemas --------------------------------------------------------------


def test_every_yaml_file_under_deploy_passes_yamllint() -> None:
    files = yaml_files()
    assert {p.suffix for p in files} == {".yml", ".yaml"} and len(files) >= 10
    result = subprocess.run([*YAMLLINT, *map(str, files)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_yamllint_config_catches_yaml_11_booleans_and_bad_indentation(tmp_path: Path) -> None:
    """The lint is not a rubber stamp: `yes` (a bool to YAML 1.1, a string to a reader) and a
    mis-indented list fail."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("enabled: yes\nitems:\n   - a\n")
    result = subprocess.run([*YAMLLINT, str(bad)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "(truthy)" in result.stdout and "(indentation)" in result.stdout


@pytest.mark.parametrize(
    ("name", "manifest"),
    [m for m in manifests() if (m[1]["apiVersion"], m[1]["kind"]) not in CRD_KINDS],
    ids=lambda value: value if isinstance(value, str) else value["kind"],
)
def test_every_manifest_is_valid_for_kubernetes_1_30(name: str, manifest: dict[str, Any]) -> None:
    """Against the schemas kubernetes-validate ships (no network), strictly: a field the API
    server would drop or reject (a typo, a wrong type, a wrong place) fails."""
    try:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(part) for part in exc.path)
        pytest.fail(f"{name}: {manifest['kind']}: {where}: {exc.message}")


def test_kubectl_apply_k_applies_every_manifest_but_the_secret_example_and_the_crd() -> None:
    (kustomization,) = documents(KUBERNETES / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    shipped = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == shipped - NOT_APPLIED
    kept_out = {
        (doc["apiVersion"], doc["kind"]) for name, doc in manifests() if name in NOT_APPLIED
    }
    assert kept_out == {("v1", "Secret"), *CRD_KINDS}
    # The image the kustomization sets is the one the Deployment and the Job run.
    (image,) = kustomization["images"]
    for kind in ("Deployment", "Job"):
        containers = resource(kind)["spec"]["template"]["spec"]["containers"]
        assert {c["image"] for c in containers} == {image["name"]}, kind
    # Everything lands in the Namespace it ships.
    assert kustomization["namespace"] == resource("Namespace")["metadata"]["name"]


def test_the_secret_example_holds_only_marked_placeholders() -> None:
    secret = resource("Secret")
    assert "data" not in secret  # base64 would hide a real value from review
    values = secret["stringData"]
    assert values and all("REPLACE-ME" in value for value in values.values())
    head = (KUBERNETES / "secret.example.yaml").read_text().splitlines()[0]
    assert "PLACEHOLDER" in head
    # The pods get the Secret as their environment.
    for kind in ("Deployment", "Job"):
        refs = [e["secretRef"]["name"] for e in container(kind)["envFrom"]]
        assert refs == [secret["metadata"]["name"]], kind


# --- the Deployment as the cluster runs it ----------------------------------------------------


def test_probes_ask_readyz_and_healthz_on_the_port_the_gateway_listens_on() -> None:
    deployment = resource("Deployment")
    gateway = container("Deployment")
    port = cli_port(gateway["args"])
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports["http"] == port

    def target(probe: str) -> tuple[str, int]:
        get = gateway[probe]["httpGet"]
        return get["path"], ports.get(get["port"], get["port"])

    assert target("readinessProbe") == ("/readyz", port)
    assert target("livenessProbe") == ("/healthz", port)
    assert target("startupProbe") == ("/healthz", port)

    # The Service, the autoscaler and the disruption budget all point at these pods.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = resource("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert one(service["spec"]["ports"], name="http")["targetPort"] in ("http", port)
    assert (
        resource("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    )
    hpa = resource("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]
    }  # fmt: skip
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] >= hpa["minReplicas"]
    assert "replicas" not in deployment["spec"]  # the autoscaler owns it; apply would reset it
    # The migrate Job's pods are not gateway pods: no traffic, no disruption budget.
    job_labels = resource("Job")["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= job_labels.items()


def dockerfile_uid_and_workdir() -> tuple[int, str]:
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid = re.search(r"useradd .*--uid (\d+)", dockerfile)
    workdirs = re.findall(r"^WORKDIR (\S+)", dockerfile, re.MULTILINE)
    assert uid and workdirs
    return int(uid[1]), workdirs[-1]


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_pods_run_unprivileged_on_a_read_only_root(kind: str) -> None:
    """The restricted pod security standard (the Namespace enforces it): the image's user,
    nothing to escalate to, no capabilities, and writes only where an emptyDir is mounted."""
    uid, workdir = dockerfile_uid_and_workdir()
    pod = resource(kind)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    for each in pod["containers"]:
        context = each["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == uid
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        resources = each["resources"]
        assert resources["requests"].keys() == resources["limits"].keys() == {"cpu", "memory"}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in each["volumeMounts"]}
        for writable in (workdir, "/tmp"):
            assert "emptyDir" in mounts[writable], f"{kind}: {writable} is not writable"
        config = mounts["/etc/nanogpt-gateway"]
        assert config["configMap"]["name"] == resource("ConfigMap")["metadata"]["name"]
        assert cli_config(each["args"]).startswith("/etc/nanogpt-gateway/")
    assert resource("Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == (
        "restricted"
    )


def test_the_migrate_job_runs_migrate_once_and_is_rerun_on_the_next_apply() -> None:
    job = resource("Job")
    assert container("Job")["args"][0] == "migrate"
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    assert job["spec"]["ttlSecondsAfterFinished"] > 0


def test_prometheus_scrapes_every_pod_on_its_metrics_port() -> None:
    annotations = resource("Deployment")["spec"]["template"]["metadata"]["annotations"]
    metrics = one(container("Deployment")["ports"], name="metrics")["containerPort"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(metrics)
    assert annotations["prometheus.io/path"] == "/metrics"
    # The ConfigMap serves /metrics on that port (read here without the loader).
    assert tomllib.loads(configmap_toml())["metering"]["metrics_port"] == metrics
    # The optional ServiceMonitor names a Service port that reaches it.
    (monitor,) = documents(KUBERNETES / "servicemonitor.yaml")
    service = resource("Service")
    assert monitor["spec"]["selector"]["matchLabels"] == service["metadata"]["labels"]
    port = one(service["spec"]["ports"], name=monitor["spec"]["endpoints"][0]["port"])
    assert port["targetPort"] in ("metrics", metrics)


# --- the compose stack ------------------------------------------------------------------------


def test_compose_runs_several_replicas_after_a_successful_migration() -> None:
    services = compose()["services"]
    gateway, migrate, postgres = services["gateway"], services["migrate"], services["postgres"]
    assert gateway["deploy"]["replicas"] >= 2
    assert "ports" not in gateway and "container_name" not in gateway  # replicas cannot share them
    assert gateway["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert migrate["command"][0] == "migrate" and migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert gateway["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert gateway["image"] == migrate["image"]
    assert services["nginx"]["ports"] == ["8080:8080"]  # the only way in
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]
    assert (
        "./prometheus.scale.yml:/etc/prometheus/prometheus.yml:ro"
        in services["prometheus"]["volumes"]
    )
    grafana = services["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana


def test_compose_takes_every_secret_from_the_environment() -> None:
    """No secret is written in the compose file: each comes from `${VAR:?...}` (compose refuses
    to start without it), and the env example lists each one, empty."""
    text = (DEPLOY / "docker-compose.scale.yml").read_text()
    services = compose()["services"]
    for name, value in services["gateway"]["environment"].items():
        assert re.search(r"\$\{\w+:\?", value), f"gateway {name} is not from the environment"
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert re.findall(r"\$\{(\w+)", text) == re.findall(r"\$\{(\w+):\?", text)  # no defaults
    example = (DEPLOY / "scale.env.example").read_text()
    assigned = dict(re.findall(r"^(\w+)=(.*)$", example, re.MULTILINE))
    assert set(assigned) == required and not any(assigned.values())
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    # The database URL the replicas get names the compose PostgreSQL, with its password.
    database = interpolated(services["gateway"]["environment"])["GATEWAY_DATABASE_URL"]
    postgres = interpolated(services["postgres"]["environment"])
    expected = (
        f"postgresql://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{postgres['POSTGRES_DB']}"
    )
    assert database == expected
    # Redis asks for the password the replicas send.
    redis = interpolated(services["redis"]["environment"])
    assert (
        redis["REDIS_PASSWORD"]
        == interpolated(services["gateway"]["environment"])["REDIS_PASSWORD"]
    )
    assert "--requirepass" in " ".join(services["redis"]["command"])


def nginx_directives() -> list[list[str]]:
    """nginx.conf as its directives (name and arguments), comments dropped."""
    text = re.sub(r"#[^\n]*", "", (DEPLOY / "nginx.conf").read_text())
    return [shlex.split(d) for d in re.split(r"[;{}]", text) if d.strip()]


def nginx(name: str) -> list[list[str]]:
    return [d[1:] for d in nginx_directives() if d[0] == name]


def seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)(s|m)?", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "m" else 1)


def test_nginx_streams_to_the_least_busy_replica() -> None:
    shipped = tomllib.loads((DEPLOY / "gateway.scale.toml").read_text())
    upstream = UpstreamSettings(**shipped.get("upstream", {}))
    services = compose()["services"]
    assert nginx("least_conn") == [[]]
    # Every token of a stream goes out as it comes; uploads are not held back either.
    assert nginx("proxy_buffering") == [["off"]]
    assert nginx("proxy_request_buffering") == [["off"]]
    # HTTP/1.1 with kept-alive connections to the replicas.
    assert nginx("proxy_http_version") == [["1.1"]]
    assert ["Connection", ""] in nginx("proxy_set_header")
    assert int(nginx("keepalive")[0][0]) > 0
    # The replicas by the compose service's name, on the port they listen on, re-resolved
    # through Docker's DNS so scaling is seen.
    port = cli_port(services["gateway"]["command"])
    servers = [args for args in nginx("server") if args]  # not the `server {` block
    assert servers == [[f"gateway:{port}", "resolve"]]
    assert nginx("resolver")[0][0] == "127.0.0.11"
    assert nginx("zone")  # `resolve` needs the upstream in shared memory
    (proxy_pass,) = nginx("proxy_pass")
    assert proxy_pass == ["http://gateway"]
    # Slow reasoning models: the gateway's own read timeout answers before nginx gives up.
    assert seconds(nginx("proxy_read_timeout")[0][0]) > upstream.read_timeout_seconds
    # The gateway's own 413 (JSON the SDKs understand), not nginx's HTML page.
    (size,) = nginx("client_max_body_size")
    assert int(size[0].removesuffix("m")) * 2**20 > upstream.max_body_bytes


def test_prometheus_finds_every_replica_by_dns() -> None:
    scale = yaml.safe_load((DEPLOY / "prometheus.scale.yml").read_text())
    (job,) = scale["scrape_configs"]
    assert "static_configs" not in job
    (sd,) = job["dns_sd_configs"]
    metrics_port = tomllib.loads((DEPLOY / "gateway.scale.toml").read_text())["metering"]
    assert sd["names"] == ["gateway"] and "gateway" in compose()["services"]
    assert sd["type"] == "A" and sd["port"] == metrics_port["metrics_port"]
    # Grafana's $__rate_interval assumes this scrape interval.
    datasource = (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    assert f"timeInterval: {scale['global']['scrape_interval']}" in datasource


def test_promtool_accepts_the_scale_prometheus_config() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is not installed: .ci/run installs Debian's prometheus package")
        pytest.skip("needs promtool (apt-get install prometheus)")
    result = subprocess.run(
        [promtool, "check", "config", str(DEPLOY / "prometheus.scale.yml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the dashboard with several replicas --------------------------------------------------------

AGGREGATIONS = {"sum", "min", "max", "avg", "count", "group", "topk", "bottomk", "quantile"}
# Every replica reports the same value (one NanoGPT account, one catalog, budgets from shared
# state): adding them up would multiply it by the replica count.
ALIKE_ON_EVERY_REPLICA = {
    "nanogpt_balance_usd",
    "nanogpt_balance_nano",
    "nanogpt_gateway_catalog_models",
    "nanogpt_gateway_budget_remaining_usd",
}
PROMQL_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\{[^}]*\}|\[[^\]]*\]|[A-Za-z_:][\w:]*|\S')


@dataclasses.dataclass(frozen=True)
class Aggregation:
    op: str
    by: frozenset[str] | None  # None: over every label; `without` is refused below


def enclosing_aggregations(expr: str) -> Iterator[tuple[str, list[Aggregation]]]:
    """For each metric a PromQL expression reads: the aggregations around it, innermost
    first."""
    tokens = PROMQL_TOKEN.findall(expr)
    stack: list[Aggregation | None] = []  # one per open parenthesis
    pending: Aggregation | None = None
    i = 0
    while i < len(tokens):
        token, following = tokens[i], tokens[i + 1] if i + 1 < len(tokens) else ""
        if token in AGGREGATIONS and following in ("(", "by", "without"):
            by = None
            if following != "(":
                assert following == "by", f"`{token} without`: say which labels stay: {expr}"
                close = tokens.index(")", i)
                by = frozenset(t for t in tokens[i + 3 : close] if t != ",")
                i = close
            pending = Aggregation(token, by)
        elif token == "(":
            stack.append(pending)
            pending = None
        elif token == ")":
            stack.pop()
            assert following not in ("by", "without"), f"put `by` before the argument: {expr}"
        elif token.startswith("nanogpt_") and following != "(":
            yield token, [a for a in reversed(stack) if a is not None]
        i += 1


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((DEPLOY / "grafana/dashboards/nanogpt-gateway.json").read_text())

    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    return [
        (panel["title"], target["expr"])
        for panel in walk(dashboard["panels"])
        for target in panel.get("targets", [])
    ]


def replica_problem(expr: str) -> str | None:
    """Why a panel's query would not add several replicas up right, or `None`."""
    for metric, aggregations in enclosing_aggregations(expr):
        if not aggregations:
            return f"{metric} is not aggregated: one line per replica"
        innermost = aggregations[0]
        if innermost.by is not None and innermost.by & {"instance", "pod"}:
            return f"{innermost.op} by ({', '.join(sorted(innermost.by))}): one line per replica"
        expected = {"max", "min"} if metric in ALIKE_ON_EVERY_REPLICA else {"sum"}
        if innermost.op not in expected:
            return f"{innermost.op} over {metric}: want {' or '.join(sorted(expected))}"
    return None


def test_the_dashboard_adds_the_replicas_up() -> None:
    """Each replica exports its own series (instance label): a panel that does not aggregate
    them shows one line per replica, or one replica's share. Counters and per-replica gauges
    (in flight, reserved) are summed; what every replica reports alike takes max or min."""
    queries = dashboard_queries()
    assert len(queries) >= 20 and all(list(enclosing_aggregations(e)) for _, e in queries)
    problems = [
        f"{title}: {expr}\n    -> {p}" for title, expr in queries if (p := replica_problem(expr))
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("rate(nanogpt_gateway_requests_total[1m])", "not aggregated"),
        ("sum by (instance) (rate(nanogpt_gateway_requests_total[1m]))", "by (instance)"),
        ("sum(nanogpt_balance_usd)", "sum over nanogpt_balance_usd: want max or min"),
        ("max(rate(nanogpt_gateway_cost_usd_total[1d])) * 86400", "want sum"),
        ("sum(nanogpt_gateway_inflight_requests) / max(nanogpt_gateway_reserved_usd)", "want sum"),
    ],
)
def test_the_replica_check_catches_per_replica_panels(expr: str, problem: str) -> None:
    """The check above is not vacuous: each of these would mislead with three replicas."""
    found = replica_problem(expr)
    assert found is not None and problem in found
