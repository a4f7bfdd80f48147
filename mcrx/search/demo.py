"""Files for the offline search demo: held-out items of the toy world as ``.npy`` files.

    python -m mcrx.search.demo runs/search-demo --count 100

writes ``OUT/files/<modality>/class-<c>/<modality>-<i>.npy`` (the items to index: one raw
toy vector each, the class in the folder name, every class about equally often) and
``OUT/queries/<modality>/...`` (other held-out items of the same world, to search with).
Every modality draws its own items, so a query finds items of its class, never its own
rendering in another modality.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mcrx.store.atomic import atomic_path

MODALITIES = ("image", "text", "audio", "pointcloud")


def write_demo_files(out: str | Path, count: int = 100, queries: int = 10,
                     modalities: tuple[str, ...] = MODALITIES, seed: int = 0) -> dict[str, Path]:
    """Write the demo's item and query files under ``out``; returns their two folders."""
    from mcrx_toy.config import WorldDatasetParams
    from mcrx_toy.dataset import WorldDataset

    out = Path(out)
    folders = {"files": out / "files", "queries": out / "queries"}
    for offset, modality in enumerate(modalities):
        # a distinct sampling seed per modality: the modalities share no latent item; draw
        # more than needed, then keep the classes balanced (every class has items to find)
        pool = 3 * (count + queries) + 200
        dataset = WorldDataset(WorldDatasetParams(split="eval", count=pool, seed=seed + offset))
        items, labels = dataset.items(modality), dataset.labels(modality)
        cap = max(1, count // dataset.params.world.classes)
        chosen: list[int] = []
        taken: dict[int, int] = {}
        for i in range(pool):  # first up to `cap` of every class, then any, up to `count`
            if len(chosen) < count and taken.get(int(labels[i]), 0) < cap:
                chosen.append(i)
                taken[int(labels[i])] = taken.get(int(labels[i]), 0) + 1
        picked = set(chosen)
        rest = [i for i in range(pool) if i not in picked]
        extra = count - len(chosen)
        chosen += rest[:extra]
        held_out = rest[extra:]
        for kind, rows in (("files", sorted(chosen)), ("queries", held_out[:queries])):
            for number, i in enumerate(rows):
                path = (folders[kind] / modality / f"class-{int(labels[i]):02d}"
                        / f"{modality}-{number:04d}.npy")
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                    np.save(handle, np.asarray(items[i], dtype=np.float32))
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write files/ and queries/ into")
    parser.add_argument("--count", type=int, default=100, help="items per modality to index")
    parser.add_argument("--queries", type=int, default=10, help="query items per modality")
    args = parser.parse_args()
    folders = write_demo_files(args.out, args.count, args.queries)
    print(f"wrote {args.count} items per modality under {folders['files']} and "
          f"{args.queries} queries per modality under {folders['queries']}")


if __name__ == "__main__":
    main()
