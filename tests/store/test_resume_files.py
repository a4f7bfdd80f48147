"""Files a run resumes from that are not whole (tampered, or written by something else) are
not resumed: the run redoes that part instead of stopping on a traceback."""

from __future__ import annotations

import json

import torch

from mcrx.store.checkpoints import STATE_FILE, latest_checkpoint
from mcrx.store.connectors import load_connector_state, save_connector_state


def test_an_unreadable_checkpoint_state_is_skipped_for_the_previous_one(tmp_path):
    for step, text in ((10, json.dumps({"step": 10, "fingerprint": "f"})), (20, "{half"),
                       (30, "[1, 2]"), (40, "\udcff")):
        folder = tmp_path / f"step-{step:09d}"
        folder.mkdir()
        (folder / STATE_FILE).write_bytes(text.encode("utf-8", "surrogateescape"))
    found = latest_checkpoint(tmp_path, "f")
    assert found is not None and found[1]["step"] == 10


def test_an_unreadable_connector_file_means_train_again(tmp_path):
    module = torch.nn.Linear(3, 2)
    path = tmp_path / "leaf.safetensors"
    save_connector_state(path, module, "f")
    assert set(load_connector_state(path, "f")) == {"weight", "bias"}
    assert load_connector_state(path, "other") is None
    huge_header = (1 << 60).to_bytes(8, "little")
    for content in (b"", b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}", huge_header):
        path.write_bytes(content)
        assert load_connector_state(path, "f") is None
