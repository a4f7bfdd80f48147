"""Files for the offline search demo: held-out items of the toy world as ``.npy`` files.

    python -m mcrx.search.demo runs/search-demo --count 100

writes ``OUT/files/<modality>/class-<c>/<modality>-<i>.npy`` (the items to index: one raw
toy vector each, the class in the folder name) and ``OUT/queries/<modality>/...`` (other
held-out items of the same world, to search with). Every modality draws its own items, so
a query finds items of its class, never its own rendering in another modality.
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
    total = count + queries
    for offset, modality in enumerate(modalities):
        # a distinct sampling seed per modality: the modalities share no latent item
        dataset = WorldDataset(WorldDatasetParams(split="eval", count=total, seed=seed + offset))
        items, labels = dataset.items(modality), dataset.labels(modality)
        for i in range(total):
            kind, number = ("files", i) if i < count else ("queries", i - count)
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
