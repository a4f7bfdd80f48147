"""Fuzzing the command line as a careless or hostile user would (issue 7): mutated recipes
(values, keys, bytes) and ``--set`` values are fed to ``mcrx validate`` and ``mcrx extend``
as real processes. Every try must end with exit code 0 or 1 and no traceback, and an
``extend`` that exits 0 must have written finite metrics (a NaN figure with exit 0 is a bad
input accepted silently).

Bounded: ``MCRX_FUZZ_VALIDATE`` (default 15) and ``MCRX_FUZZ_EXTEND`` (default 1) tries,
derandomised so CI is reproducible; ``MCRX_FUZZ_RANDOM=1`` explores new inputs,
``MCRX_FUZZ_EXTEND_ACCEPTED=N`` runs ``extend`` on the first N hostile recipes ``validate``
accepted (the test of "accepted silently"), and ``MCRX_FUZZ_REPORT=file.json`` writes the
count of each outcome per kind of try, and the tries validate accepted."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import small_recipe  # noqa: E402

VALIDATE_TRIES = int(os.environ.get("MCRX_FUZZ_VALIDATE", "15"))
EXTEND_TRIES = int(os.environ.get("MCRX_FUZZ_EXTEND", "1"))
EXTEND_ACCEPTED = int(os.environ.get("MCRX_FUZZ_EXTEND_ACCEPTED", "0"))
FUZZ = settings(deadline=None, database=None, derandomize=not os.environ.get("MCRX_FUZZ_RANDOM"),
                suppress_health_check=list(HealthCheck), print_blob=True)

#: outcome counts per kind of try, and the hostile tries validate accepted, for the report
OUTCOMES: dict[str, Counter] = {}
ACCEPTED: list[str] = []


def tiny_recipe(name: str) -> dict:
    """A shipped toy recipe, shrunk until `extend` takes seconds (the toy spaces are those of
    tests/conftest.py, so their cache is shared with the other tests)."""
    raw = small_recipe(name, Path("out"))
    for source in raw["memories"].values():
        source["params"]["count"] = 600
    for evaluation in raw["evaluation"]:
        evaluation["params"]["count"] = 100
    raw["training"] = {"batch_size": 128, "epochs": 1, "checkpoint_every": 1000}
    return raw


BASES = {name: tiny_recipe(name) for name in ("demo.yaml", "demo_cmcr.yaml")}


def leaf_paths(value: Any, prefix: str = "") -> list[str]:
    """Dotted paths to every value of a recipe (``training.epochs``, ``leaves.0.bridge``)."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return [prefix]
    paths = [prefix] if prefix else []
    for key, child in items:
        paths += leaf_paths(child, f"{prefix}.{key}" if prefix else str(key))
    return paths


KNOWN_PATHS = sorted({p for raw in BASES.values() for p in leaf_paths(raw)} | {
    "seed", "output", "memory_dtype", "baseline", "training.lr", "training.temperature",
    "training.cmcr_temperature", "training.noise_variance", "training.intra_weight",
    "training.weight_decay", "training.schedule", "training.loss", "training.connector.name",
    "retrieval.temperature", "retrieval.mode", "retrieval.k", "retrieval.query_block",
    "retrieval.memory_block", "leaves.0.modality", "leaves.0.parent_modality",
    "leaves.0.parent", "memories.text.limit", "memories.audio.labels", "memories.image.inputs",
    "evaluation.0.ground_truth", "evaluation.0.name", "evaluation.1", "training.epochz",
    "leaves.0.params.random_weights", "base.params.world.classes",
})

HOSTILE_TEXT = [
    "", ".", "..", "../../escaped", "[/x]", "[bold]x", "/proc/mcrx", "a\u0000b", "\u202e",
    "toy/clip", "toy/clap", "toy/nope", "text", "image", "audio", "pointcloud", "labels",
    "pairs", "items", "top-k", "exact", "c-mcr", "ex-mcr", "float16", "procrustes", "none",
    "recipes/demo.yaml", "out", "runs", "~", "*", "clip/ViT-B-32",
]
#: raw --set values, sent as they are (not YAML-dumped)
HOSTILE_YAML = [
    "[", "]", "{", "*a", "&a [*a]", "!!python/object/apply:os.system ['touch pwned']",
    "!!python/name:os.system", "!!binary aGk=", "!!set {a, b}", "!!timestamp 2024-01-01",
    "2024-01-01", "[" * 5000, "[" * 40 + "]" * 40, "a: b: c", "\t", "- a\n- b", "? [a]\n: b",
    "{a: 1, a: 2}", ".inf", "-.inf", ".nan", "1e400", "0x10", "0o17", "1_000", "~", "null",
    "yes", "no", "=", "\udcff", "'unterminated", '"\\e[31m"',
]

