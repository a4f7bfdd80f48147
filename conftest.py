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
