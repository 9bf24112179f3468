"""Every environment variable a settings class reads is documented (README.md or docs/), so an
operator never meets a knob only the code knows."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

import keel

ROOT = Path(__file__).resolve().parents[2]


def _settings_classes() -> set[type[BaseSettings]]:
    found: set[type[BaseSettings]] = set()
    for module in pkgutil.walk_packages(keel.__path__, "keel."):
        if module.name.endswith(".settings"):
            for value in vars(importlib.import_module(module.name)).values():
                if isinstance(value, type) and issubclass(value, BaseSettings) and value is not BaseSettings:
                    found.add(value)
    return found


def _env_name(name: str, field: FieldInfo) -> str:
    return field.validation_alias if isinstance(field.validation_alias, str) else name.upper()


def _env_names(cls: type[BaseSettings]) -> set[str]:
    return {_env_name(name, field) for name, field in cls.model_fields.items()}


def _settings_table() -> list[tuple[list[str], list[str]]]:
    """README's settings table: each row's variables and the backticked values of its default column."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Settings") :]
    section = section[: section.index("\n## ", 5)]
    rows = []
    for line in section.splitlines():
        columns = line.split("|")
        if line.startswith("| `") and len(columns) >= 4:
            rows.append(
                (re.findall(r"`([A-Z][A-Z0-9_]+)`", columns[1]), re.findall(r"`([^`]*)`", columns[2]))
            )
    return rows


def test_every_setting_a_process_reads_is_documented() -> None:
    classes = _settings_classes()
    assert len(classes) >= 7, classes  # the core's and each service's with settings of its own
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    text = "\n".join(path.read_text(encoding="utf-8") for path in documents)
    mentioned = set(re.findall(r"`?([A-Z][A-Z0-9_]{2,})`?", text))
    missing = sorted(
        f"{env} ({cls.__module__}.{cls.__name__})"
        for cls in classes
        for env in _env_names(cls)
        if env not in mentioned
    )
    assert missing == []


def test_every_variable_in_the_readmes_settings_table_is_read_by_the_code() -> None:
    documented = {name for names, _ in _settings_table() for name in names}
    assert len(documented) > 50
    code = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "src" / "keel").rglob("*.py"))
    assert sorted(n for n in documented if f'"{n}"' not in code) == [], "documented, read nowhere"


def _as_documented(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_the_readmes_defaults_are_the_codes() -> None:
    """Rows that give one plain default per variable (`1000`, `0.05`, `16`); a default that names
    another variable (POSTGRES_LISTEN_DSN: POSTGRES_DSN) is a fallback, not a value."""
    defaults: dict[str, set[str]] = {}
    for cls in _settings_classes():
        for name, field in cls.model_fields.items():
            if field.default_factory is None and field.default is not PydanticUndefined:
                defaults.setdefault(_env_name(name, field), set()).add(_as_documented(field.default))
    compared, differing = 0, []
    for names, values in _settings_table():
        if len(names) != len(values):
            continue  # a default told in words
        for name, value in zip(names, values, strict=True):
            if name in defaults and value not in defaults:
                compared += 1
                if value not in defaults[name]:
                    differing.append(f"{name}: README {value!r}, code {sorted(defaults[name])}")
    assert compared > 40
    assert differing == []