values = st.recursive(
    st.one_of(
        st.none(), st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.sampled_from([0, 1, 2, -1, 2**31, 2**32, 2**63, 10**12, 10**400]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([1e-300, 1e-5, 1e-4, 0.5, 1.0, 100.0, 1e300, -0.0]),
        st.sampled_from(HOSTILE_TEXT),
        st.text(st.characters(blacklist_characters="/\\", blacklist_categories=["Cs"]),
                max_size=12),
    ),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.sampled_from(["a", "space", "params",
                                                                "count", "inputs"]),
                                               children, max_size=3)),
    max_leaves=6,
)
keys = st.one_of(st.sampled_from(KNOWN_PATHS), st.sampled_from(["x", "training.x.y",
                                                                "leaves.9.bridge", "."]))


# -- running ---------------------------------------------------------------------------
def run_mcrx(args: list[str | bytes], cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MCRX_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "mcrx", *args], cwd=cwd, env=env,
                          capture_output=True, timeout=600)


def nan_metrics(metrics: str) -> list[str]:
    """Paths of the non-finite numbers in a metrics document (``extend --json``)."""
    def walk(value: Any, where: str) -> list[str]:
        if isinstance(value, dict):
            return [p for k, v in value.items() for p in walk(v, f"{where}.{k}")]
        if isinstance(value, list):
            return [p for i, v in enumerate(value) for p in walk(v, f"{where}.{i}")]
        if isinstance(value, float) and not math.isfinite(value):
            return [where]
        return []

    return walk(json.loads(metrics), "metrics")


def judge(kind: str, command: str, done: subprocess.CompletedProcess) -> str:
    """The outcome of one try (counted per kind); fails the test on a defect."""
    stderr = done.stderr.decode("utf-8", "replace")
    counts = OUTCOMES.setdefault(f"{command}:{kind}", Counter())
    counts["tries"] += 1
    if "Traceback" in stderr or done.returncode not in (0, 1):
        counts["tracebacks"] += 1
        pytest.fail(f"{command} ({kind}) exit {done.returncode}:\n{stderr[-3000:]}")
    if done.returncode == 1:
        counts["clean errors"] += 1
        assert stderr.strip(), "exit 1 without a message"
        return "error"
    if command == "extend":  # run with --json: the metrics are on stdout
        bad = nan_metrics(done.stdout.decode("utf-8", "replace"))
        if bad:
            counts["silent acceptances"] += 1
            pytest.fail(f"extend exit 0 with non-finite metrics {bad[:5]}")
    counts["accepted"] += 1
    return "ok"


def write_recipe(raw: dict, folder: Path) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return path


def set_path(raw: dict, key: str, value: Any) -> None:
    """``raw[key] = value`` along a dotted path, creating mappings, as --set does; a path
    through something else is left alone (--set reports that case itself)."""
    node: Any = raw
    parts = key.split(".")
    for part in parts[:-1]:
        if isinstance(node, list) and part.isdecimal() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            return
    last = parts[-1]
    if isinstance(node, list) and last.isdecimal() and int(last) < len(node):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value


def byte_mutation(text: str, how: str, where: float) -> bytes:
    """A recipe file made hostile at the byte level."""
    data = text.encode("utf-8")
    at = int(len(data) * where)
    if how == "truncate":
        return data[:at]
    if how == "latin-1":
        return text.replace("demo", "démo").encode("latin-1", "replace")
    if how == "utf-16":
        return text.encode("utf-16")
    if how == "garbage":
        return data[:at] + bytes(range(256)) + data[at:]
    if how == "duplicate-key":
        return data + b"\ntraining: {epochs: 2}\n"
    if how == "deep":
        return data + b"\nextra: " + b"[" * 100_000 + b"\n"
    return data[:at] + b"\t\x00\x1b[31m" + data[at:]  # control characters


@pytest.fixture(scope="module")
def fuzz_dirs(cache_dir):
    """A working folder nested deep enough that `../../escaped` stays inside it."""
    with tempfile.TemporaryDirectory(prefix="mcrx-fuzz-") as tmp:
        work = Path(tmp) / "a" / "b" / "c" / "d"
        work.mkdir(parents=True)
        yield work, cache_dir
    report = os.environ.get("MCRX_FUZZ_REPORT")
    if report:
        Path(report).write_text(json.dumps(
            {"outcomes": OUTCOMES, "validate accepted": ACCEPTED}, indent=2, sort_keys=True))


