"""Every `keel …` command line in README.md and docs/ names a command Keel has, with options it takes:
a runbook step that fails on a typo or a renamed flag is found here, not during an incident."""

from __future__ import annotations

import re
from pathlib import Path

import click
import typer

from keel.cli import app

ROOT = Path(__file__).resolve().parents[2]
# `keel CMD [SUB]` and what follows it on the line, up to a shell separator or a comment.
COMMAND = re.compile(r"(?:^|[\s(;&|])keel ([a-z][a-z-]*(?: [a-z][a-z-]*)?)((?: [^;&|#]*)?)")


def _command_lines() -> list[tuple[str, str]]:
    """(document, line) for every inline code span and shell-block line that runs `keel`."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        found += [(path.name, m.group(1)) for m in re.finditer(r"`([^`\n]*\bkeel [a-z][^`\n]*)`", text)]
        for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S):
            found += [
                (path.name, line) for line in block.splitlines() if re.search(r"(^|\s)keel [a-z]", line)
            ]
    return found


def _resolve(root: click.Command, words: list[str]) -> tuple[click.Command, list[str]]:
    command, used = root, []
    for word in words:
        children = getattr(command, "commands", {})
        if word not in children:
            break
        command, used = children[word], [*used, word]
    return command, used


def test_every_documented_keel_command_and_option_exists() -> None:
    root = typer.main.get_command(app)
    lines = _command_lines()
    assert len(lines) > 100, "the documents run keel in many places"
    wrong = set()
    for document, line in lines:
        for match in COMMAND.finditer(line):
            command, used = _resolve(root, match.group(1).split())
            if not used:
                wrong.add(f"{document}: no command in {line!r}")
                continue
            options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
            wrong |= {
                f"{document}: keel {' '.join(used)} has no {flag}"
                for flag in re.findall(r"(--[a-z][a-z-]*)", match.group(2))
                if flag not in options
            }
    assert sorted(wrong) == []
