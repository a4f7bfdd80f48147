"""``mcrx plan``: what a recipe will cost, before anything is encoded.

Per stage: rows, pseudo pairs, FLOPs, bytes on disk and in RAM, and an estimated time on
this machine's device (from a short measured matrix-product rate) and on a named device
class; warnings where RAM or disk will not suffice. ``mcrx extend`` prints it first.

Where the numbers come from:

- rows: counted from the sources without encoding (lines of a .txt, files of a folder, rows
  of a .npy, a dataset's items), capped by ``limit``; a source that is not on this machine
  yet is assumed to hold ``limit`` rows (flagged), so a plan for the paper's setting can be
  made before the data is.
- pseudo-pair FLOPs: counted by hand from the papers' pools (each softmax retrieval of Q
  queries over M rows with values of widths d_v costs 2·Q·M·d for the logits and
  2·Q·M·Σd_v for the weighted sums, see :func:`retrieval_flops`), only matrix products
  counted; ``tests/stages/test_plan.py`` checks them against the products torch executes.
- training FLOPs: the recipe's connector and loss are built with random weights and one
  forward + backward is counted by torch's FLOP counter at two batch sizes; FLOPs per step
  are α·B + β·B² exactly (per-row layers, then the B×B InfoNCE products), so two counts
  give both terms, for any connector or loss a plugin registers.
- time: FLOPs ÷ a measured ``torch.mm`` rate (this machine) or a nominal sustained float32
  rate (``DEVICE_CLASSES``); retrieval runs near mm's rate (benchmarks/bench_retrieval.py),
  training far below it on a CPU (the B×B elementwise work, see DEPS.md), so training times
  are lower bounds.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mcrx.plugin.registry import Registry
from mcrx.recipe.chain import Chain, Link, resolve_chain
from mcrx.recipe.schema import DataSource, Recipe
from mcrx.store.paths import cache_root

#: nominal sustained float32 matrix-product rates (FLOP/s): ~75% of the datasheet's dense
#: FP32 peak for GPUs (H100 SXM 67 TFLOP/s, RTX 4090 82.6), a 32-core AVX-512 server for cpu
DEVICE_CLASSES = {"h100": 5.0e13, "4090": 6.2e13, "cpu": 1.5e12}

#: bytes a pseudo-pair chunk and a retrieval tile need besides the memories (float32)
CHUNK_ROWS = 65536


@dataclass
class Stage:
    """One stage of the plan."""

    name: str
    rows: int = 0  # rows it reads (memories) or makes (pseudo pairs) or trains on
    flops: float = 0.0
    disk_bytes: int = 0  # what it writes
    ram_bytes: int = 0  # its peak resident set beside the interpreter and libraries
    seconds: float | None = None  # on this machine's device
    seconds_on_class: float | None = None  # on --device-class
    notes: list[str] = field(default_factory=list)


@dataclass
class Plan:
    recipe: str
    device: str
    rate_flops: float  # measured here
    device_class: str | None
    class_rate_flops: float | None
    memories: list[dict[str, Any]]
    stages: list[Stage]
    warnings: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------
# Rows, without encoding
# ---------------------------------------------------------------------------------------
def source_rows(source: DataSource, modality: str, space: str, registry: Registry
                ) -> tuple[int, bool]:
    """(rows, assumed): how many items ``source`` holds, counted without encoding;
    ``assumed`` when the source is not readable here and ``limit`` stands in for it."""
    count: int | None = None
    if space in source.embeddings and Path(source.embeddings[space]).is_file():
        from mcrx.store.inputs import read_embeddings

        count = len(read_embeddings(source.embeddings[space]))
    elif source.dataset:
        dataset = registry.dataset(source.dataset).build(params=source.params)
        count = len(dataset.items(modality))
    elif source.inputs is not None and Path(source.inputs).exists():
        path = Path(source.inputs)
        if path.is_dir():
            count = sum(1 for item in path.rglob("*") if item.is_file()
                        and not item.name.startswith("."))
        elif path.suffix == ".npy":
            count = int(np.load(path, mmap_mode="r").shape[0])
        else:
            with open(path, "rb") as handle:
                count = sum(1 for line in handle if line.strip())
    if count is None:
        return int(source.limit or 0), True
    return (min(count, source.limit) if source.limit else count), False


# ---------------------------------------------------------------------------------------
# FLOPs, counted by hand
# ---------------------------------------------------------------------------------------
def retrieval_flops(queries: int, rows: int, dim: int, value_dims: list[int],
                    mode: str = "exact", k: int = 256, nlist: int | None = None,
                    nprobe: int = 32, index: str = "ivf-flat", ef_search: int = 64,
                    hnsw_m: int = 32, ef_construction: int = 80) -> float:
    """Matrix-product FLOPs of one softmax retrieval of ``queries`` over ``rows``.

    exact:  logits 2·Q·M·d, weighted sums 2·Q·M·Σd_v;
    top-k:  the same logits, then 2·Q·k·Σd_v for the sums over the k kept rows;
    ann, ivf-flat: the IVF quantizer 2·Q·nlist·d, the visited lists 2·Q·(nprobe/nlist)·M·d,
            the sums 2·Q·k·Σd_v (k-means on a sample not counted);
    ann, hnsw: at most 2·hnsw_m neighbours scored per node expanded, ef nodes expanded per
            search: 2·Q·ef·2m·d, plus the build (one such search per row at ef_construction,
            2·M·ef_c·2m·d), plus the sums 2·Q·k·Σd_v. An upper bound on the distances."""
    if mode == "exact":
        return 2.0 * queries * rows * (dim + sum(value_dims))
    k = min(k, rows)
    sums = 2.0 * queries * k * sum(value_dims)
    if mode == "top-k":
        return 2.0 * queries * rows * dim + sums
    if index == "hnsw":
        beam = max(ef_search, k)
        return (2.0 * queries * beam * 2 * hnsw_m * dim
                + 2.0 * rows * ef_construction * 2 * hnsw_m * dim + sums)
    lists = nlist or max(1, min(int(4 * math.sqrt(rows)), rows // 39))
    visited = rows * min(nprobe, lists) / lists
    return 2.0 * queries * (lists + visited) * dim + sums


def pairs_flops(method: str, n: dict[str, int], d: dict[str, int], retrieval) -> float:
    """FLOPs of one leaf's pseudo pairs. ``n``/``d``: rows/width per role (leaf_x,
    leaf_bridge, parent_bridge, parent_y). Pools as in :mod:`mcrx.methods.exmcr`:

    bridge-centric (both papers): B^P → Y^P and B^L → X^L, N_b queries each;
    leaf-centric (Ex-MCR): X^L → B^L carrying [B^L, B^P], then b̃^P → Y^P, N_x queries;
    parent-centric (Ex-MCR): Y^P → B^P carrying [B^P, B^L], then b̃^L → X^L, N_y queries."""
    ann = retrieval.ann
    kw = {"mode": retrieval.mode, "k": retrieval.k, "nlist": ann.nlist, "nprobe": ann.nprobe,
          "index": ann.index, "ef_search": ann.ef_search, "hnsw_m": ann.hnsw_m,
          "ef_construction": ann.ef_construction}
    nx, nb, ny = n["leaf_x"], n["leaf_bridge"], n["parent_y"]
    dl, dp = d["leaf_x"], d["parent_y"]
    flops = (retrieval_flops(nb, ny, dp, [dp], **kw)
             + retrieval_flops(nb, nx, dl, [dl], **kw))
    if method == "mcrx/ex-mcr":
        flops += (retrieval_flops(nx, nb, dl, [dl, dp], **kw)
                  + retrieval_flops(nx, ny, dp, [dp], **kw)
                  + retrieval_flops(ny, nb, dp, [dp, dl], **kw)
                  + retrieval_flops(ny, nx, dl, [dl], **kw))
    return flops


def pairs_count(method: str, n: dict[str, int]) -> int:
    if method == "mcrx/ex-mcr":
        return n["leaf_bridge"] + n["leaf_x"] + n["parent_y"]
    return n["leaf_bridge"]


def training_step_flops(chain: Chain, link: Link, registry: Registry, recipe: Recipe,
                        dims: dict[str, int]) -> tuple[float, float]:
    """(α, β) with FLOPs of one training step = α·B + β·B², forward and backward, counted by
    torch on the recipe's own connector and loss (random weights) at two batch sizes."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mcrx.methods.common import ConnectorSpec

    spec = ConnectorSpec(
        leaf_dim=dims[link.space], parent_dim=dims[link.parent], bridge=link.bridge,
        leaf_modality=link.leaf_modality, parent_modality=link.parent_modality,
        leaf_modalities=list(registry.space(link.space).modalities),
        parent_modalities=list(registry.space(link.parent).modalities))
    connector = registry.connector(chain.connector_name).build(
        spec, params=chain.connector_params)
    loss_fn = registry.loss(chain.loss_name).build(recipe.training)
    widths = {"leaf_x": spec.leaf_dim, "leaf_bridge": spec.leaf_dim,
              "parent_bridge": spec.parent_dim, "parent_y": spec.parent_dim}
    counts = []
    for batch_size in (32, 64):
        batch = {role: torch.nn.functional.normalize(torch.randn(batch_size, w), dim=-1)
                 for role, w in widths.items()}
        with FlopCounterMode(display=False) as counter:
            loss, _ = loss_fn(connector(batch), batch)
            loss.backward()
        counts.append(float(counter.get_total_flops()))
    # f(b) = α·b + β·b²: f(32) = 32α + 1024β, f(64) = 64α + 4096β
    beta = (counts[1] - 2 * counts[0]) / (64 * 64 - 2 * 32 * 32)
    alpha = (counts[0] - beta * 32 * 32) / 32
    return alpha, beta


