"""Helpers shared by the benchmark scripts (not a benchmark itself).

The machine these run on is shared and noisy, so every ratio is measured in the SAME process
as the work it judges: a plain ``torch.mm`` yardstick right before and right after the
measured work, same thread count, ON THE SAME DEVICE AND IN THE SAME DTYPE as the work
(``--device``, ``--precision``: a GPU ratio against a CPU mm would mean nothing). Each
script prints human-readable lines and, as its LAST line, one JSON object that names the
device and the precision.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

GIB = 2**30
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")


def add_device_arguments(parser, precisions: tuple[str, ...] = PRECISIONS) -> None:
    """``--device`` and ``--precision``, the same in every benchmark."""
    parser.add_argument("--device", default="cpu",
                        help="where the work AND its mm yardstick run: cpu, cuda, cuda:N, auto")
    parser.add_argument("--precision", default="fp32", choices=precisions,
                        help="matmul inputs of the work and of the yardstick (fp32, tf32, "
                        "fp16, ...); accumulation is float32")


def device_of(name: str) -> torch.device:
    from mcrx.device import resolve_device

    return resolve_device(name)


def sync(device: torch.device) -> None:
    """Wait for the device's queued kernels (a GPU timing without it measures the launch)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Operands:
    """Two n×n matrices on ``device`` in ``precision``'s input dtype, and the product."""

    def __init__(self, n: int, device: torch.device, precision: str) -> None:
        from mcrx.device import matmul_precision

        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
        if device.type == "cpu" and dtype != torch.float32:
            dtype = torch.float32  # the CPU emulates half inputs in float32 arithmetic
        self.n, self.device = n, device
        self.context = matmul_precision(precision, device)
        self.a = torch.randn((n, n), device=device).to(dtype)
        self.b = torch.randn((n, n), device=device).to(dtype)
        self.out = torch.empty((n, n), device=device, dtype=dtype)

    def seconds(self) -> float:
        with self.context:
            sync(self.device)
            t = time.perf_counter()
            torch.mm(self.a, self.b, out=self.out)
            sync(self.device)
            return time.perf_counter() - t


def mm_yardstick(n: int = 4096, seconds: float = 2.0, min_reps: int = 2,
                 device: torch.device | str = "cpu", precision: str = "fp32") -> dict:
    """FLOP/s of a plain ``torch.mm`` of two n×n matrices on ``device`` with ``precision``'s
    inputs, repeated for ``seconds``.

    Returns the median, best and time-averaged rate (GFLOP/s) over the repetitions; the
    median is the yardstick used for ratios (robust to one rep stalled by another job)."""
    operands = _Operands(n, torch.device(device), precision)
    operands.seconds()  # warm-up: first call pays page faults, MKL / cuBLAS set-up
    rates, began = [], time.perf_counter()
    while len(rates) < min_reps or time.perf_counter() - began < seconds:
        rates.append(2 * n**3 / operands.seconds() / 1e9)
    del operands
    return {
        "n": n,
        "device": str(device),
        "precision": precision,
        "reps": len(rates),
        "median_gflops": round(statistics.median(rates), 2),
        "best_gflops": round(max(rates), 2),
        "mean_gflops": round(len(rates) / sum(1 / r for r in rates), 2),
    }


class Probe:
    """One ``torch.mm`` (n×n @ n×n) at a time, to interleave with chunks of measured work so
    that both see the same load from other jobs. ``rates`` keeps every probe (GFLOP/s)."""

    def __init__(self, n: int = 4096, device: torch.device | str = "cpu",
                 precision: str = "fp32") -> None:
        self.n, self.device, self.precision = n, str(device), precision
        self.operands = _Operands(n, torch.device(device), precision)
        self.operands.seconds()  # warm-up
        self.rates: list[float] = []

    def __call__(self) -> float:
        self.rates.append(2 * self.n**3 / self.operands.seconds() / 1e9)
        return self.rates[-1]

    def summary(self) -> dict:
        return {"n": self.n, "device": self.device, "precision": self.precision,
                "reps": len(self.rates),
                "median_gflops": round(statistics.median(self.rates), 2),
                "best_gflops": round(max(self.rates), 2)}


