"""The on-disk memory store: shards, slices, resumption, float16."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mcrx.errors import McrxError
from mcrx.stages.encode import encode_to_memory
from mcrx.store.inputs import read_embeddings
from mcrx.store.memory import Memory, MemoryWriter


def rows(n: int, d: int = 4, start: int = 0) -> np.ndarray:
    return np.arange(start * d, (start + n) * d, dtype=np.float32).reshape(n, d)


def test_shards_and_slices(tmp_path):
    writer = MemoryWriter(tmp_path / "m", {"key": "k"}, dim=4, shard_rows=10)
    writer.append(rows(7))
    writer.append(rows(18, start=7))
    memory = writer.close()
    assert memory.complete and memory.count == 25
    assert [s["rows"] for s in memory.manifest["shards"]] == [10, 10, 5]
    np.testing.assert_array_equal(memory.read(8, 13), rows(5, start=8))  # spans two shards
    np.testing.assert_array_equal(np.concatenate(list(memory.blocks(6))), rows(25))
    assert memory.tensor().shape == (25, 4)


def test_float16_storage(tmp_path):
    writer = MemoryWriter(tmp_path / "m", {"key": "k"}, dim=4, shard_rows=8, dtype="float16")
    writer.append(rows(8) / 100)
    memory = writer.close()
    assert np.load(tmp_path / "m" / "shard-00000.npy").dtype == np.float16
    assert memory.read().dtype == np.float32
    np.testing.assert_allclose(memory.read(), rows(8) / 100, rtol=1e-3)


def test_an_interrupted_write_resumes_after_the_last_complete_shard(tmp_path):
    writer = MemoryWriter(tmp_path / "m", {"key": "same"}, dim=4, shard_rows=10)
    writer.append(rows(15))  # one shard on disk, 5 rows buffered — then the process dies
    del writer
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["count"] == 10 and not manifest["complete"]
    resumed = MemoryWriter(tmp_path / "m", {"key": "same"}, dim=4, shard_rows=10)
    assert resumed.count == 10
    resumed.append(rows(15, start=10))
    np.testing.assert_array_equal(resumed.close().read(), rows(25))
    # other inputs (another key) start afresh
    other = MemoryWriter(tmp_path / "m", {"key": "other"}, dim=4, shard_rows=10)
    assert other.count == 0 and not list((tmp_path / "m").glob("shard-*.npy"))


class CountingEncoder:
    """A real (linear, normalised) encoder that records every item it encodes."""

    modality, dim, batch_size = "text", 3, 4

    def __init__(self) -> None:
        self.seen: list[float] = []

    def prepare(self, item):
        return item

    def encode_prepared(self, items):
        self.seen += list(items)
        x = torch.tensor([[v, 1.0, -v] for v in items])
        return torch.nn.functional.normalize(x, dim=-1)


def test_encode_to_memory_resumes_without_re_encoding(tmp_path):
    encoder = CountingEncoder()
    items = [float(i) for i in range(10)]
    writer = MemoryWriter(tmp_path / "m", {"key": "k"}, dim=3, shard_rows=4)
    writer.append(encoder.encode_prepared(items[:4]).numpy())  # a first run got this far
    encoder.seen.clear()
    memory, done = encode_to_memory(encoder, items, tmp_path / "m", {"key": "k"}, shard_rows=4,
                                    show_progress=False)
    assert done == 6 and encoder.seen == items[4:]
    assert memory.count == 10 and memory.complete


def test_encoder_shape_mismatch_is_reported(tmp_path):
    class Wrong(CountingEncoder):
        dim = 5

    with pytest.raises(McrxError, match="expected"):
        encode_to_memory(Wrong(), [1.0, 2.0], tmp_path / "m", {"key": "k"}, show_progress=False)


def test_embedding_files_are_checked(tmp_path):
    np.save(tmp_path / "ok.npy", np.ones((3, 4), np.float32))
    assert read_embeddings(tmp_path / "ok.npy", 4).shape == (3, 4)
    with pytest.raises(McrxError, match="4-d but the space is 8-d"):
        read_embeddings(tmp_path / "ok.npy", 8)
    np.save(tmp_path / "flat.npy", np.ones(3, np.float32))
    with pytest.raises(McrxError, match="N×d"):
        read_embeddings(tmp_path / "flat.npy")
    with pytest.raises(McrxError, match="not found"):
        read_embeddings(tmp_path / "missing.npy")
    from safetensors.numpy import save_file

    save_file({"embeddings": np.ones((2, 4), np.float32)}, str(tmp_path / "e.safetensors"))
    assert read_embeddings(tmp_path / "e.safetensors", 4).shape == (2, 4)


def test_memory_requires_a_manifest(tmp_path):
    with pytest.raises(McrxError, match="not a memory"):
        Memory(tmp_path)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_mapped_tensor_is_the_normalised_read_bit_for_bit(tmp_path, dtype):
    """The rows every stage reads: normalised once into one file, memory-mapped, equal bit
    for bit to the in-RAM read (a ragged last block and shards of another size included)."""
    writer = MemoryWriter(tmp_path / "m", {"key": "k"}, dim=6, shard_rows=7, dtype=dtype)
    writer.append(np.random.default_rng(0).standard_normal((23, 6), dtype=np.float32))
    memory = writer.close()
    in_ram = memory.tensor(dtype=None, normalize=True)
    mapped = memory.mapped_tensor(dtype=None, block=5)
    assert mapped.dtype == in_ram.dtype == getattr(torch, dtype)
    assert torch.equal(mapped, in_ram)
    stored = tmp_path / "m" / f"normalized-{dtype}.npy"
    assert isinstance(np.load(stored, mmap_mode="r"), np.memmap)
    written = stored.stat().st_mtime_ns
    again = Memory(tmp_path / "m").mapped_tensor(dtype=None)  # reused, not rewritten
    assert torch.equal(again, in_ram) and stored.stat().st_mtime_ns == written
    mapped[0] = 0  # copy-on-write: the file keeps the rows
    assert torch.equal(Memory(tmp_path / "m").mapped_tensor(dtype=None), in_ram)
    widened = memory.mapped_tensor("float32")
    assert widened.dtype == torch.float32
    assert torch.equal(widened, memory.tensor("float32", normalize=True))


def test_mapped_tensor_refuses_an_incomplete_memory_and_rewrites_a_foreign_file(tmp_path):
    writer = MemoryWriter(tmp_path / "m", {"key": "k"}, dim=4, shard_rows=4)
    writer.append(rows(4))
    with pytest.raises(McrxError, match="incomplete"):
        Memory(tmp_path / "m").mapped_tensor()
    memory = writer.close()
    # a normalised copy the entry's record does not name is never trusted: written again
    np.save(tmp_path / "m" / "normalized-float32.npy", np.zeros((3, 4), dtype=np.float32))
    assert torch.equal(memory.mapped_tensor(), memory.tensor("float32", normalize=True))