# ---------------------------------------------------------------------------------------
# The device
# ---------------------------------------------------------------------------------------
def measured_rate(device: str = "cpu", n: int = 1024, seconds: float = 0.3) -> float:
    """FLOP/s of a float32 ``torch.mm`` of two n×n matrices on ``device``, best of a short
    loop (a plan must not take long; retrieval reaches about this rate)."""
    import torch

    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)
    best, began = 0.0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        t = time.perf_counter()
        torch.mm(a, b)
        if device != "cpu":
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 / max(time.perf_counter() - t, 1e-9))
    return best


def available_ram() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def free_disk(path: Path) -> int:
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


# ---------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------
def declared_dim(registry: Registry, name: str, params: dict | None = None) -> int | None:
    """The width of space ``name`` as its plugin declares it, without building the space:
    ``register(dim=)``, else, for a family (``clip/*``) whose members differ, the
    factory's ``dim_of(full_name, params)`` (the clip plugin reads open_clip's config)."""
    spec = registry.space(name)
    if spec.dim is not None:
        return spec.dim
    dim_of = getattr(spec.factory, "dim_of", None)
    if dim_of is None:
        return None
    try:
        dim = dim_of(name, params)
    except Exception:  # noqa: BLE001  (a plugin's guess must never stop a plan)
        return None
    return dim if isinstance(dim, int) and dim > 0 else None


