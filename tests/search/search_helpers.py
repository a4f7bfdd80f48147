"""Constants and helpers shared by the search tests (fixtures are in conftest.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

MODALITIES = ("image", "text", "audio", "pointcloud")
ITEMS = 200  # per modality: 5 per class of the toy world's 40
QUERIES = 20  # held-out items per modality, never indexed
CLASSES = 40  # the toy world's


def class_of(path: str | Path) -> str:
    """The toy class of a demo file (its folder: class-07)."""
    return Path(path).parent.name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A real `mcrx serve` process on 127.0.0.1."""

    def __init__(self, collection: Path, cache_dir: Path, tmp: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp  # the server's TMPDIR: uploads may be written there and nowhere else
        self.log = tmp.parent / f"server-{self.port}.log"
        env = {**os.environ, "MCRX_CACHE_DIR": str(cache_dir), "HF_HUB_OFFLINE": "1",
               "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}
        self._log_handle = open(self.log, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mcrx", "serve", str(collection), "--port", str(self.port),
             *extra], env=env, stdout=self._log_handle, stderr=subprocess.STDOUT)
        self._wait()

    def _wait(self, timeout: float = 90) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mcrx serve exited: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/api/collections", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"mcrx serve did not answer in {timeout} s: {self.log.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._log_handle.close()