tries = st.one_of(
    st.tuples(st.just("set"), st.lists(st.tuples(keys, values), min_size=1, max_size=3)),
    st.tuples(st.just("set-raw"), st.lists(st.tuples(keys, st.sampled_from(HOSTILE_YAML)),
                                           min_size=1, max_size=2)),
    st.tuples(st.just("file"), st.lists(st.tuples(keys, values), min_size=1, max_size=4)),
    st.tuples(st.just("delete"), st.lists(keys, min_size=1, max_size=2)),
    st.tuples(st.just("bytes"), st.tuples(
        st.sampled_from(["truncate", "latin-1", "utf-16", "garbage", "duplicate-key", "deep",
                         "control"]), st.floats(0, 1))),
)


def prepare(base: str, try_: tuple, work: Path) -> tuple[Path, list[str]]:
    """The recipe file and --set arguments of one try."""
    kind, payload = try_
    raw = copy.deepcopy(BASES[base])
    overrides: list[str] = []
    if kind == "set":
        overrides = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"
                     .removesuffix("\n...") for k, v in payload]
    elif kind == "set-raw":
        overrides = [f"{k}={v}" for k, v in payload]
    elif kind == "file":
        for key, value in payload:
            set_path(raw, key, value)
    elif kind == "delete":
        for key in payload:
            *parents, last = key.split(".")
            node: Any = raw
            for part in parents:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(last, None)
    path = write_recipe(raw, work)
    if kind == "bytes":
        how, where = payload
        path.write_bytes(byte_mutation(path.read_text(), how, where))
    return path, overrides


def set_args(overrides: list[str]) -> list[str | bytes]:
    args: list[str | bytes] = []
    for override in overrides:
        # lone surrogates stand for bytes that are not UTF-8: pass those bytes
        args += ["--set", override.encode("utf-8", "surrogateescape")]
    return args


def test_fuzz_validate(fuzz_dirs):
    work, cache = fuzz_dirs

    @settings(FUZZ, max_examples=VALIDATE_TRIES)
    @given(base=st.sampled_from(sorted(BASES)), try_=tries)
    def one(base, try_):
        path, overrides = prepare(base, try_, work)
        done = run_mcrx(["validate", str(path), *set_args(overrides)], work, cache)
        verdict = judge(try_[0], "validate", done)
        assert not (work / "pwned").exists(), "a recipe ran code"
        if verdict == "ok":
            ACCEPTED.append(f"{base} {try_!r}"[:500])
            if OUTCOMES.get(f"extend:{try_[0]}", Counter())["tries"] < EXTEND_ACCEPTED:
                done = run_mcrx(["extend", str(path), "--no-progress", "--json",
                                 *set_args(overrides)], work, cache)
                judge(try_[0], "extend", done)

    one()


#: plausible edits, near the bounds: validate mostly accepts them, so extend runs
plausible = st.lists(st.one_of(
    st.tuples(st.just("seed"), st.integers(0, 2**32 - 1)),
    st.tuples(st.sampled_from(["training.lr"]), st.floats(1e-6, 10)),
    st.tuples(st.sampled_from(["training.temperature", "retrieval.temperature"]),
              st.floats(1e-4, 100)),
    st.tuples(st.just("training.noise_variance"), st.floats(0, 1)),
    st.tuples(st.just("training.intra_weight"), st.floats(0, 1000)),
    st.tuples(st.just("training.batch_size"), st.integers(2, 700)),
    st.tuples(st.just("retrieval.mode"), st.sampled_from(["exact", "top-k"])),
    st.tuples(st.just("retrieval.k"), st.integers(1, 5000)),
    st.tuples(st.sampled_from(["retrieval.query_block", "retrieval.memory_block"]),
              st.integers(1, 4096)),
    st.tuples(st.just("baseline"), st.sampled_from(["lstsq", "procrustes", "none"])),
    st.tuples(st.just("memory_dtype"), st.sampled_from(["float32", "float16"])),
    st.tuples(st.just("evaluation.0.ground_truth"), st.sampled_from(["pairs", "labels"])),
    st.tuples(st.just("memories.text.limit"), st.integers(1, 700)),
), min_size=1, max_size=3)


@pytest.mark.slow
def test_fuzz_extend(fuzz_dirs):
    """What validate accepts, extend runs: exit 0 with finite metrics, or a clean error."""
    work, cache = fuzz_dirs

    @settings(FUZZ, max_examples=EXTEND_TRIES)
    @given(base=st.sampled_from(sorted(BASES)), edits=plausible)
    def one(base, edits):
        raw = copy.deepcopy(BASES[base])
        raw["output"] = str(work / f"out-{OUTCOMES.get('validate:plausible', Counter())['tries']}")
        for key, value in edits:
            set_path(raw, key, value)
        path = write_recipe(raw, work)
        if judge("plausible", "validate", run_mcrx(["validate", str(path)], work, cache)) != "ok":
            return
        done = run_mcrx(["extend", str(path), "--no-progress", "--json"], work, cache)
        judge("plausible", "extend", done)

    one()
