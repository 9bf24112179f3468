"""A setting that does not validate reads as one line per setting, naming the variable, without the
value (it may be a secret)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from keel.core.settings import Settings, invalid_settings


def test_each_bad_setting_is_one_line_naming_its_variable_and_not_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DB_POOL_SIZE", "lots")
    monkeypatch.setenv("KAFKA_PARTITIONS", "0")
    monkeypatch.setenv("PREVIOUS_SECRETS", "no-colon-s3cr3t")
    with pytest.raises(ValidationError) as failure:
        Settings(_env_file=None)
    lines = invalid_settings(failure.value)
    assert len(lines) == 3, lines
    assert any(line.startswith("invalid setting DB_POOL_SIZE: ") for line in lines), lines
    assert any(line.startswith("invalid setting KAFKA_PARTITIONS: ") for line in lines), lines
    assert any("PREVIOUS_SECRETS is a comma-separated list of kid:secret" in line for line in lines), lines
    assert all("in the environment or .env" in line and "\n" not in line for line in lines)
    assert not any("lots" in line or "s3cr3t" in line for line in lines)


@pytest.mark.parametrize("endpoint", ["collector:4318", "grpc://collector:4317", "http://"])
def test_an_otlp_endpoint_that_is_not_an_http_url_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    with pytest.raises(ValidationError) as failure:
        Settings(_env_file=None)
    (line,) = invalid_settings(failure.value)
    assert line.startswith("invalid setting OTEL_EXPORTER_OTLP_ENDPOINT: ") and "http://" in line, line
