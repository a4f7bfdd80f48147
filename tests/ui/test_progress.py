"""Progress where stderr is not a terminal: plain periodic lines (a log file on a cluster
must show that a long run is alive), and rates that never round to zero."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from rich.console import Console

from mcrx.ui import console as console_module
from mcrx.ui.console import PlainProgress, ProgressEvery, progress_every, rate_text


@pytest.mark.parametrize(("done", "seconds", "unit", "expected"), [
    (1, 25.0, "steps", "25.0 s/step"),
    (1, 0.5, "steps", "2.00 steps/s"),
    (4, 100.0, "items", "25.0 s/item"),
    (3, 2.0, "steps", "1.50 steps/s"),
    (12345, 1.0, "rows", "12,345 rows/s"),
    (1, 3000.0, "steps", "3,000 s/step"),
    (0, 1.0, "steps", ""),
])
def test_rate_text_never_rounds_to_zero(done, seconds, unit, expected):
    assert rate_text(done, seconds, unit) == expected


def test_slow_rates_keep_a_figure():
    text = rate_text(1, 24.0, "steps")
    assert not text.startswith("0 ") and "s/step" in text


@pytest.mark.parametrize(("value", "expected"), [
    ("", ProgressEvery(30.0, 0.05)),
    ("0.5", ProgressEvery(0.5, 0.05)),
    ("10%", ProgressEvery(30.0, 0.10)),
    ("60s,10%", ProgressEvery(60.0, 0.10)),
    ("off", ProgressEvery(None, None, enabled=False)),
    ("soon", ProgressEvery(30.0, 0.05)),  # unreadable: the default, not a failed run
])
def test_progress_every(value, expected):
    assert progress_every(value) == expected


def test_plain_progress_prints_start_periodic_and_final_lines(tmp_path, monkeypatch):
    clock = [1000.0]  # 40 s a step
    monkeypatch.setattr(console_module.time, "perf_counter", lambda: clock[0])
    with (tmp_path / "log").open("w") as log:
        out = Console(file=log, force_terminal=False)
        bar = PlainProgress(ProgressEvery(None, 0.25), out=out)
        with bar:
            task = bar.add_task("train a → b", total=8, rate="", unit="step")
            for _ in range(8):
                clock[0] += 40.0
                bar.update(task, advance=1, loss=0.5)
    lines = (tmp_path / "log").read_text().splitlines()
    assert lines == [
        "train a → b: step 0/8 (0%), started",
        "train a → b: step 2/8 (25%), loss 0.5000, 40.0 s/step, elapsed 0:01:20, ETA 0:04:00",
        "train a → b: step 4/8 (50%), loss 0.5000, 40.0 s/step, elapsed 0:02:40, ETA 0:02:40",
        "train a → b: step 6/8 (75%), loss 0.5000, 40.0 s/step, elapsed 0:04:00, ETA 0:01:20",
        "train a → b: step 8/8 (100%), loss 0.5000, 40.0 s/step, elapsed 0:05:20, done",
    ]


def test_plain_progress_every_seconds(tmp_path, monkeypatch):
    """The time trigger: a line every N seconds even when 5 % takes longer."""
    clock = [0.0]
    monkeypatch.setattr(console_module.time, "perf_counter", lambda: clock[0])
    with (tmp_path / "log").open("w") as log:
        bar = PlainProgress(ProgressEvery(30.0, 0.05), out=Console(file=log))
        with bar:
            task = bar.add_task("encode x", total=10_000, rate="")
            for _ in range(100):  # 100 items, 1 %, in 100 s
                clock[0] += 1.0
                bar.update(task, advance=1, rate=rate_text(int(clock[0]), clock[0], "items"))
    lines = (tmp_path / "log").read_text().splitlines()
    assert [line.split(", ")[0] for line in lines] == [
        "encode x: 0/10,000 (0%)", "encode x: 30/10,000 (0%)", "encode x: 60/10,000 (1%)",
        "encode x: 90/10,000 (1%)"]
    assert "1.00 items/s" in lines[1] and "ETA 2:46:10" in lines[1]


def test_a_terminal_keeps_richs_bars(monkeypatch):
    monkeypatch.setattr(console_module, "console", Console(force_terminal=True))
    assert not isinstance(console_module.progress(), PlainProgress)
    monkeypatch.setattr(console_module, "console", Console(force_terminal=False))
    assert isinstance(console_module.progress(), PlainProgress)
    assert not isinstance(console_module.progress(disable=True), PlainProgress)


def test_extend_with_stderr_in_a_file_logs_every_stage(write_recipe, tmp_path):
    """A real ``mcrx extend`` whose stderr is a file: each long stage (encode, pairs, train)
    prints plain lines with count, rate and ETA while it runs, and no rich bar codes."""
    path = write_recipe("demo.yaml")
    log = tmp_path / "stderr.log"
    env = {**os.environ, "MCRX_CACHE_DIR": str(tmp_path / "cache"), "MCRX_PROGRESS_EVERY": "0.5"}
    env.pop("FORCE_COLOR", None)
    with log.open("w") as stderr:
        done = subprocess.run([sys.executable, "-m", "mcrx", "extend", str(path)], env=env,
                              stdout=subprocess.DEVNULL, stderr=stderr, timeout=900)
    text = log.read_text()
    assert done.returncode == 0, text
    assert "\x1b[" not in text  # no terminal control codes in a log file
    for stage in ("encode memories.audio (toy/clap)", "pairs toy/clap", "train toy/clap"):
        lines = [line for line in text.splitlines() if line.startswith(f"{stage}")]
        assert len(lines) >= 2, f"{stage}: {lines}\n{text}"
        assert lines[0].endswith("started") and lines[-1].endswith("done"), lines
    train = [line for line in text.splitlines() if line.startswith("train toy/clap → toy/clip:")]
    line = re.compile(r"step \d+/\d+ \(\d+%\), (loss \d+\.\d+, )?[\d.,]+ (steps/s|s/step), "
                      r"elapsed \d:\d\d:\d\d, (ETA \d:\d\d:\d\d|done)$")
    assert all(line.search(text) for text in train[1:]), train
    assert "loss" in train[-1]  # the loss as of the last read (every training.loss_every)
    assert not re.search(r"(?<![\d.,])0 (steps|items|rows)/s", text)
