"""Input files from users: pickled, empty, non-UTF-8 or misshapen files are refused with
the file and the reason, and a media error raised in a DataLoader worker reaches the user as
the same one-line error as without workers."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mcrx.errors import McrxError
from mcrx.stages.encode import encode_to_memory
from mcrx.store.inputs import read_embeddings, read_inputs, read_labels


def _object_npy(path: Path) -> Path:
    np.save(path, np.array([{"a": 1}, "x"], dtype=object), allow_pickle=True)
    return path


def _pickle_as_npy(path: Path) -> Path:
    path.write_bytes(pickle.dumps([1, 2, 3]))
    return path


def _bytes(content: bytes):
    def write(path: Path) -> Path:
        path.write_bytes(content)
        return path
    return write


def _truncated_npy(path: Path) -> Path:
    np.save(path, np.ones((9, 4)))
    path.write_bytes(path.read_bytes()[:90])
    return path


CASES = {
    # name: (suffix, writer, reader, expected words)
    "object .npy as inputs": (".npy", _object_npy, read_inputs, "pickled Python objects"),
    "object .npy as embeddings": (".npy", _object_npy, read_embeddings, "pickled"),
    "object .npy as labels": (".npy", _object_npy, read_labels, "pickled"),
    "raw pickle named .npy": (".npy", _pickle_as_npy, read_embeddings, "pickled"),
    "empty .npy inputs": (".npy", _bytes(b""), read_inputs, "empty"),
    "empty .npy embeddings": (".npy", _bytes(b""), read_embeddings,
                              "empty"),
    "empty .txt inputs": (".txt", _bytes(b""), read_inputs, "empty"),
    "blank .txt labels": (".txt", _bytes(b"\n \n"), read_labels, "no labels"),
    "empty image": (".png", _bytes(b""), read_inputs, "empty"),
    "Latin-1 .txt": (".txt", _bytes("café\n".encode("latin-1")),
                     read_inputs, "not UTF-8"),
    "UTF-16 labels": (".txt", _bytes("a\nb\n".encode("utf-16")),
                      read_labels, "not UTF-8"),
    "zero-row embeddings": (".npy", lambda p: np.save(p, np.zeros((0, 4))) or p,
                            read_embeddings, "no rows"),
    "0-d inputs array": (".npy", lambda p: np.save(p, np.float32(3)) or p, read_inputs,
                         "no items"),
    "truncated .npy": (".npy", _truncated_npy, read_embeddings, "not a readable"),
    "garbage safetensors": (".safetensors", _bytes(b"\xff" * 16),
                            read_embeddings, "safetensors"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_files_are_named_with_the_reason(tmp_path, case):
    suffix, write, reader, expected = CASES[case]
    path = write(tmp_path / f"data{suffix}")
    with pytest.raises(McrxError, match=expected) as caught:
        reader(path)
    assert str(path) in str(caught.value)


def test_a_folder_where_a_labels_file_is_expected(tmp_path):
    (tmp_path / "labels.npy").mkdir()
    with pytest.raises(McrxError, match="found a folder"):
        read_labels(tmp_path / "labels.npy")


# -- media errors in DataLoader workers ---------------------------------------------------
class FragileEncoder:
    """A real encoder of numbers that, like a media reader, refuses one corrupt item."""

    dim, batch_size = 4, 3

    def prepare(self, item):
        if item == "broken.wav":
            raise McrxError(f"{item}: cannot read the audio (Format not recognised)")
        if item == "silent.wav":
            return torch.zeros(self.dim)  # what a broken decoder returns: no direction
        return torch.full((self.dim,), float(item))

    def encode_prepared(self, prepared):
        return torch.nn.functional.normalize(torch.stack(prepared), dim=-1)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_media_error_reads_the_same_with_and_without_workers(tmp_path, workers):
    items = ["1", "2", "3", "4", "broken.wav", "5"]
    with pytest.raises(McrxError) as caught:
        encode_to_memory(FragileEncoder(), items, tmp_path / "memory", {"key": "k"},
                         workers=workers, show_progress=False)
    assert str(caught.value) == "broken.wav: cannot read the audio (Format not recognised)"


def test_an_encoder_row_of_zeros_names_the_item(tmp_path):
    with pytest.raises(McrxError, match=r"zeros for item 3 \(silent.wav\)"):
        encode_to_memory(FragileEncoder(), ["1", "2", "3", "silent.wav"], tmp_path / "m",
                         {"key": "k"}, show_progress=False)


def test_the_cli_prints_one_line_not_a_worker_traceback(tmp_path):
    """``mcrx encode --workers 2`` on a folder with a corrupt WAV: the CLAP reader's error,
    once, no 'DataLoader worker' and no traceback — in a real process."""
    script = textwrap.dedent(f"""
        import sys
        from mcrx.errors import McrxError
        from mcrx.stages.encode import encode_to_memory
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_inputs_files import FragileEncoder
        try:
            encode_to_memory(FragileEncoder(), ["1", "broken.wav"] * 4, {str(tmp_path)!r} +
                             "/m", {{"key": "k"}}, workers=2, show_progress=False)
        except McrxError as exc:
            print(exc)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "broken.wav: cannot read the audio (Format not recognised)"
    assert "Traceback" not in done.stderr and "worker" not in done.stdout


# -- no file ever runs code ---------------------------------------------------------------
class _Payload:
    """Unpickling this creates a marker file: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_code_in_any_file_mcrx_reads_never_runs(tmp_path):
    from mcrx.infer.official import load_state_dict
    from mcrx.store.weights import load_weights

    marker = tmp_path / "ran"
    payload = tmp_path / "payload.npy"
    np.save(payload, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    as_pt = tmp_path / "payload.pt"
    torch.save({"weight": _Payload(marker)}, as_pt)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Payload(marker)))
    tries = [(read_inputs, payload), (read_embeddings, payload), (read_labels, payload),
             (load_weights, as_pt), (load_weights, raw), (load_state_dict, as_pt)]
    for reader, path in tries:
        with pytest.raises(McrxError) as caught:
            reader(path)
        assert "weights_only=False" not in str(caught.value)
    assert not marker.exists()