def make_plan(recipe: Recipe, registry: Registry, device_class: str | None = None,
              device: str = "cpu", rate: float | None = None) -> Plan:
    """The plan of ``recipe`` (nothing is encoded, no weights are loaded)."""
    chain = resolve_chain(recipe, registry)
    itemsize = 2 if recipe.memory_dtype == "float16" else 4
    dims: dict[str, int] = {}
    warnings: list[str] = []
    for ref in recipe.space_refs():
        dim = declared_dim(registry, ref.space, ref.params)
        dims[ref.space] = dim or 512
        if dim is None:
            spec = registry.space(ref.space)
            warnings.append(f"{ref.space}: the {spec.plugin} plugin declares no dimension "
                            f"for {spec.name}; 512 assumed")

    # -- 1 encode ------------------------------------------------------------------------
    memories, rows_of = [], {}
    for modality, spaces in chain.needed_memories().items():
        for space in spaces:
            rows, assumed = source_rows(recipe.memories[modality], modality, space, registry)
            rows_of[modality, space] = rows
            memories.append({"modality": modality, "space": space, "rows": rows,
                             "dim": dims[space], "bytes": rows * dims[space] * itemsize,
                             "assumed": assumed})
            warning = (f"memories.{modality}: not readable here; its limit ({rows:,} rows) "
                       "is assumed")
            if assumed and warning not in warnings:
                warnings.append(warning)
    memory_bytes = sum(m["bytes"] for m in memories)
    # the shards, and the normalised contiguous copy the stages memory-map beside them
    encode = Stage("1 encode", rows=sum(m["rows"] for m in memories),
                   disk_bytes=2 * memory_bytes, ram_bytes=memory_bytes)
    encode.notes.append("encoder cost depends on the model; cached memories are skipped")
    encode.notes.append("disk: the shards and one normalised copy that the stages map (page "
                        "cache: one copy in RAM for all processes)")

    # -- 2 pseudo pairs ------------------------------------------------------------------
    retrieval = recipe.retrieval
    pairs = Stage("2 pseudo pairs")
    pair_counts: dict[str, int] = {}
    # an ann index holds its own copy of a memory (in the memory's dtype) and, for HNSW, a
    # graph of 2·hnsw_m int32 neighbours per row; the pools keep two indexes mapped at a
    # time (page cache, shared by the processes of a launch)
    graph = 2 * retrieval.ann.hnsw_m * 4 if retrieval.ann.index == "hnsw" else 8  # ids: int64
    largest_two = sorted((m["rows"] * (m["dim"] * itemsize + graph) for m in memories),
                         reverse=True)[:2]
    for link in chain.links:
        roles = dict(zip(("leaf_x", "leaf_bridge", "parent_bridge", "parent_y"),
                         link.memory_keys(), strict=True))
        n = {role: rows_of[key] for role, key in roles.items()}
        d = {role: dims[space] for role, (_, space) in roles.items()}
        count = pairs_count(chain.method.name, n)
        pair_counts[link.space] = count
        pairs.rows += count
        pairs.flops += pairs_flops(chain.method.name, n, d, retrieval)
        pairs.disk_bytes += count * sum(d.values()) * itemsize
    if chain.method.name not in ("mcrx/ex-mcr", "mcrx/c-mcr"):
        pairs.notes.append(f"{chain.method.name}: a plugin's method; its bridge-centric pool "
                           "is counted, other pools it may have are not")
    tile = retrieval.query_block * retrieval.memory_block * 4
    chunk = CHUNK_ROWS * 4 * 2 * (2 * max(dims.values()))  # a chunk's rows and its queries
    pairs.ram_bytes = memory_bytes + 2 * tile + chunk
    if retrieval.mode == "ann":
        pairs.ram_bytes += sum(largest_two)
        # every memory's index is kept in the cache ($MCRX_CACHE_DIR/ann), read mapped
        pairs.disk_bytes += sum(m["rows"] * (m["dim"] * itemsize + graph) for m in memories)
        if retrieval.ann.index == "hnsw":
            # measured on this 2-core CPU (benchmarks/bench_ann.py): build and search run at
            # ~0.1 of torch.mm's FLOP rate (scattered rows, not tiles)
            pairs.notes.append(f"ann hnsw, k={retrieval.k}: graph build and search counted, "
                               "but they run near 0.1 of the matrix-product rate: the time "
                               "is a lower bound; deviation from exact measured and reported")
        else:
            pairs.notes.append(f"ann {retrieval.ann.index}, k={retrieval.k}: index build not "
                               "counted; deviation from exact measured and reported")
    pairs.notes.append(f"kept in the cache ({cache_root() / 'pairs'}), keyed by fingerprint: "
                       "another output folder reuses them")

    # -- 3 train -------------------------------------------------------------------------
    train = Stage("3 train")
    batch = recipe.training.batch_size
    for link in chain.links:
        count = pair_counts[link.space]
        b = min(batch, count)
        steps = recipe.training.epochs * (count // b if b else 0)
        try:
            alpha, beta = training_step_flops(chain, link, registry, recipe, dims)
            train.flops += steps * (alpha * b + beta * b * b)
        except Exception as exc:  # a plugin's connector that cannot be built offline
            train.notes.append(f"{link.space}: FLOPs unknown ({exc})")
        train.rows += steps * b
    train.disk_bytes = 0
    train.ram_bytes = batch * 4 * 2 * sum(dims.values()) * 8  # a batch, activations, B×B
    train.ram_bytes += 4 * batch * batch * 4  # the (B, B) logits and their gradients
    train.notes.append("lower bound on a CPU: the B×B elementwise work is not counted")

    # -- 4 evaluate ----------------------------------------------------------------------
    evaluate = Stage("4 evaluate")
    for evaluation in recipe.evaluation:
        for modality, source in evaluation.data.items():
            space = chain.space_of(modality, registry)
            rows, _ = source_rows(source, modality, space, registry)
            evaluate.rows += rows
            # every ordered pair of modalities, for the unified model, native spaces and
            # the baseline: about three (n × n × d) similarity products per direction
            evaluate.flops += 3 * 2.0 * rows * rows * dims[space] * (len(evaluation.data) - 1)

    stages = [encode, pairs, train, evaluate]
    rate = rate or measured_rate(device)
    class_rate = DEVICE_CLASSES[device_class] if device_class else None
    for stage in stages:
        if stage.flops:
            stage.seconds = stage.flops / rate
            stage.seconds_on_class = stage.flops / class_rate if class_rate else None

    peak_ram = max(stage.ram_bytes for stage in stages)
    if peak_ram > available_ram():
        hint = (" (memory_dtype: float16 halves the memories)"
                if recipe.memory_dtype == "float32" else "")
        warnings.append(f"RAM: the pseudo-pair stage needs ~{_gib(peak_ram)} but "
                        f"{_gib(available_ram())} is available{hint}")
    disk = memory_bytes + pairs.disk_bytes
    if disk > free_disk(cache_root()):
        warnings.append(f"disk: memories and pseudo pairs need {_gib(disk)} under "
                        f"{cache_root()} but {_gib(free_disk(cache_root()))} is free")
    return Plan(recipe=recipe.name, device=device, rate_flops=rate, device_class=device_class,
                class_rate_flops=class_rate, memories=memories, stages=stages,
                warnings=warnings)


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def print_plan(plan: Plan) -> None:
    """The plan as tables on the stderr console."""
    from rich.markup import escape
    from rich.table import Table

    from mcrx.ui.console import console

    console.rule(f"[bold]plan · {escape(str(plan.recipe))}")
    memories = Table("memory", "space", "rows", "dim", "RAM / disk", box=None)
    for m in plan.memories:
        memories.add_row(m["modality"], m["space"],
                         f"{m['rows']:,}" + (" (limit, assumed)" if m["assumed"] else ""),
                         str(m["dim"]), _gib(m["bytes"]))
    console.print(memories)
    here = f"time here ({plan.device}, {plan.rate_flops / 1e9:,.0f} GFLOP/s)"
    columns = ["stage", "rows", "FLOPs", "disk", "RAM", here]
    if plan.device_class:
        columns.append(f"time on {plan.device_class}")
    table = Table(*columns, box=None)
    for stage in plan.stages:
        row = [stage.name, f"{stage.rows:,}", f"{stage.flops:.3g}" if stage.flops else "—",
               _gib(stage.disk_bytes), _gib(stage.ram_bytes), _duration(stage.seconds)]
        if plan.device_class:
            row.append(_duration(stage.seconds_on_class))
        table.add_row(*row)
    console.print(table)
    for stage in plan.stages:
        for note in stage.notes:
            console.print(f"  [dim]{stage.name}: {escape(note)}[/]", highlight=False)
    for warning in plan.warnings:
        console.print(f"  [yellow]warning[/]: {escape(warning)}", highlight=False)
