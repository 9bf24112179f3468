"""`api/openapi/*.yaml` is the source of truth the seeds name; it must be what the code serves."""

from pathlib import Path

import pytest

from keel import services
from keel.core.openapi import path_for, render

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("service", services.available())
def test_exported_openapi_matches_the_code(service):
    exported = ROOT / path_for(service)
    assert exported.exists(), f"export it: keel openapi {service} -o {path_for(service)}"
    assert exported.read_text() == render(services.load(service)), (
        f"{exported} is stale; regenerate with: keel openapi {service} -o {path_for(service)}"
    )


def test_ticket_api_documents_the_access_rule():
    text = (ROOT / path_for("tickets")).read_text()
    assert "403" in text and "another user" in text.lower()
