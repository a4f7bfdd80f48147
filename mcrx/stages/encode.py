"""Stage 1, encode: every memory the pseudo pairs need, and every evaluation set, as rows of
the space that embeds them — from a precomputed file named in the recipe, from the shared
embedding cache, or encoded now (shard by shard, resumable) and cached.

    $MCRX_CACHE_DIR/embeddings/<space>/<modality>/<key>/   one memory (see mcrx.store.memory)

``key`` fingerprints the encoder (weights, preprocessing) and the source (dataset and
params, or input files with sizes and times), so encoding the same data twice encodes
nothing, whichever recipe asks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.markup import escape
from torch.utils.data import DataLoader

from mcrx.errors import McrxError
from mcrx.recipe.schema import DataSource
from mcrx.stages.context import Embeddings, Run
from mcrx.store.cache import discard_entry, note_use
from mcrx.store.fingerprint import files_fingerprint, fingerprint_of
from mcrx.store.inputs import read_embeddings, read_labels
from mcrx.store.locks import cache_entry_lock
from mcrx.store.memory import (
    Memory,
    MemoryWriter,
    memory_problem,
    merge_parts,
    normalize_rows_,
    part_folder,
)
from mcrx.store.paths import cache_root, slug
from mcrx.store.validate_rows import check_rows, refuse_bad_encoded
from mcrx.ui.console import console, progress, rate_text


# ---------------------------------------------------------------------------------------
def _source_items(run: Run, source: DataSource, modality: str, encoder) -> tuple[Any, str, Any]:
    """(items, fingerprint, labels) of a raw-input source."""
    if source.dataset:
        dataset = run.registry.dataset(source.dataset).build(params=source.params)
        items = dataset.items(modality)
        fingerprint = fingerprint_of(source.dataset, source.params, dataset.fingerprint())
        labels = dataset.labels(modality)
    else:
        items = encoder.read_inputs(source.inputs)
        # a folder: every file's size and time; a file (.txt, .npy): the file itself
        listed = items if Path(source.inputs).is_dir() else [source.inputs]
        fingerprint = fingerprint_of(str(source.inputs), files_fingerprint(listed))
        labels = None
    if source.labels is not None:
        labels = read_labels(source.labels)
    if source.limit:
        items = items[: source.limit]
        labels = labels[: source.limit] if labels is not None else None
    return items, fingerprint_of(fingerprint, source.limit), labels


def embed_source(run: Run, source: DataSource, modality: str, space_name: str, what: str):
    """Embeddings of ``source`` in ``space_name``: from the precomputed file named in the
    recipe, from the embedding cache, or encoded now (and cached)."""
    if space_name in source.embeddings:
        path = source.embeddings[space_name]
        array = read_embeddings(path, run.registry.space(space_name).dim)
        if source.limit:
            array = array[: source.limit]
        stat = os.stat(path)
        labels = read_labels(source.labels) if source.labels else None
        if labels is not None and source.limit:
            labels = labels[: source.limit]
        # dropping: memories only, a row bad in any space dropped from all (row alignment);
        # evaluation rows are always refused (dropping would shift paired ground truth)
        drop = run.drop_bad_rows and what.startswith("memories")
        siblings = [read_embeddings(other) for name, other in source.embeddings.items()
                    if name != space_name] if drop else []
        array, labels = check_rows(array, labels, str(path), drop, siblings)
        # one copy out of the file (it may be memory-mapped), normalised in place
        rows = normalize_rows_(torch.from_numpy(np.array(array, dtype=np.float32)))
        fingerprint = fingerprint_of(str(path), stat.st_size, stat.st_mtime_ns, source.limit)
        return Embeddings(rows, fingerprint, labels)

    encoder = run.space(space_name).encoder(modality)
    items, source_fingerprint, labels = _source_items(run, source, modality, encoder)
    dtype = run.recipe.memory_dtype
    key = fingerprint_of(encoder.fingerprint(), source_fingerprint,
                         *([dtype] if dtype != "float32" else []))
    path = cache_root() / "embeddings" / slug(space_name) / modality / key
    memory = checked_memory(run, path)
    if memory is None or not memory.complete:
        meta = {"key": key, "space": space_name, "modality": modality, "source": what,
                "encoder_fingerprint": encoder.fingerprint(),
                "source_fingerprint": source_fingerprint}
        memory, encoded = encode_shared(
            run, encoder, items, path, meta, dtype=dtype,
            description=f"encode {what} ({space_name})",
        )
        run.encoded += encoded
    if memory.count != len(items):
        raise McrxError(f"{path}: cached memory holds {memory.count} rows, expected "
                        f"{len(items)}; delete it to re-encode (rm -r {path})")
    # normalised once into one contiguous file, then memory-mapped: page cache, one copy in
    # RAM however many processes map it; a float16 memory stays float16 (half the bytes)
    # and is widened block by block where it is used. The entry's file lock (not a barrier:
    # evaluation calls this on the main process alone) lets one process write the file
    # while the others wait, then map what it wrote.
    with cache_entry_lock(path):
        rows = memory.mapped_tensor(dtype=None if dtype == "float16" else "float32")
        if run.state.is_main_process:
            note_use(path, run.out)
    return Embeddings(rows, key, labels)


def checked_memory(run: Run, path: Path) -> Memory | None:
    """The cached memory at ``path`` when it may be used (whole, or incomplete: encoding
    resumes it), None when absent or damaged. Under the entry's lock its record is checked
    (sizes and sampled digests, :func:`mcrx.store.memory.memory_problem`; a memory of an
    earlier mcrx gets its record here); a damaged entry — a file missing, truncated or
    rewritten, rows that are not finite — is said in one line and removed, so that it is
    encoded again: a wrong row is never used. Every process of a launch checks the same
    files (the same verdict) before the main process removes anything."""
    with cache_entry_lock(path):
        problem = memory_problem(path)
    if problem is None:
        return Memory(path) if (path / "manifest.json").is_file() else None
    console.print(f"  [yellow]cache entry {escape(str(path))}: {escape(problem)}[/]; "
                  "encoding it again", highlight=False)
    world = run.state.num_processes
    if world > 1:
        run.state.wait_for_everyone()
    if run.state.is_main_process:
        with cache_entry_lock(path):
            if memory_problem(path, upgrade=False) is not None:  # not rebuilt meanwhile
                discard_entry(path)
    if world > 1:
        run.state.wait_for_everyone()
    return Memory(path) if (path / "manifest.json").is_file() else None


def encode_shared(run: Run, encoder, items: Sequence[Any], path: Path, meta: dict[str, Any],
                  dtype: str = "float32", description: str = "encode") -> tuple[Memory, int]:
    """Encode ``items`` into the memory at ``path`` with every launched process: under
    ``torchrun`` / ``accelerate launch`` each process encodes its contiguous share
    (Accelerate's ``split_between_processes``) into its own resumable part, then the main
    process lists the parts' shards in one manifest (:func:`mcrx.store.memory.merge_parts`,
    no row copied). One process writes the memory folder directly, as always."""
    state = run.state
    world = state.num_processes
    if world == 1:  # another run writing the same entry: wait, then resume (= reuse) it
        with cache_entry_lock(path):
            return encode_to_memory(encoder, items, path, meta, workers=run.workers,
                                    dtype=dtype, description=description,
                                    show_progress=run.show_progress)
    with state.split_between_processes(torch.arange(len(items))) as share:
        first, stop = (int(share[0]), int(share[-1]) + 1) if len(share) else (0, 0)
    part = part_folder(path, state.process_index, world)
    # the share's bounds are part of its key: a resumed part must be the same rows
    part_meta = {**meta, "key": f"{meta['key']}:{first}-{stop}", "share": [first, stop]}
    _, encoded = encode_to_memory(encoder, items[first:stop], part, part_meta,
                                  workers=run.workers, dtype=dtype, description=description,
                                  show_progress=run.show_progress)
    state.wait_for_everyone()
    if state.is_main_process:
        merge_parts(path, meta, [part_folder(path, rank, world) for rank in range(world)])
    state.wait_for_everyone()
    return Memory(path), encoded


def encode_memories(run: Run) -> dict[tuple[str, str], Embeddings]:
    """(modality, space) → embeddings of every memory the pseudo pairs need."""
    console.rule("[bold]1 · memories")
    memories = {}
    for modality, spaces in run.chain.needed_memories().items():
        source = run.recipe.memories[modality]
        for space_name in spaces:
            memories[modality, space_name] = embed_source(
                run, source, modality, space_name, f"memories.{modality}"
            )
            console.print(f"  {modality:<11} in {space_name:<16} "
                          f"{len(memories[modality, space_name].rows):>9,} rows")
    # the bridge memory must hold the same items in both spaces
    for link in run.chain.links:
        a, b = memories[link.bridge, link.space].rows, memories[link.bridge, link.parent].rows
        if len(a) != len(b):
            raise McrxError(f"memories.{link.bridge}: {len(a)} rows in {link.space} but "
                            f"{len(b)} in {link.parent}; the bridge memory must be row aligned")
    return memories


def encode_evaluation(run: Run) -> dict[str, dict[str, Embeddings]]:
    """Evaluation set → modality → native embeddings (in the space that embeds it)."""
    sets = {}
    for j, evaluation in enumerate(run.recipe.evaluation):
        sets[evaluation.name] = {
            modality: embed_source(run, source, modality, run.space_of(modality),
                                   f"evaluation.{j}.{modality}")
            for modality, source in evaluation.data.items()
        }
    return sets


# ---------------------------------------------------------------------------------------
# Encoding items into a memory
# ---------------------------------------------------------------------------------------
class _PrepareFailed:
    """A user error raised by ``prepare`` in a DataLoader worker, carried back as data: a
    worker's exception would reach the user wrapped in the worker's traceback."""

    def __init__(self, message: str) -> None:
        self.message = message


class _PreparedItems:
    """Map-style dataset that runs ``encoder.prepare`` (in DataLoader workers)."""

    def __init__(self, items: Sequence[Any], prepare) -> None:
        self.items, self.prepare = items, prepare

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.prepare(self.items[index])
        except McrxError as exc:  # the same one-line error with or without workers
            return _PrepareFailed(str(exc))


def encode_to_memory(
    encoder,
    items: Sequence[Any],
    path: Path,
    meta: dict[str, Any],
    batch_size: int | None = None,
    workers: int = 0,
    dtype: str = "float32",
    shard_rows: int = 65536,
    description: str = "encode",
    show_progress: bool = True,
) -> tuple[Memory, int]:
    """Encode ``items`` into the memory at ``path`` (resuming a partial one).
    Returns the memory and how many items were encoded in this call."""
    writer = MemoryWriter(path, meta, encoder.dim, shard_rows=shard_rows, dtype=dtype)
    start = writer.count
    todo = items[start:]
    batch_size = batch_size or getattr(encoder, "batch_size", 64) or 64
    loader = DataLoader(
        _PreparedItems(todo, encoder.prepare),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=list,  # a batch stays the list of prepared items (picklable for workers)
    )
    done, began = 0, time.perf_counter()
    with progress(disable=not show_progress) as bar:
        task = bar.add_task(description, total=len(items), completed=start, rate="")
        for batch in loader:
            failed = next((p for p in batch if isinstance(p, _PrepareFailed)), None)
            if failed is not None:
                raise McrxError(failed.message)
            with torch.no_grad():
                embeddings = encoder.encode_prepared(batch)
            embeddings = torch.as_tensor(embeddings).float().cpu()
            if embeddings.shape != (len(batch), encoder.dim):
                raise McrxError(
                    f"{description}: the encoder returned shape {tuple(embeddings.shape)} for "
                    f"{len(batch)} items; expected ({len(batch)}, {encoder.dim})"
                )
            refuse_bad_encoded(embeddings.numpy(), description, start + done, items)
            writer.append(embeddings.numpy())
            done += len(batch)
            bar.update(task, advance=len(batch),
                       rate=rate_text(done, time.perf_counter() - began, "items"))
    return writer.close(), done
