"""schemathesis against every HTTP service's exported OpenAPI (api/openapi/*.yaml), the app served
as `keel serve` serves it on 127.0.0.1: no 5xx, and every response matches its declared schema."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks
from schemathesis.core.failures import FailureGroup

from keel import services
from keel.core.runtime import build_app
from keel.core.settings import Settings
from tests.support.servers import idempotent_producers
from tests.support.serving import served

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("KEEL_SCHEMATHESIS_EXAMPLES", "0") or 0) or 15 * max(
    1, int(os.environ.get("KEEL_CHAOS_SCALE", "1") or 1)
)
SERVICES = {
    "tickets": "ticket-service.yaml",
    "orders": "order-service.yaml",
    "videos": "video-service.yaml",
    "orchestrator": "orchestrator.yaml",
    "delivery-prefetch": "delivery-prefetch.yaml",
}
USER = {"X-User-Id": "schemathesis-user"}
# CI replays the same cases on every run (a red build names a real regression, not a lucky draw);
# KEEL_SCHEMATHESIS_RANDOM=1 explores new ones.
DERANDOMIZE = not os.environ.get("KEEL_SCHEMATHESIS_RANDOM")


@contextmanager
def served_service(name: str, values: dict[str, Any]) -> Iterator[str]:
    """The service as `keel serve` serves it, in a thread of its own (its own event loop and lifespan)."""
    settings = Settings.model_validate(values)
    with served(build_app([services.load(name)], settings), settings, start_within_s=30) as base:
        yield base


def fuzz_operation(operation: Any, mode: GenerationMode, base_url: str, failures: list[str]) -> int:
    """`EXAMPLES` generated cases of one operation (valid or invalid input); appends each failure."""
    cases = 0

    @settings(
        max_examples=EXAMPLES,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        derandomize=DERANDOMIZE,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        nonlocal cases
        cases += 1
        response = case.call(base_url=base_url, headers=USER, timeout=10)
        try:
            case.validate_response(
                response, checks=[checks.not_a_server_error, checks.response_schema_conformance]
            )
        except FailureGroup as exc:  # collect every failure, not only the first
            failures.append(f"{operation.label} [{mode.value}]: {response.status_code} {str(exc)[:600]}")

    try:
        run()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE  # nothing to make invalid (no parameters, no body)
    return cases


def fuzz(schema_file: Path, base_url: str) -> tuple[int, list[str]]:
    """Every operation of the schema; the number of cases and every failure."""
    schema = schemathesis.openapi.from_path(schema_file)
    failures: list[str] = []
    operations = [r.ok() for r in schema.get_all_operations()]
    cases = sum(fuzz_operation(op, mode, base_url, failures) for op in operations for mode in GenerationMode)
    return cases, failures


@pytest.mark.parametrize("name", list(SERVICES))
def test_no_server_errors_and_every_response_matches_its_schema(
    name: str, fresh_pg_dsn: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "")
    monkeypatch.setenv("TTS_MODE", "instant")
    values = {
        "postgres_dsn": fresh_pg_dsn,
        "redis_url": redis_url,
        "data_dir": tmp_path / "keel",
        "kafka_idempotence": idempotent_producers(),
    }
    with served_service(name, values) as base_url:
        cases, failures = fuzz(ROOT / "api" / "openapi" / SERVICES[name], base_url)
    print(f"\nschemathesis {name}: {cases} cases, {len(failures)} failures (5xx or schema mismatches)")
    assert not failures, "\n".join(failures[:20])
    assert cases > 0


def test_tickets_stateful_through_inferred_links_no_server_errors_and_schema_holds(
    fresh_pg_dsn: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scenarios chained through the links schemathesis infers (create → get / close / attach / list by the
    created id), one user per scenario so that each chain reaches real tickets, not 404s."""
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "")
    values = {"postgres_dsn": fresh_pg_dsn, "redis_url": redis_url, "data_dir": tmp_path / "keel"}
    schema = schemathesis.openapi.from_path(ROOT / "api" / "openapi" / SERVICES["tickets"])
    # Valid input only: a chain starts from a created ticket (201), which invalid bodies never reach;
    # invalid input is the stateless test's job.
    schema.config.generation.update(modes=[GenerationMode.POSITIVE])
    stats = {"scenarios": 0, "calls": 0, "linked": 0, "linked_2xx": 0}
    failures: list[str] = []

    with served_service("tickets", {**values, "kafka_idempotence": idempotent_producers()}) as base_url:

        class Tickets(schema.as_state_machine()):  # type: ignore[misc]
            def setup(self) -> None:
                stats["scenarios"] += 1
                self.user = {"X-User-Id": f"stateful-{stats['scenarios']}"}

            def step(self, input: Any) -> Any:
                output = super().step(input)
                stats["calls"] += 1
                if input.transition is not None and input.is_applied:
                    stats["linked"] += 1
                    stats["linked_2xx"] += 200 <= output.response.status_code < 300
                return output

            def get_call_kwargs(self, case: Any) -> dict[str, Any]:
                return {"base_url": base_url, "headers": self.user, "timeout": 10}

            def validate_response(
                self, response: Any, case: Any, additional_checks: Any = None, **kw: Any
            ) -> None:
                try:
                    case.validate_response(
                        response, checks=[checks.not_a_server_error, checks.response_schema_conformance]
                    )
                except FailureGroup as exc:
                    failures.append(f"{case.operation.label}: {response.status_code} {str(exc)[:600]}")

        Tickets.run(
            settings=settings(
                max_examples=2 * EXAMPLES,  # links are drawn among many rules: enough runs to use them
                stateful_step_count=10,
                database=None,
                deadline=None,
                derandomize=DERANDOMIZE,
                suppress_health_check=list(HealthCheck),
            )
        )
    print(
        f"\nschemathesis tickets stateful: {stats['scenarios']} scenarios, {stats['calls']} calls, "
        f"{stats['linked']} through links ({stats['linked_2xx']} of them 2xx on a created ticket), "
        f"{len(failures)} failures (5xx or schema mismatches)"
    )
    assert not failures, "\n".join(failures[:20])
    assert stats["linked_2xx"] > 0, "no chain reached a created ticket: the links do not work"
