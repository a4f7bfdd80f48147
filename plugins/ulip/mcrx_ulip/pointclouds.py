"""Point clouds from files and arrays, prepared as ULIP-2 PointBERT expects them.

Formats (all readers are written here; no trimesh or plyfile needed):

- ``.npy``: an N×3 (xyz) or N×C array, C > 3 (xyz + rgb, normals, ...), or the dict layout
  of the C-MCR / Ex-MCR demo assets (a pickled 0-d object array holding a dict with an
  ``xyz`` entry). Such pickles are read with a restricted unpickler that only rebuilds
  numpy arrays, dtypes and plain containers: ``np.load(allow_pickle=True)`` would run any
  callable a crafted file names, this refuses them.
- ``.ply``: ASCII and binary (little or big endian); a mesh (with faces) is sampled on its
  surface, otherwise its vertices are the points.
- ``.obj`` and ``.off``: meshes, sampled on their surface (area-weighted, fixed seed).

Preparation (:func:`prepare_cloud`) keeps xyz (the released model reads xyz only; rgb and
normals are dropped) and then, by its two options:

- ``sampling``: ``"none"`` takes the cloud as it is, whatever its number of points (PointBERT
  groups any N >= its number of groups; fewer is an error); ``"fps"`` thins clouds with more
  than ``npoints`` points by farthest point sampling, whose first point is drawn from
  ``fps_seed`` as ULIP's ``farthest_point_sample`` draws it (``np.random.randint(0, N)``),
  or is point 0 with ``fps_seed`` None; ``"random"`` thins them to a sorted seeded random
  subset. ``"fps"`` and ``"random"`` pad clouds with fewer than ``npoints`` points with
  seeded repeats (ULIP's loaders have no such case: their files hold 8192 or 10k points).
- ``normalize``: centre on the centroid and scale so the farthest point is at distance 1,
  ULIP's ``pc_normalize`` / ``pc_norm``, after sampling as in ULIP's loaders.

What each pipeline does (salesforce/ULIP at commit 1998594, the code of the ULIP-2 release
of May 2023; MCR-PEFT/Ex-MCR at 0f2baa5 and MCR-PEFT/C-MCR at 038dec1):

- ULIP's loaders (``data/dataset_3d.py``): ModelNet40 thins to ``npoints`` with
  ``farthest_point_sample`` (random start) only when the file has more, then
  ``pc_normalize``; ShapeNet / Objaverse do the same (or a random subset), then ``pc_norm``.
- C-MCR and Ex-MCR (``cmcr/trunks.py`` / ``exmcr/trunks.py``,
  ``load_and_transform_point_cloud_data`` and ``get_3d_feature``): ``np.load(...).item()``,
  ``obj['xyz']`` (10,000 float16 points in their Objaverse files), ``.float()``, one cloud
  per forward pass: no sampling, no centring, no scaling (``sampling: none``,
  ``normalize: false``).

Everything is deterministic: the same input always gives the same cloud.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mcrx import McrxError

POINTCLOUD_SUFFIXES = (".npy", ".ply", ".obj", ".off")
SEED = 0  # every random draw of the preparation (mesh sampling, random subsets, padding)


# ---------------------------------------------------------------------------------------
# .npy, including the pickled dict layout of the C-MCR / Ex-MCR assets
# ---------------------------------------------------------------------------------------
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays, dtypes and builtin containers (dict, list, str, numbers);
    refuses every other global, so a crafted file cannot call anything."""

    ALLOWED = {
        (module, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    } | {("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _npy_dtype(f: Any) -> np.dtype:
    """The dtype in the header of an open ``.npy`` file (the file is left after the header)."""
    version = np.lib.format.read_magic(f)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    return read_header(f)[2]


def read_npy(path: str | Path) -> Any:
    """The content of a ``.npy`` file: an array, or, for a pickled object array (the demo
    assets' dict), the unpickled object read with :class:`_NumpyOnlyUnpickler`."""
    with open(path, "rb") as f:
        if not _npy_dtype(f).hasobject:
            f.seek(0)
            return np.lib.format.read_array(f, allow_pickle=False)
        array = _NumpyOnlyUnpickler(io.BytesIO(f.read())).load()
    if not isinstance(array, np.ndarray):
        raise McrxError(f"{path}: the pickled content is a {type(array).__name__}, not an array")
    return array.item() if array.shape == () else array


def _points_from_npy(path: str | Path) -> np.ndarray:
    try:
        content = read_npy(path)
    except (pickle.UnpicklingError, ValueError, EOFError, OSError) as exc:
        raise McrxError(f"{path}: cannot read this .npy file ({exc})") from None
    if isinstance(content, dict):
        if "xyz" not in content:
            raise McrxError(f"{path}: a dict without an 'xyz' entry (keys: {sorted(content)})")
        content = content["xyz"]
    return as_points(content, str(path))


def as_points(array: Any, what: str = "array") -> np.ndarray:
    """An (N, 3) float32 xyz array from an N×C array (C >= 3; extra channels dropped)."""
    if hasattr(array, "detach"):  # a torch tensor
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[1] < 3 or array.shape[0] < 1:
        raise McrxError(f"{what}: expected an N×3 or N×6 array of points, got shape "
                        f"{tuple(array.shape)}")
    if not np.issubdtype(array.dtype, np.number):
        raise McrxError(f"{what}: expected numbers, got {array.dtype}")
    points = np.ascontiguousarray(array[:, :3], dtype=np.float32)
    if not np.isfinite(points).all():
        raise McrxError(f"{what}: the points contain NaN or infinite coordinates")
    return points


# ---------------------------------------------------------------------------------------
# .ply
# ---------------------------------------------------------------------------------------
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def _ply_header(raw: bytes, path: str) -> tuple[str, list[dict[str, Any]], int]:
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise McrxError(f"{path}: not a PLY file (no 'ply' … 'end_header' header)")
    body_start = raw.index(b"\n", end) + 1
    fmt, elements = "", []
    for line in raw[:end].decode("ascii", errors="replace").splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "element":
            elements.append({"name": words[1], "count": int(words[2]), "props": []})
        elif words[0] == "property" and elements:
            if words[1] == "list":  # property list <count type> <item type> <name>
                prop = (words[4], _PLY_TYPES[words[2]], _PLY_TYPES[words[3]])
            else:
                prop = (words[2], None, _PLY_TYPES[words[1]])
            elements[-1]["props"].append(prop)
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise McrxError(f"{path}: unsupported PLY format {fmt!r}")
    return fmt, elements, body_start


def _read_list_rows(values: np.ndarray | bytes, count: int, count_type: str, item_type: str,
                    offset: int, endian: str | None) -> tuple[list[np.ndarray], int]:
    """``count`` rows of one list property, starting at ``offset`` (an index into a flat
    float array for ASCII, a byte offset for binary; ``endian`` None means ASCII).
    Returns the rows and the offset after them. Fast path when every row has the same
    length (triangle meshes): one reshape; otherwise row by row."""
    if count == 0:
        return [], offset
    if endian is None:
        first = int(values[offset])
        block = values[offset: offset + count * (first + 1)]
        if block.size == count * (first + 1):
            table = block.reshape(count, first + 1)
            if (table[:, 0] == first).all():
                return list(table[:, 1:].astype(np.int64)), offset + block.size
        rows = []
        for _ in range(count):
            n = int(values[offset])
            rows.append(values[offset + 1: offset + 1 + n].astype(np.int64))
            offset += n + 1
        return rows, offset
    count_dtype, item_dtype = np.dtype(endian + count_type), np.dtype(endian + item_type)
    first = int(np.frombuffer(values, count_dtype, 1, offset)[0])
    row = np.dtype([("n", count_dtype), ("items", item_dtype, (first,))])
    if offset + count * row.itemsize <= len(values):
        table = np.frombuffer(values, row, count, offset)
        if (table["n"] == first).all():
            return list(table["items"].astype(np.int64)), offset + count * row.itemsize
    rows = []
    for _ in range(count):
        n = int(np.frombuffer(values, count_dtype, 1, offset)[0])
        offset += count_dtype.itemsize
        rows.append(np.frombuffer(values, item_dtype, n, offset).astype(np.int64))
        offset += n * item_dtype.itemsize
    return rows, offset


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Vertices (N, 3) and triangles (F, 3) (None without faces) of a PLY file."""
    path = str(path)
    raw = Path(path).read_bytes()
    fmt, elements, offset = _ply_header(raw, path)
    endian = None if fmt == "ascii" else ("<" if fmt == "binary_little_endian" else ">")
    body: np.ndarray | bytes = raw[offset:]
    if endian is None:
        body, offset = np.array(raw[offset:].split(), dtype=np.float64), 0
    else:
        offset = 0
    vertices, faces = None, None
    for element in elements:
        props, count = element["props"], element["count"]
        if all(count_type is None for _, count_type, _ in props):  # scalars only: one table
            if endian is None:
                n = len(props)
                table = body[offset: offset + count * n].reshape(count, n)
                columns = {name: table[:, i] for i, (name, _, _) in enumerate(props)}
                offset += count * n
            else:
                dtype = np.dtype([(name, endian + t) for name, _, t in props])
                table = np.frombuffer(body, dtype, count, offset)
                columns = {name: table[name] for name, _, _ in props}
                offset += count * dtype.itemsize
            if element["name"] == "vertex":
                if not {"x", "y", "z"} <= columns.keys():
                    raise McrxError(f"{path}: the vertices have no x, y, z properties")
                vertices = np.stack([columns[c] for c in "xyz"], axis=1).astype(np.float32)
        elif len(props) == 1:  # one list property (faces)
            name, count_type, item_type = props[0]
            rows, offset = _read_list_rows(body, count, count_type, item_type, offset, endian)
            if element["name"] == "face" and name in ("vertex_indices", "vertex_index"):
                faces = triangulate(rows)
        else:
            raise McrxError(f"{path}: element {element['name']!r} mixes list and scalar "
                            "properties, which this reader does not support")
    if vertices is None:
        raise McrxError(f"{path}: no vertex element")
    return vertices, faces


# ---------------------------------------------------------------------------------------
# .obj and .off meshes
# ---------------------------------------------------------------------------------------
def triangulate(polygons: Sequence[Sequence[int]]) -> np.ndarray:
    """Fan-triangulate polygons (lists of vertex indices): (F, 3) int64."""
    triangles = [(p[0], p[i], p[i + 1]) for p in polygons for i in range(1, len(p) - 1)]
    return np.array(triangles, dtype=np.int64).reshape(-1, 3)


def read_obj(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Vertices (N, 3) and triangles (F, 3) of a Wavefront OBJ file (``v`` and ``f`` lines;
    ``f`` entries may be ``i``, ``i/t``, ``i//n``, ``i/t/n``, negative = relative)."""
    vertices, polygons = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            words = line.split()
            if not words:
                continue
            if words[0] == "v":
                vertices.append([float(w) for w in words[1:4]])
            elif words[0] == "f":
                indices = [int(w.split("/")[0]) for w in words[1:]]
                polygons.append([i - 1 if i > 0 else len(vertices) + i for i in indices])
    if not vertices:
        raise McrxError(f"{path}: no vertices ('v' lines)")
    return np.array(vertices, dtype=np.float32), (triangulate(polygons) if polygons else None)


def read_off(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Vertices (N, 3) and triangles (F, 3) of an OFF file (also COFF/NOFF, and the
    ModelNet files whose first line reads ``OFF490 518 0``)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [ln.split("#")[0].split() for ln in f]
    lines = [words for words in lines if words]
    if not lines or "OFF" not in lines[0][0]:
        raise McrxError(f"{path}: not an OFF file (it must start with 'OFF')")
    header = lines[0]
    glued = header[0].split("OFF", 1)[1]  # "OFF490" -> "490"; "COFF" -> ""
    counts = ([glued] if glued else []) + header[1:]
    body = lines[1:]
    if len(counts) < 2:
        counts, body = body[0], body[1:]
    n_vertices, n_faces = int(counts[0]), int(counts[1])
    if len(body) < n_vertices + n_faces:
        raise McrxError(f"{path}: expected {n_vertices} vertices and {n_faces} faces")
    vertices = np.array([[float(w) for w in words[:3]] for words in body[:n_vertices]],
                        dtype=np.float32)
    polygons = [[int(w) for w in words[1: 1 + int(words[0])]]
                for words in body[n_vertices: n_vertices + n_faces]]
    return vertices, (triangulate(polygons) if polygons else None)


def sample_surface(vertices: np.ndarray, triangles: np.ndarray, n: int,
                   seed: int = SEED) -> np.ndarray:
    """``n`` points (n, 3) uniformly on the surface: triangles drawn with probability
    proportional to their area, then a uniform point inside each (√r barycentric rule)."""
    if len(triangles) and (triangles.min() < 0 or triangles.max() >= len(vertices)):
        raise McrxError("the mesh has faces that index missing vertices")
    a, b, c = (vertices[triangles[:, i]].astype(np.float64) for i in range(3))  # (F, 3) each
    areas = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)  # (F,)
    if not len(triangles) or areas.sum() <= 0:
        return vertices  # degenerate mesh: its vertices are all we have
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(triangles), size=n, p=areas / areas.sum())  # (n,)
    r1, r2 = rng.random((2, n, 1))
    s = np.sqrt(r1)
    points = (1 - s) * a[pick] + s * (1 - r2) * b[pick] + s * r2 * c[pick]
    return points.astype(np.float32)


# ---------------------------------------------------------------------------------------
# From any input to the prepared cloud
# ---------------------------------------------------------------------------------------
def read_points(path: str | Path, npoints: int = 8192) -> np.ndarray:
    """The xyz points (N, 3) of a file; meshes are sampled with ``npoints`` surface points."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise McrxError(f"point cloud not found: {path}")
    if suffix == ".npy":
        return _points_from_npy(path)
    readers = {".ply": read_ply, ".obj": read_obj, ".off": read_off}
    if suffix not in readers:
        raise McrxError(f"{path}: unsupported point-cloud format (use one of "
                        f"{', '.join(POINTCLOUD_SUFFIXES)})")
    try:
        vertices, triangles = readers[suffix](path)
    except (ValueError, IndexError, KeyError) as exc:
        raise McrxError(f"{path}: malformed {suffix[1:].upper()} file ({exc})") from None
    if not np.isfinite(vertices).all():  # NaN areas would reach rng.choice as probabilities
        bad = int(np.flatnonzero(~np.isfinite(vertices).all(axis=1))[0])
        raise McrxError(f"{path}: vertex {bad + 1} has NaN or infinite coordinates")
    try:
        points = vertices if triangles is None else sample_surface(vertices, triangles, npoints)
    except McrxError as exc:
        raise McrxError(f"{path}: {exc}") from None
    return as_points(points, str(path))


SAMPLINGS = ("none", "fps", "random")


def fps_start(count: int, fps_seed: int | None) -> int:
    """The first point of farthest point sampling over ``count`` points: 0 without a seed,
    else ``np.random.randint(0, count)`` after ``np.random.seed(fps_seed)``, the draw of
    salesforce/ULIP ``data/dataset_3d.py`` ``farthest_point_sample`` (commit 1998594),
    made from a private generator instead of numpy's global one."""
    return 0 if fps_seed is None else int(np.random.RandomState(fps_seed).randint(0, count))


def resample(points: np.ndarray, n: int, method: str = "fps", seed: int = SEED,
             fps_seed: int | None = None) -> np.ndarray:
    """Exactly ``n`` points: thinned by farthest point sampling (first point from
    :func:`fps_start`) or a sorted seeded random subset; padded with seeded repeats when
    there are fewer than ``n``. Pure numpy, so DataLoader workers preparing clouds never
    touch torch's thread pool."""
    count = len(points)
    if count == n:
        return points
    if count < n:
        extra = np.random.default_rng(seed).choice(count, n - count, replace=True)
        return points[np.concatenate([np.arange(count), extra])]
    if method == "random":
        keep = np.sort(np.random.default_rng(seed).choice(count, n, replace=False))
        return points[keep]
    return points[farthest_point_indices(points, n, fps_start(count, fps_seed))]


def farthest_point_indices(points: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """Farthest point sampling of one cloud (N, 3) from point ``start``, ties to the lowest
    index: ULIP's ``farthest_point_sample`` rule (salesforce/ULIP ``data/dataset_3d.py``),
    in numpy with preallocated buffers (3× faster than torch for one cloud: no per-op
    dispatch)."""
    x, y, z = (np.ascontiguousarray(points[:, i], dtype=np.float32) for i in range(3))
    nearest = np.full(len(points), 1e10, dtype=np.float32)  # (N,) distance to chosen set
    dist, term = np.empty_like(nearest), np.empty_like(nearest)
    chosen = np.zeros(n, dtype=np.int64)
    farthest = start
    for i in range(n):
        chosen[i] = farthest
        np.square(np.subtract(x, x[farthest], out=dist), out=dist)
        dist += np.square(np.subtract(y, y[farthest], out=term), out=term)
        dist += np.square(np.subtract(z, z[farthest], out=term), out=term)
        np.minimum(nearest, dist, out=nearest)
        farthest = int(nearest.argmax())
    return chosen


def pc_normalize(points: np.ndarray) -> np.ndarray:
    """Centred on the centroid, scaled so the farthest point lies on the unit sphere:
    salesforce/ULIP ``data/dataset_3d.py`` ``pc_normalize``, the same numpy operations in
    float32 (so the same bits as ULIP's loaders). A cloud whose points all coincide is
    only centred."""
    points = np.asarray(points, dtype=np.float32)
    centred = points - np.mean(points, axis=0)
    radius = np.max(np.sqrt(np.sum(centred**2, axis=1)))
    return centred / radius if radius > 0 else centred


normalize = pc_normalize  # the name this module used first


def prepare_cloud(item: Any, npoints: int = 8192, sampling: str = "fps",
                  normalize: bool = True, fps_seed: int | None = 0,
                  min_points: int = 1) -> np.ndarray:
    """Any accepted input (path, N×C array or tensor, dict with ``xyz``) → (M, 3) float32:
    M = ``npoints`` with ``sampling`` "fps" or "random", M = N with "none" (then a cloud
    with fewer than ``min_points`` points is refused); centred and scaled to the unit
    sphere with ``normalize``. The defaults are ULIP's loaders; ``sampling="none",
    normalize=False`` is what C-MCR and Ex-MCR feed PointBERT (module docstring)."""
    if sampling not in SAMPLINGS:
        raise McrxError(f"sampling: expected one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    if isinstance(item, (str, Path)):
        what = str(item)
        points = read_points(item, npoints)
    elif isinstance(item, dict):
        if "xyz" not in item:
            raise McrxError(f"a point-cloud dict needs an 'xyz' entry (keys: {sorted(item)})")
        what = "the 'xyz' entry"
        points = as_points(item["xyz"], what)
    else:
        what = "array"
        points = as_points(item)
    if sampling == "none":
        if len(points) < min_points:
            raise McrxError(
                f"{what}: {len(points)} points, fewer than the {min_points} PointBERT needs "
                "(params: groups and group_size); with sampling: none clouds are taken as "
                "they are, use sampling: fps to pad small clouds to npoints"
            )
    else:
        points = resample(points, npoints, sampling, fps_seed=fps_seed)
    return pc_normalize(points) if normalize else points


def list_pointcloud_files(path: str | Path) -> list[Any]:
    """Items of a recipe's ``inputs:`` for point clouds: a folder gives its point-cloud files
    (recursively, sorted, hidden skipped); a ``.txt`` its lines; an ``.npy`` file holding a
    stack (M, N, C) its M clouds; any other supported file is one cloud."""
    path = Path(path)
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() in POINTCLOUD_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise McrxError(f"{path}: no point-cloud files ({', '.join(POINTCLOUD_SUFFIXES)})")
        return [str(p) for p in files]
    if not path.is_file():
        raise McrxError(f"not found: {path}")
    if path.suffix == ".txt":
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if path.suffix.lower() == ".npy":
        with open(path, "rb") as f:
            pickled = _npy_dtype(f).hasobject
        if not pickled:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            if array.ndim == 3:  # a stack of clouds
                return list(array)
        return [str(path)]
    if path.suffix.lower() not in POINTCLOUD_SUFFIXES:
        raise McrxError(f"{path}: unsupported point-cloud format (use one of "
                        f"{', '.join(POINTCLOUD_SUFFIXES)})")
    return [str(path)]

