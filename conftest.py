"""Test-session settings shared by the core's and every plugin's tests.

One intra-op thread: the tests check results, not speed, and on a shared, loaded machine
two OpenMP threads that wait for each other in every small operation made the suite several
times slower. Subprocesses the tests start inherit the setting through the environment."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

try:  # torch may already be imported by a plugin's pytest entry point
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
except Exception:  # pragma: no cover - torch missing is reported by the tests themselves
    pass


# -- a checkpoint that carries code, for the tests of every reader of pickles ----------------
import os as _os  # noqa: E402
from pathlib import Path as _Path  # noqa: E402

import pytest as _pytest  # noqa: E402


class _RunsShell:
    """Unpickling this calls ``os.system``: what a hostile checkpoint carries."""

    def __init__(self, marker: _Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_os.system, (f"touch {self.marker}",))


class _RunsEval:
    """Unpickling this calls ``builtins.eval``, which opens (creates) the marker file."""

    def __init__(self, marker: _Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import builtins

        return (builtins.eval, (f"open({str(self.marker)!r}, 'w')",))


HOSTILE = {"system": (_RunsShell, f"{_os.system.__module__}.system"),
           "eval": (_RunsEval, "builtins.eval")}


@_pytest.fixture
def hostile_pickle():
    """``hostile_pickle(kind, marker) -> (object, global)``: an object whose unpickling would
    run code (``kind`` "system" or "eval"; the code creates ``marker``), and the global a
    refusal must name."""

    def make(kind: str, marker: _Path):
        cls, name = HOSTILE[kind]
        return cls(marker), name

    return make


@_pytest.fixture
def exmcr_release():
    """``exmcr_release(path, seed) -> path``: a head file in the layout of Ex-MCR's released
    ``ex_clap.pt`` / ``ex_ulip.pt`` (``Head1``, ``Head2.mlp{1,2}.net{1,2}`` with BatchNorm
    statistics), random weights, for ``import_official``."""
    import torch

    def write(path: _Path, seed: int) -> _Path:
        g = torch.Generator().manual_seed(seed)
        state = {"Head1.weight": torch.eye(512), "Head1.bias": torch.zeros(512)}
        for mlp in ("mlp1", "mlp2"):
            for net, (fan_in, fan_out) in (("net1", (512, 1024)), ("net2", (1024, 512))):
                key = f"Head2.{mlp}.{net}"
                state[f"{key}.0.weight"] = (torch.randn(fan_out, fan_in, generator=g)
                                            * fan_in ** -0.5)
                state[f"{key}.0.bias"] = torch.zeros(fan_out)
                state.update({f"{key}.1.weight": torch.ones(fan_out),
                              f"{key}.1.bias": torch.zeros(fan_out),
                              f"{key}.1.running_mean": torch.zeros(fan_out),
                              f"{key}.1.running_var": torch.ones(fan_out),
                              f"{key}.1.num_batches_tracked": torch.tensor(0)})
        torch.save(state, path)
        return path

    return write
