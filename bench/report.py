"""One row of the results table, the median of repeated runs, and the Markdown the bench writes."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """One measured run: a rate (per second), optionally a p99 latency, and the command that made it."""

    rate: float
    command: str
    p99_ms: float | None = None
    # Server CPU (user + system) per request: unlike the rate, it barely moves when other work shares
    # the machine, so it is the figure to compare across runs on a busy host.
    cpu_ms: float | None = None


def median(samples: Sequence[Sample]) -> Sample:
    """The run with the median rate (a real run, so its p99 and command belong together)."""
    ordered = sorted(samples, key=lambda s: s.rate)
    return ordered[(len(ordered) - 1) // 2]


def per_round(figures: Sequence[Sample], limits: Sequence[Sample]) -> str:
    """Each round's ratio of two targets measured in turns (loadgen.measure_interleaved), for a
    row's note: the spread says how far to trust the ratio of the medians."""
    ratios = sorted(f.rate / lim.rate for f, lim in zip(figures, limits, strict=True) if lim.rate)
    if not ratios:
        return ""
    middle = ratios[(len(ratios) - 1) // 2]
    return f"per round {', '.join(f'{r:.0%}' for r in ratios)} (median {middle:.0%})"


def in_turns(
    name: str, figures: Sequence[Sample], limits: Sequence[Sample], target: float | None, note: str
) -> Row:
    """A row of two targets measured in turns: the medians, and each round's ratio in the note."""
    return Row(
        name, median(figures), median(limits), "req/s", target, note=f"{note}; {per_round(figures, limits)}"
    )


@dataclass(frozen=True)
class Row:
    workload: str
    figure: Sample | None
    limit: Sample | None
    unit: str
    target_ratio: float | None
    target_p99_ms: float | None = None
    note: str = ""
    # Rows that are not a ratio (memory, lag): the text to show in the figure column.
    text: str | None = None
    met_override: bool | None = None
    # The target as words, for rows whose target is not a ratio (lag, completion).
    target_text: str | None = None

    @property
    def ratio(self) -> float | None:
        if self.figure is None or self.limit is None or not self.limit.rate:
            return None
        return self.figure.rate / self.limit.rate

    @property
    def met(self) -> bool | None:
        if self.met_override is not None:
            return self.met_override
        if self.ratio is None or self.target_ratio is None:
            return None
        ok = self.ratio >= self.target_ratio
        if self.target_p99_ms is not None and self.figure is not None and self.figure.p99_ms is not None:
            ok = ok and self.figure.p99_ms <= self.target_p99_ms
        return ok

    def target(self) -> str:
        if self.target_text is not None:
            return self.target_text
        parts = []
        if self.target_ratio is not None:
            parts.append(f"≥ {self.target_ratio:.0%}")
        if self.target_p99_ms is not None:
            parts.append(f"p99 ≤ {self.target_p99_ms:g} ms")
        return ", ".join(parts) or "—"


def _fmt(sample: Sample | None, unit: str) -> str:
    if sample is None:
        return "—"
    text = f"{sample.rate:,.0f} {unit}"
    if sample.p99_ms is not None:
        text += f", p99 {sample.p99_ms:.1f} ms"
    if sample.cpu_ms is not None:
        # µs below a millisecond: the fast GETs differ from their bare limit by tens of µs.
        cpu = f"{sample.cpu_ms * 1000:.0f} µs" if sample.cpu_ms < 1 else f"{sample.cpu_ms:.2f} ms"
        text += f", {cpu} CPU/{unit.split('/')[0].removesuffix('s')}"
    return text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(rows: Sequence[Row], header: str) -> str:
    lines = [
        header,
        "",
        "| workload | figure | limit (same run) | ratio | target | met? | command |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        figure = row.text if row.text is not None else _fmt(row.figure, row.unit)
        ratio = f"{row.ratio:.0%}" if row.ratio is not None else "—"
        met = {True: "yes", False: "**no**", None: "—"}[row.met]
        commands = [f"`{s.command}`" for s in (row.figure, row.limit) if s is not None and s.command]
        command = "<br>".join(_cell(c) for c in commands)
        if row.note:
            command = f"{command}<br>{_cell(row.note)}" if command else _cell(row.note)
        lines.append(
            f"| {_cell(row.workload)} | {_cell(figure)} | {_cell(_fmt(row.limit, row.unit))} | {ratio} "
            f"| {row.target()} | {met} | {command} |"
        )
    return "\n".join(lines) + "\n"


def p99(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else (values[0] if values else 0.0)
