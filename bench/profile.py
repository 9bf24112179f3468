"""Sample the ticket service with py-spy while wrk drives the create path; write the top frames.

py-spy attaches from outside (no code change, ~1-2 % overhead at the default 100 Hz); it is installed
into the private tool venv `.tools/` when missing, so the project's lock file stays as it is."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench import loadgen
from bench.config import RESULTS, ROOT
from bench.procs import Child
from bench.workloads import Context

PY_SPY_VERSION = "0.4.3"
TOOLS = ROOT / ".tools"
# The profile covers this many seconds of steady load; wrk runs a little longer on both ends.
PROFILE_S = 5
TOP = 20
# Frames every sample passes through (the CLI, the server loop, the event loop): they say nothing about
# where a request spends its time, so the inclusive table leaves them out.
ROOT_FRAMES = (
    "typer/",
    "click/",
    "uvicorn/server.py",
    "uvicorn/_compat.py",
    "asyncio/",
    "keel/cli.py",
    "<module>",
)


def py_spy() -> str:
    found = shutil.which("py-spy") or (
        str(TOOLS / "bin" / "py-spy") if (TOOLS / "bin" / "py-spy").exists() else None
    )
    if found:
        return found
    if not (TOOLS / "bin" / "pip").exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(TOOLS)], check=True)
        subprocess.run([str(TOOLS / "bin" / "python"), "-m", "ensurepip", "-q"], check=True)
    subprocess.run([str(TOOLS / "bin" / "pip"), "install", "-q", f"py-spy=={PY_SPY_VERSION}"], check=True)
    return str(TOOLS / "bin" / "py-spy")


def _frame(raw: str) -> str:
    """`handler (keel/tickets/service.py:123)` → `handler (keel/tickets/service.py)`: lines split one
    function's time over many rows."""
    name, _, where = raw.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


def summarise(collapsed: str) -> tuple[int, Counter[str], Counter[str], Counter[str]]:
    """Total samples; self time per function; inclusive time per function; inclusive per module group."""
    total = 0
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        # A sample py-spy read while the frames changed under it can carry garbage names (NULs and
        # the like): left out, not printed into the report.
        if not stack or not count_text.isdigit() or not stack.isprintable():
            continue
        count = int(count_text)
        frames = [
            _frame(f)
            for f in stack.split(";")
            if f and not f.startswith("process ") and not f.startswith("thread ")
        ]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            inclusive[f] += count
        for g in {_group(f) for f in frames}:
            groups[g] += count
    return total, own, inclusive, groups


def _group(frame: str) -> str:
    path = frame.rpartition(" (")[2].rstrip(")")
    top = path.split("/", 1)[0]
    if top == "keel":
        return "/".join(path.split("/")[:3])
    return top


def _no_roots(counts: Counter[str]) -> Counter[str]:
    return Counter({f: c for f, c in counts.items() if not any(r in f for r in ROOT_FRAMES)})


def _keel_only(counts: Counter[str]) -> Counter[str]:
    return Counter({f: c for f, c in _no_roots(counts).items() if "(keel/" in f})


def _table(title: str, counts: Counter[str], total: int) -> list[str]:
    lines = [f"### {title}", "", "| share | samples | frame |", "| ---: | ---: | --- |"]
    for frame, count in counts.most_common(TOP):
        lines.append(f"| {count / total:.1%} | {count} | `{frame}` |")
    return [*lines, ""]


def spy_argv(pid: int, out: Path) -> list[str]:
    return [
        py_spy(),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(PROFILE_S),
        "--format",
        "raw",
        "--output",
        str(out),
        "--nonblocking",
    ]


async def run_spy(pid: int, out: Path) -> tuple[str, str | None]:
    """Sample `pid` for PROFILE_S seconds; (the command as shown, an error or None)."""
    argv = spy_argv(pid, out)
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    spy_out = (await proc.communicate())[0].decode()
    shown = " ".join(argv).replace(str(out), "<out>").replace(f"--pid {pid}", "--pid <pid>")
    if proc.returncode or not out.exists():
        return shown, f"py-spy failed ({proc.returncode}): {spy_out[-500:]}"
    return shown, None


def write(name: str, title: str, context: str, raw: Path) -> str:
    """bench/results/<name>.md from py-spy's collapsed stacks; returns the note for the report."""
    total, own, inclusive, groups = summarise(raw.read_text())
    doc = [
        f"# Profile: {title}",
        "",
        f"{context} {total} samples of the busy threads; idle (waiting) samples excluded. "
        "Raw stacks: the run's log directory.",
        "",
        *_table("Where the time is, by package (inclusive)", groups, total),
        *_table("Self time (the frame on top of the stack)", own, total),
        *_table("Keel's own functions, inclusive", _keel_only(inclusive), total),
        *_table(
            "Inclusive time per function (CLI, server and event-loop frames left out)",
            _no_roots(inclusive),
            total,
        ),
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(doc))
    return f"{title}: {total} py-spy samples → bench/results/{name}.md"


async def record(
    ctx: Context, child: Child, base: str, lua: str, args: list[str], title: str, name: str
) -> str:
    """Profile the service under one wrk load; writes bench/results/<name>.md, returns a note."""
    out = ctx.logdir / f"{name}.txt"
    load = asyncio.create_task(loadgen.wrk(ctx.cfg, base, lua, args, PROFILE_S + 2))
    await asyncio.sleep(0.5)  # let the load reach steady state before sampling
    shown, error = await run_spy(child.pid, out)
    result = await load
    if error:
        return error
    context = (
        f"`{shown}` while `wrk -c{ctx.cfg.connections}` ran the load ({result.rps:,.0f} req/s, "
        f"p99 {result.p99_ms:.1f} ms while profiled)."
    )
    return write(name, title, context, out)