def yardstick_pair(before: dict, after: dict) -> float:
    """The yardstick for one measurement: the mean of the before/after medians (GFLOP/s)."""
    return (before["median_gflops"] + after["median_gflops"]) / 2


def timed(fn: Callable, *args, **kwargs):
    began = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - began


def clustered_rows(n: int, dim: int, generator: torch.Generator, clusters: int | None = None,
                   centers: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised rows around random cluster centres (32 rows a cluster by default), like
    embeddings of a real collection: a query near a centre gets a softmax (τ1 = 0.01) spread
    over several rows, not a one-hot, so exactness checks are not trivial.
    Returns (rows, centres); pass ``centers`` to draw more rows (queries) around the same."""
    if centers is None:
        k = clusters or max(1, n // 32)
        centers = torch.nn.functional.normalize(torch.randn(k, dim, generator=generator), dim=-1)
    index = torch.randint(0, len(centers), (n,), generator=generator)
    noise = torch.randn(n, dim, generator=generator) / dim**0.5
    return torch.nn.functional.normalize(centers[index] + noise, dim=-1), centers


def peak_rss_bytes() -> int:
    """``ru_maxrss`` of this process (Linux reports KiB). CAUTION: after fork/exec Linux
    starts a child's ``ru_maxrss`` at its PARENT's peak (measured here: a child of a process
    that once held 2 GiB reports 2 GiB while its own peak is 11 MiB), so the benchmarks keep
    their parents lean (data are generated in a subprocess) and also report ``hwm_bytes()``."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def hwm_bytes() -> int:
    """VmHWM: this process's own peak RSS (fresh after exec, reset by ``reset_peak_rss``)."""
    return proc_status().get("VmHWM", 0)


def reset_peak_rss() -> int:
    """Give freed heap pages back to the OS (``malloc_trim``), then reset the kernel's peak-RSS
    mark (``/proc/self/clear_refs`` ← 5, which resets VmHWM), so that a later ``hwm_bytes()``
    minus the returned current RSS is the peak of the work in between.
    Returns the current RSS in bytes."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass
    return proc_status().get("VmRSS", 0)


class PeakSampler:
    """Peak anonymous RSS (heap, tensors: what cannot be dropped) of this process, sampled
    every ``interval`` seconds on a thread while the ``with`` block runs. VmHWM also counts
    the pages of memory-mapped files (pairs read by the aligner, memory shards), which the
    kernel drops under pressure; RssAnon is the footprint that competes for RAM."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.peak_anon = interval, 0
        self._stop = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_anon = max(self.peak_anon, proc_status().get("RssAnon", 0))

    def __enter__(self) -> PeakSampler:
        import threading

        self.peak_anon = proc_status().get("RssAnon", 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_anon = max(self.peak_anon, proc_status().get("RssAnon", 0))


def proc_status() -> dict:
    """VmHWM / VmRSS / RssAnon / RssFile of this process, in bytes (Linux only)."""
    out = {}
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def machine() -> dict:
    """Load, thread count and versions, printed with every result."""
    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        uptime = ""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "uptime": uptime,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available() else [],
    }


def emit(result: dict) -> None:
    """The LAST line of every benchmark's output: one JSON object."""
    print(json.dumps(result), flush=True)


def run_child(argv: list[str], prefix: str = "    | ", env: dict | None = None) -> dict:
    """Run ``python argv…`` in a fresh process, echo its lines, return its last-line JSON."""
    process = subprocess.Popen(
        [sys.executable, *argv], stdout=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )
    last = ""
    assert process.stdout is not None
    for line in process.stdout:
        line = line.rstrip("\n")
        if line.startswith("{"):
            last = line
        else:
            print(prefix + line, flush=True)
    if process.wait() != 0:
        raise SystemExit(f"child {argv} failed with exit code {process.returncode}")
    return json.loads(last)


def gib(n_bytes: float) -> float:
    return round(n_bytes / GIB, 3)
