"""One indexing run of a collection: walk the inputs, decide per file (unchanged, touched,
a copy, new or changed), embed what must be, commit as it goes.

A file whose size and mtime match its row is not read; one whose stat changed is hashed,
and re-embedded only when its content changed; a new file whose content is already in the
collection (a copy, a move) reuses the stored vector; rows whose path is no longer a
regular file (gone, or replaced by a folder, a link, a FIFO) are dropped. Embedded batches
are committed as they finish, so an interrupted run resumes where it stopped. The whole run
holds the collection's writer lock (:func:`mcrx.search.store.writer_lock`): a second
process waits, then finds the files indexed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcrx.errors import McrxError
from mcrx.search.embedding import embed_files
from mcrx.search.files import FileStat, content_hash, is_regular_file, walk_inputs
from mcrx.search.store import from_db

if TYPE_CHECKING:  # pragma: no cover
    from mcrx.search.collection import Collection

#: items embedded (and committed) per step when indexing, at most
EMBED_CHUNK = 256


@dataclass
class IndexReport:
    """What one :meth:`Collection.index` run did."""

    added: int = 0  # new files, embedded
    changed: int = 0  # content changed: re-embedded
    reused: int = 0  # new path, content already in the collection: stored vector reused
    touched: int = 0  # stat changed, content did not: not re-embedded
    unchanged: int = 0  # stat matched: not even read
    dropped: int = 0  # files gone (or no longer regular files): removed
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # links out, non-files
    seconds: float = 0.0

    @property
    def embedded(self) -> int:
        return self.added + self.changed

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "embedded": self.embedded,
                "failed": [{"path": p, "error": e} for p, e in self.failed],
                "skipped": [{"path": p, "reason": e} for p, e in self.skipped]}


def run_index(collection: Collection, inputs: Sequence[str | Path], modality: str | None,
              show_progress: bool, follow_links: bool) -> IndexReport:
    """See :meth:`Collection.index`."""
    from mcrx.ui.console import progress, rate_text

    started = time.perf_counter()
    report = IndexReport()
    store = collection.store
    model_modalities = collection.model_modalities
    if modality is not None and modality not in model_modalities:
        raise McrxError(f"the model of {collection.path} embeds "
                        f"{', '.join(model_modalities)}, not {modality!r}")

    def encoder_for(name: str):
        model = collection.model
        return model.space(model.space_of(name)).encoder(name)

    walk = walk_inputs(inputs, modality, model_modalities, encoder_for, follow_links)
    report.skipped.extend(walk.skipped)
    with store.writer_lock(), progress(disable=not show_progress) as bar:
        roots = store.meta().roots
        if any(root not in roots for root in walk.roots):
            store.set_meta(roots=json.dumps(roots + [r for r in walk.roots if r not in roots]))
        known = {from_db(row[1]): row for row in store.all(
            "SELECT id, path, modality, size, mtime_ns, sha256, dev FROM items")}
        # 1. decide per file, reading only those whose stat changed
        checking = bar.add_task("checking files", total=len(walk.files), rate="")
        pending: list[tuple[Path, str, FileStat, str, int | None]] = []
        refreshed: list[tuple[int, FileStat]] = []
        reuse: list[tuple[Path, str, FileStat, str, int | None, bytes]] = []
        for path, file_modality in walk.files:
            bar.advance(checking)
            try:
                stat = FileStat.of(path)
                row = known.get(str(path))
                same_modality = row is not None and row[2] == file_modality
                if same_modality and (row[3], row[4]) == (stat.size, stat.mtime_ns):
                    report.unchanged += 1
                    if row[6] is None:  # a row of an older format: record dev/ino
                        refreshed.append((row[0], stat))
                    continue
                sha = content_hash(path)
            except OSError as exc:
                report.failed.append((str(path), f"cannot read: {exc.strerror or exc}"))
                continue
            if same_modality and row[5] == sha:
                refreshed.append((row[0], stat))
                report.touched += 1
                continue
            stored = store.one("SELECT vector FROM items WHERE modality = ? AND sha256 = ? "
                               "LIMIT 1", (file_modality, sha))
            item_id = row[0] if row is not None else None
            if stored is not None:
                reuse.append((path, file_modality, stat, sha, item_id, stored[0]))
            else:
                pending.append((path, file_modality, stat, sha, item_id))
        # a path that is no longer a regular file (gone, a folder, a link) loses its row
        gone = [row for path, row in known.items() if not is_regular_file(path)]

        # 2. rows that need no embedding, in one transaction
        with store.transaction() as db:
            for item_id, stat in refreshed:
                db.execute("UPDATE items SET size = ?, mtime_ns = ?, dev = ?, ino = ? "
                           "WHERE id = ?", (stat.size, stat.mtime_ns, stat.dev, stat.ino,
                                            item_id))
            for path, file_modality, stat, sha, item_id, vector in reuse:
                store.upsert(db, path, file_modality, stat, sha, item_id, vector)
                report.reused += 1
            for row in gone:
                db.execute("DELETE FROM items WHERE id = ?", (row[0],))
                report.dropped += 1
            store.bump(db, {row[2] for row in gone} | {r[1] for r in reuse}
                       | {known[str(r[0])][2] for r in reuse if r[4] is not None})

        # 3. embed, one modality at a time, committing every chunk
        embedding = bar.add_task("embedding", total=len(pending), rate="")
        done, embed_started = 0, time.perf_counter()
        for file_modality in sorted({p[1] for p in pending}):
            group = [p for p in pending if p[1] == file_modality]
            chunk_size = min(EMBED_CHUNK, max(1, encoder_for(file_modality).batch_size))
            for start in range(0, len(group), chunk_size):
                chunk = group[start : start + chunk_size]
                vectors, failures = embed_files(collection, file_modality,
                                                [p[0] for p in chunk])
                report.failed.extend(failures)
                added = changed = 0
                with store.transaction() as db:
                    for (path, _, stat, sha, item_id), vector in zip(chunk, vectors,
                                                                     strict=True):
                        if vector is None:
                            continue
                        store.upsert(db, path, file_modality, stat, sha, item_id,
                                     vector.tobytes())
                        added += item_id is None
                        changed += item_id is not None
                    # a file indexed before as another modality leaves that index too
                    store.bump(db, {file_modality} | {known[str(p[0])][2] for p in chunk
                                                      if p[4] is not None})
                report.added += added  # counted once committed: reported = stored
                report.changed += changed
                done += len(chunk)
                bar.update(embedding, advance=len(chunk), rate=rate_text(
                    done, time.perf_counter() - embed_started, "items"))
        collection.indexes.refresh(write=True)
    report.seconds = time.perf_counter() - started
    return report


def remove_paths(collection: Collection, paths: Sequence[str | Path]) -> int:
    """Drop the items of ``paths`` (files or folders: everything under them)."""
    from mcrx.search.store import inside

    store = collection.store
    removed = set()
    with store.writer_lock(), store.transaction() as db:
        targets = [str(Path(raw).expanduser().resolve()) for raw in paths]
        for item_id, stored, modality in db.execute(
                "SELECT id, path, modality FROM items").fetchall():
            if any(inside(from_db(stored), target) for target in targets):
                db.execute("DELETE FROM items WHERE id = ?", (item_id,))
                removed.add((item_id, modality))
        store.bump(db, {modality for _, modality in removed})
    collection.indexes.refresh(write=True)
    return len(removed)


__all__ = ["EMBED_CHUNK", "IndexReport", "remove_paths", "run_index"]
