"""Terminal output: diagnostics and progress go to stderr, so stdout stays machine
readable (``--json``).

Progress has two forms. On a terminal, rich's live bars. Anywhere else (a log file on a
cluster, ``make demo > log``, a pipe) live bars print nothing until a stage ends, so a long
run looks hung: there :func:`progress` prints plain lines instead, one when a stage starts,
then every ``MCRX_PROGRESS_EVERY`` (default: every 30 s or every 5 % of the stage, whichever
comes first) and one when it completes. Every long stage (encode, pairs, train, indexing)
goes through :func:`progress`, so none of them needs to know which form is in use."""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)

#: environment variable for the plain progress lines: "30" (seconds), "5%", "30,5%", or "off"
PROGRESS_EVERY_ENV = "MCRX_PROGRESS_EVERY"
DEFAULT_EVERY_SECONDS = 30.0
DEFAULT_EVERY_FRACTION = 0.05


@dataclass(frozen=True)
class ProgressEvery:
    """How often plain progress lines are printed: after ``seconds`` or after ``fraction``
    of the stage since the last line, whichever comes first (``None``: that trigger is
    off; both ``None``: only the start and end lines)."""

    seconds: float | None = DEFAULT_EVERY_SECONDS
    fraction: float | None = DEFAULT_EVERY_FRACTION
    enabled: bool = True


def progress_every(value: str | None = None) -> ProgressEvery:
    """Parse ``MCRX_PROGRESS_EVERY`` (or ``value``). A bare number is seconds and keeps the
    5 % trigger; ``N%`` sets the fraction and keeps the 30 s trigger; ``30,10%`` sets both;
    ``off`` prints no plain lines. A value that cannot be read falls back to the default
    rather than failing a long run over a logging setting."""
    text = (os.environ.get(PROGRESS_EVERY_ENV, "") if value is None else value).strip().lower()
    if not text:
        return ProgressEvery()
    if text in {"off", "none", "no", "false"}:
        return ProgressEvery(None, None, enabled=False)
    seconds: float | None = DEFAULT_EVERY_SECONDS
    fraction: float | None = DEFAULT_EVERY_FRACTION
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            if part.endswith("%"):
                fraction = float(part[:-1]) / 100
            else:
                seconds = float(part.removesuffix("s"))
    except ValueError:
        return ProgressEvery()
    if seconds is not None and not (math.isfinite(seconds) and seconds >= 0):
        seconds = DEFAULT_EVERY_SECONDS
    if fraction is not None and not (math.isfinite(fraction) and fraction > 0):
        fraction = None
    return ProgressEvery(seconds, fraction)


class PlainProgress(Progress):
    """rich's ``Progress`` API (``add_task``, ``update``, ``advance``) that prints plain
    text lines, for output that is not a terminal. Lines are only printed from calls the
    stages already make, so a step that takes longer than the period delays the next line
    rather than a thread printing stale figures."""

    def __init__(self, every: ProgressEvery, *, out: Console | None = None) -> None:
        super().__init__(console=out or console, disable=True)
        self.every = every
        self._out = out or console
        # per task: (time started, completed at start, time of last line, fraction at it)
        self._marks: dict[TaskID, list[float]] = {}
        self._finished: set[TaskID] = set()

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0,
                 completed: int = 0, visible: bool = True, **fields) -> TaskID:
        task = super().add_task(description, start=start, total=total, completed=completed,
                                visible=visible, **fields)
        now = time.perf_counter()
        self._marks[task] = [now, float(completed), now, self._fraction(task)]
        if self.every.enabled and visible:
            self._print(task, now, started=True)
        return task

    def update(self, task_id: TaskID, **kwargs) -> None:  # type: ignore[override]
        super().update(task_id, **kwargs)
        self._maybe_print(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._maybe_print(task_id)

    def _fraction(self, task_id: TaskID) -> float:
        task = self._tasks[task_id]
        return task.completed / task.total if task.total else 0.0

    def _maybe_print(self, task_id: TaskID) -> None:
        if not self.every.enabled or task_id in self._finished or task_id not in self._marks:
            return
        task = self._tasks[task_id]
        if not task.visible:
            return
        now = time.perf_counter()
        _, _, last_time, last_fraction = self._marks[task_id]
        fraction = self._fraction(task_id)
        done = task.total is not None and task.completed >= task.total
        due = (done
               or (self.every.seconds is not None and now - last_time >= self.every.seconds)
               or (self.every.fraction is not None
                   and fraction - last_fraction >= self.every.fraction - 1e-9))
        if due:
            self._marks[task_id][2:] = [now, fraction]
            self._print(task_id, now)
            if done:
                self._finished.add(task_id)

    def _print(self, task_id: TaskID, now: float, started: bool = False) -> None:
        task = self._tasks[task_id]
        began, first, _, _ = self._marks[task_id]
        unit = task.fields.get("unit")  # singular: "step"
        count = (f"{unit} " if unit else "") + f"{task.completed:,.0f}"
        if task.total:
            count += f"/{task.total:,.0f} ({100 * task.completed / task.total:.0f}%)"
        parts = [f"{task.description}: {count}"]
        if started:
            parts.append("started" if not first else "resumed")
        else:
            elapsed = now - began
            progressed = task.completed - first
            if unit:  # a task that names its unit gets its rate from every update
                if task.fields.get("loss") is not None:
                    parts.append(f"loss {task.fields['loss']:.4f}")
                rate = rate_text(int(progressed), elapsed, f"{unit}s")
            else:  # the stage's own rate text, "loss 0.1  12 steps/s" as "loss 0.1, 12 ..."
                rate = re.sub(r"\s{2,}", ", ", str(task.fields.get("rate", "")).strip())
            if rate:
                parts.append(rate)
            parts.append(f"elapsed {format_duration(elapsed)}")
            left = (task.total or 0) - task.completed
            if task.total and left <= 0:
                parts.append("done")
            elif progressed > 0 and elapsed > 0 and task.total:
                parts.append(f"ETA {format_duration(left * elapsed / progressed)}")
        self._out.print(", ".join(parts), highlight=False, markup=False, soft_wrap=True)


def progress(disable: bool = False) -> Progress:
    """A progress display with rate (items/s or steps/s) and time left: rich's bars on a
    terminal, plain periodic lines otherwise (:class:`PlainProgress`)."""
    if not disable and not console.is_terminal and not console.is_jupyter:  # a notebook
        return PlainProgress(progress_every())                           # draws rich's bars
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
        transient=False,
    )


def format_duration(seconds: float) -> str:
    """``h:mm:ss``, the form rich's bars use, so logs and terminals read alike."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _significant(value: float) -> str:
    """Three significant figures at most, thousands separated: 12,345 / 123 / 12.3 / 1.23
    / 0.0412, so a slow rate never rounds to 0."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.2g}"


def rate_text(done: int, seconds: float, unit: str) -> str:
    """``done`` units in ``seconds`` as a rate: ``12.3 steps/s``; below one per second
    ``25 s/step`` (the time per unit reads better than 0.04 steps/s). Never "0 steps/s"."""
    if not (seconds > 0 and done > 0):
        return ""
    rate = done / seconds
    if rate >= 1:
        return f"{_significant(rate)} {unit}/s"
    single = unit[:-1] if unit.endswith("s") and len(unit) > 1 else unit
    return f"{_significant(seconds / done)} s/{single}"
