"""deploy/: the compose file runs every service with health checks and the right start order, the image
runs `keel`, and every metric the dashboard and the alerts query is one the code defines."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from keel import services

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
JOBS = {"migrate", "topics", "buckets"}  # one-shot containers: others wait for them to exit 0
INFRA = {"postgres", "kafka", "redis", "minio", "prometheus", "grafana", "otel-collector", "jaeger"}


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _keel_containers() -> dict[str, dict[str, Any]]:
    """Containers built from the Keel image that run a service (not the migration job)."""
    return {name: svc for name, svc in _services().items() if "build" in svc and name not in JOBS}


def _argv(svc: dict[str, Any]) -> list[str]:
    command = svc.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


# --- the compose file ------------------------------------------------------------------------------


def test_every_service_has_a_container_that_runs_it() -> None:
    running: dict[str, list[str]] = {}
    for name, svc in _keel_containers().items():
        argv = _argv(svc)
        assert argv[0] in {"serve", "worker"}, f"{name}: {argv}"
        running.setdefault(argv[1], []).append(name)
    assert set(running) == set(services.NAMES)
    # Each service's own container carries its name; extra worker containers are optional.
    for service in services.NAMES:
        assert service in running[service]


def test_keel_containers_listen_where_health_checks_and_prometheus_look() -> None:
    for name, svc in _keel_containers().items():
        argv = _argv(svc)
        assert argv[argv.index("--host") + 1] == "0.0.0.0", name
        assert argv[argv.index("--port") + 1] == "8000", name
        assert "8000/healthz" in " ".join(svc["healthcheck"]["test"]), name


def test_every_long_running_container_has_a_health_check_and_jobs_say_they_have_none() -> None:
    for name, svc in _services().items():
        check = svc.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        if name in JOBS:
            assert check == {"disable": True}, name
            assert svc.get("restart") == "no", name
        else:
            assert check["test"][0] in {"CMD", "CMD-SHELL"}, name
            assert {"interval", "timeout", "retries"} <= set(check), name


def test_depends_on_waits_for_jobs_to_finish_and_servers_to_be_healthy() -> None:
    all_services = _services()
    for name, svc in all_services.items():
        depends = svc.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must name conditions"
        for dep, spec in depends.items():
            assert dep in all_services, f"{name} depends on unknown {dep}"
            expected = "service_completed_successfully" if dep in JOBS else "service_healthy"
            assert spec["condition"] == expected, f"{name} → {dep}"


def test_database_users_wait_for_the_migration_and_every_keel_container_for_the_topics() -> None:
    db_users = {name for name in services.NAMES if services.load(name).uses_database}
    assert {"tickets", "orders", "videos", "orchestrator"} <= db_users
    for name, svc in _keel_containers().items():
        service = _argv(svc)[1]
        depends = svc["depends_on"]
        assert "topics" in depends and "kafka" in depends, name
        if service in db_users:
            assert {"migrate", "postgres"} <= set(depends), name
        if services.load(service).uses_storage or service in {"videos", "tts", "delivery-prefetch"}:
            assert "buckets" in depends, name
    migrate = _services()["migrate"]
    assert _argv(migrate) == ["migrate"]
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}


def test_keel_containers_point_at_the_compose_infrastructure() -> None:
    for name, svc in {**_keel_containers(), "migrate": _services()["migrate"]}.items():
        env = svc["environment"]
        assert env["POSTGRES_DSN"].startswith("postgresql://") and "@postgres:5432/" in env["POSTGRES_DSN"]
        assert env["REDIS_URL"] == "redis://redis:6379/0", name
        assert env["KAFKA_BROKERS"] == "kafka:9092", name
        assert env["S3_ENDPOINT_URL"] == "http://minio:9000", name
        assert env["S3_BUCKET"] == "keel", name
        # The signing key comes from the operator's environment; no default is baked in.
        assert env["SECRET"].startswith("${SECRET:?"), name
        # No proxy is trusted unless the operator names one: clients cannot pick their own address.
        assert env["TRUSTED_PROXIES"] == "${TRUSTED_PROXIES:-}", name


def test_topic_job_creates_every_topic_in_the_event_catalogue() -> None:
    script = " ".join(_services()["topics"]["command"])
    loops = re.findall(r"for topic in (.*?); do", script, re.S)  # event topics, then DLQs (retention)
    created = {t for loop in loops for t in loop.replace("\\", " ").split()}
    catalogue = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())
    assert created == {ch["address"] for ch in catalogue["channels"].values()}


def test_redis_evicts_only_keys_with_a_ttl() -> None:
    argv = _services()["redis"]["command"]
    assert argv[argv.index("--maxmemory-policy") + 1] == "volatile-lru"
    assert "--maxmemory" in argv
    assert _services()["redis"]["image"].startswith("redis:7")
    assert _services()["postgres"]["image"].startswith("postgres:16")


def _compose_validator() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    pytest.fail(
        "no compose binary to validate deploy/docker-compose.yml: install the docker compose plugin "
        "or `apt-get install docker-compose` (.ci/run does it)"
    )


def _config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_compose_validator(), "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        cwd=DEPLOY,
        timeout=60,
    )


def test_compose_config_accepts_the_file() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SECRET"} | {"SECRET": "test-secret"}
    result = _config(env)
    assert result.returncode == 0, result.stderr


def test_compose_config_refuses_to_start_without_a_secret() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SECRET"}
    result = _config(env)
    assert result.returncode != 0
    assert "SECRET" in result.stderr


# --- the image -----------------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_runs_keel_as_a_non_root_user_with_a_health_check() -> None:
    instructions = _instructions(DEPLOY / "Dockerfile")
    final_stage = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM") :]
    base = final_stage[0][1]
    assert re.fullmatch(r"python:3\.1[12]-slim", base)
    args = {k: v for k, v in final_stage}
    assert json.loads(args["ENTRYPOINT"]) == ["keel"]
    assert json.loads(args["CMD"])[0] in {"up", "serve", "worker"}
    assert args["USER"].split(":")[0] not in {"root", "0"}
    assert "/healthz" in args["HEALTHCHECK"]
    build = " ".join(v for k, v in instructions if k == "RUN")
    assert "pip install" in build and "uv" in build
    assert "uv sync --locked --no-dev" in build


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_build_context() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", ".env", ".keel"} <= ignored
    copied = [v for k, v in _instructions(DEPLOY / "Dockerfile") if k == "COPY" and "--from" not in v]
    for line in copied:
        for source in line.split()[:-1]:
            assert source not in ignored, f"{source} is copied but ignored"


# --- metrics: dashboard, alerts, scrape targets ------------------------------------------------------

_DEFINITION = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"")
# Series Prometheus makes itself, not the services.
_SYNTHETIC = {"up"}
_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
}


def _exposed_metric_names() -> set[str]:
    """Every series name the code's prometheus_client definitions expose."""
    names: set[str] = set()
    for path in (ROOT / "src" / "keel").rglob("*.py"):
        for kind, name in _DEFINITION.findall(path.read_text(encoding="utf-8")):
            if kind == "Counter":
                base = name.removesuffix("_total")
                names |= {f"{base}_total", f"{base}_created"}
            elif kind in {"Histogram", "Summary"}:
                names |= {name, f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
            else:
                names.add(name)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    text = re.sub(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'", "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("("):  # a function
            continue
        if match.group() in _PROMQL_WORDS or match.group().startswith("$"):
            continue
        if match.start() > 0 and text[match.start() - 1] == "$":
            continue
        names.add(match.group())
    return names


def test_metric_name_extraction_reads_selectors_not_functions_or_labels() -> None:
    expr = 'histogram_quantile(0.99, sum by (le, job) (rate(http_request_duration_seconds_bucket{job=~"$job"}[$__rate_interval]))) / on(job) up > 0.5'
    assert metric_names(expr) == {"http_request_duration_seconds_bucket", "up"}


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "keel.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def _alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [r for g in rules["groups"] for r in g["rules"]]


def test_every_metric_on_the_dashboard_is_defined_in_the_code() -> None:
    defined = _exposed_metric_names() | _SYNTHETIC
    used = set().union(*(metric_names(e) for e in _dashboard_exprs()))
    assert used - defined == set()
    for signal in (
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "kafka_consumer_lag",
        "outbox_lag_seconds",
        "dlq_messages_total",
        "route_to_first_audio_seconds_bucket",
        "cache_requests_total",
    ):
        assert signal in used, f"the dashboard does not show {signal}"


def test_every_metric_in_the_alerts_is_defined_in_the_code() -> None:
    defined = _exposed_metric_names() | _SYNTHETIC
    rules = _alert_rules()
    used = set().union(*(metric_names(r["expr"]) for r in rules))
    assert used - defined == set()
    assert {"outbox_lag_seconds", "kafka_consumer_lag", "dlq_messages_total", "http_requests_total"} <= used
    five_xx = [r for r in rules if 'status=~"5.."' in r["expr"]]
    assert five_xx and all("/" in r["expr"] for r in five_xx), "the 5xx alert must be a ratio"
    for rule in rules:
        assert rule["alert"] and rule["annotations"]["summary"], rule


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "no promtool to check deploy/prometheus/alerts.yml: `apt-get install prometheus` (.ci/run does it)"
        )
    return found


@pytest.mark.parametrize(
    "command",
    [["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]],
    ids=["valid rules", "each alert fires on its series and not below its threshold"],
)
def test_promtool_accepts_the_alerts_and_their_unit_tests(command: list[str]) -> None:
    result = subprocess.run(
        [_promtool(), *command], capture_output=True, text=True, cwd=DEPLOY / "prometheus", timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_every_keel_container_and_loads_the_alerts() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert "/etc/prometheus/alerts.yml" in config["rule_files"]
    targets = {
        target.split(":")[0]
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert set(_keel_containers()) <= targets
    mounts = " ".join(_services()["prometheus"]["volumes"])
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml" in mounts


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (source,) = datasource["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards" / "keel.yml").read_text())["providers"][0]
    mounts = dict(
        v.rsplit(":", 1)[0].split(":") for v in _services()["grafana"]["volumes"] if v.startswith("./")
    )
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "keel.json").read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert uids == {source["uid"]}


# --- traces: collector, backend, the dashboard's link ------------------------------------------------


def test_compose_runs_every_infrastructure_container() -> None:
    assert set(_services()) >= INFRA


def test_traces_go_through_the_collector_to_jaeger_and_the_dashboard_links_there() -> None:
    collector = _services()["otel-collector"]
    mounts = dict(v.rsplit(":", 1)[0].split(":") for v in collector["volumes"])
    config_path = DEPLOY / "otel" / "collector.yml"
    assert f"--config={mounts['./otel/collector.yml']}" in collector["command"]
    config = yaml.safe_load(config_path.read_text())
    (pipeline,) = config["service"]["pipelines"].values()
    assert pipeline["receivers"] == ["otlp"] and "batch" in pipeline["processors"]
    (exporter,) = pipeline["exporters"]
    assert config["exporters"][exporter]["endpoint"] == "jaeger:4317"
    assert {"grpc", "http"} <= set(config["receivers"]["otlp"]["protocols"])
    assert collector["depends_on"] == {"jaeger": {"condition": "service_healthy"}}
    assert _services()["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    for name, svc in _keel_containers().items():
        # OTLP/HTTP, as keel.core.telemetry exports; the operator may point it elsewhere or empty it.
        assert "http://otel-collector:4318" in svc["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"], name
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "keel.json").read_text())
    assert any(link["url"].startswith("http://localhost:16686") for link in dashboard["links"])
    published = {p.split(":")[0] for p in _services()["jaeger"]["ports"]}
    assert "16686" in published


def test_the_dashboard_shows_the_saturation_figures() -> None:
    used = set().union(*(metric_names(e) for e in _dashboard_exprs()))
    assert {
        "http_requests_in_flight",
        "db_pool_connections",
        "db_pool_waiting",
        "redis_pool_connections",
        "event_loop_lag_seconds_bucket",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    } <= used
