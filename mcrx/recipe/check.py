"""Checks of a recipe against the installed plugins: names exist, bridges are modalities of
both spaces, parents come before their children, the method's rules hold, plugin params
validate against the plugin's own model, files exist (and the weight files params name
open: :func:`mcrx.store.weights.check_weights_file`), evaluation sets are consistent (rows,
labels), the output folder and the cache can be written. Returns every problem as (location,
message); :func:`mcrx.recipe.load.load_recipe` raises them together.

Everything ``extend`` would otherwise find hours in (an unwritable output folder, labels of
the wrong length, an empty evaluation set) is found here, before any work starts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from mcrx.errors import McrxError
from mcrx.plugin.builtin import bind_features_spaces
from mcrx.plugin.registry import Registry, UnknownComponentError
from mcrx.recipe.chain import needed_memories, resolve_leaf_modalities, resolve_links
from mcrx.recipe.load import pydantic_errors
from mcrx.recipe.schema import EMBEDDING_SUFFIXES, DataSource, EvaluationSet, Recipe

#: kernel filesystems: writing a run there fails in odd ways (or does harm)
VIRTUAL_FILESYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))
LABEL_SUFFIXES = (".npy", ".txt")
#: files that hold a table of items: as ``inputs:`` they would be one item, their own path
TABLE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl")
#: the benchmark datasets that read such tables (mcrx/datasets), by the table's suffix
TABLE_DATASETS = {".csv": "mcrx/audiocaps (test.csv), mcrx/clotho "
                          "(clotho_captions_evaluation.csv) or mcrx/esc50 (meta/esc50.csv)",
                  ".json": "mcrx/coco or mcrx/flickr30k (Karpathy's dataset_*.json), "
                           "mcrx/wavcaps-retrieval or mcrx/objaverse-lvis (lvis.json)"}


def table_inputs_message(path: Path, modality: str) -> str:
    """Why a .csv/.json file is refused as ``inputs:`` and what to give instead."""
    suffix = path.suffix.lower()
    datasets = TABLE_DATASETS.get(suffix if suffix in TABLE_DATASETS else
                                  ".csv" if suffix == ".tsv" else ".json")
    one = ("a .txt file with one caption per line (ids or classes in 'labels:')"
           if modality == "text" else "a folder of files, a .txt file of paths or a .npy array")
    return (f"{path} is a {suffix} table: as 'inputs:' it would be a single {modality} item "
            f"(its own path). Read it with its dataset ({datasets}: 'dataset:' with "
            f"params.root), or give {one}")


def _check_params(spec, params, loc: str, errors: list[tuple[str, str]],
                  check_files: bool = False) -> None:
    """Params against the component's model; with ``check_files``, every field the model
    marks as a weights file (:func:`mcrx.store.weights.weights_file`) is opened too."""
    try:
        validated = spec.validate_params(params)
    except ValidationError as exc:
        errors.extend(pydantic_errors(exc, (loc,)))
        return
    except McrxError as exc:
        errors.append((loc, str(exc)))
        return
    if check_files and validated is not None:
        from mcrx.store.weights import weights_problems

        errors.extend((f"{loc}.{field}", message)
                      for field, message in weights_problems(validated))


def _check_source(
    source: DataSource, modality: str, spaces: list[str] | None, loc: str, registry: Registry,
    errors: list[tuple[str, str]], check_files: bool, extra_embeddings: bool = False,
) -> None:
    """One source: its dataset (name, modality, params, root folder), its embeddings (for
    ``spaces``, the spaces that will read it; None: any registered space of ``modality``,
    as for an evaluation file checked alone; ``extra_embeddings``: files for other spaces
    are allowed, as for models compared side by side), its files."""
    if spaces is None:
        extra_embeddings = True
        for space in source.embeddings:
            if not registry.has("space", space):
                errors.append((f"{loc}.embeddings.{space}", f"unknown space {space!r}"))
            elif (registry.space(space).modalities
                  and modality not in registry.space(space).modalities):
                errors.append((f"{loc}.embeddings.{space}", f"{space} does not embed "
                               f"{modality!r} (it has {list(registry.space(space).modalities)})"))
    if source.dataset:
        try:
            spec = registry.dataset(source.dataset)
        except UnknownComponentError as exc:
            errors.append((f"{loc}.dataset", str(exc)))
        else:
            if spec.modalities and modality not in spec.modalities:
                errors.append((f"{loc}.dataset", f"dataset {source.dataset} has no {modality!r} "
                               f"items (it has {list(spec.modalities)})"))
            _check_params(spec, source.params, f"{loc}.params", errors, check_files)
            root = source.params.get("root")  # the benchmarks' download folder
            if check_files and isinstance(root, str) and not Path(root).expanduser().is_dir():
                errors.append((f"{loc}.params.root", f"folder not found: {root} (the folder "
                               f"{source.dataset} was downloaded into)"))
    for space in source.embeddings:
        if not extra_embeddings and space not in (spaces or []):
            errors.append((f"{loc}.embeddings.{space}",
                           f"{space} does not need {modality!r} embeddings here "
                           f"(spaces that do: {spaces})"))
    if not (source.dataset or source.inputs):
        missing = [s for s in spaces or [] if s not in source.embeddings]
        if missing:
            errors.append((f"{loc}.embeddings", f"no embeddings for {missing} and no "
                           "'dataset' or 'inputs' to encode them from"))
    if check_files:
        for space, path in source.embeddings.items():
            if path.suffix not in EMBEDDING_SUFFIXES:
                errors.append((f"{loc}.embeddings.{space}",
                               f"{path}: expected a .npy or .safetensors file"))
            elif path.is_dir():
                errors.append((f"{loc}.embeddings.{space}", f"{path} is a folder; expected a "
                               ".npy or .safetensors file"))
            elif not path.is_file():
                errors.append((f"{loc}.embeddings.{space}", f"file not found: {path}"))
            else:
                _check_width(path, space, f"{loc}.embeddings.{space}", registry, errors)
        for field, path in (("inputs", source.inputs), ("labels", source.labels)):
            if path is not None and not path.exists():
                errors.append((f"{loc}.{field}", f"not found: {path}"))
        if source.inputs is not None and source.inputs.suffix.lower() in TABLE_SUFFIXES:
            errors.append((f"{loc}.inputs", table_inputs_message(source.inputs, modality)))
        if source.labels is not None and source.labels.exists():
            if source.labels.is_dir():
                errors.append((f"{loc}.labels", f"{source.labels} is a folder; expected a "
                               ".npy or .txt file with one label per item"))
            elif source.labels.suffix not in LABEL_SUFFIXES:
                errors.append((f"{loc}.labels", f"{source.labels}: expected a .npy array or a "
                               ".txt file with one label per line"))


def _check_width(path: Path, space: str, loc: str, registry: Registry,
                 errors: list[tuple[str, str]]) -> None:
    """An embeddings file's rows against the width the space registered (``register(dim=)``,
    ``features/<name>``'s ``dim``), reading the file's header only."""
    dim = registry.space(space).dim if registry.has("space", space) else None
    if dim is None:
        return
    try:
        if path.suffix == ".npy":
            shape = np.load(path, allow_pickle=False, mmap_mode="r").shape
        else:
            from safetensors import safe_open

            with safe_open(str(path), "np") as handle:
                keys = list(handle.keys())
                key = "embeddings" if "embeddings" in keys else keys[0] if len(keys) == 1 else None
                shape = handle.get_slice(key).get_shape() if key else None
    except Exception as exc:
        errors.append((loc, f"{path}: cannot read embeddings ({exc})"))
        return
    if shape is not None and (len(shape) != 2 or shape[1] != dim):
        errors.append((loc, f"{path}: rows of shape {tuple(shape)[1:]}, but {space} is "
                       f"{dim}-d (an N×{dim} array)"))


# -- evaluation sets -------------------------------------------------------------------------
def _label_count(path: Path) -> int:
    """How many labels ``path`` holds; raises McrxError when they cannot be class labels
    (Python objects, several per row, NaN or fractional values, not UTF-8 text)."""
    if path.suffix == ".txt":
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise McrxError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        return sum(1 for line in text.splitlines() if line.strip())
    try:
        labels = np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as exc:  # numpy: "Object arrays cannot be loaded when allow_pickle=False"
        raise McrxError(f"{path}: not a plain numeric .npy array ({exc}); save integer class "
                        "ids, e.g. np.save(path, labels.astype(np.int64))") from None
    except OSError as exc:
        raise McrxError(f"{path}: cannot read it as .npy ({exc})") from None
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise McrxError(f"{path}: expected one label per item, shape (N,), got shape "
                        f"{tuple(labels.shape)}")
    if labels.dtype.kind == "f":
        values = np.asarray(labels)
        bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
        if bad.size:
            raise McrxError(f"{path}: labels are class ids, but row {bad[0]} is "
                            f"{values[bad[0]]!r} ({bad.size} such rows)")
    elif labels.dtype.kind not in "iubUS":
        raise McrxError(f"{path}: labels of dtype {labels.dtype} (expected integers or strings)")
    return int(labels.shape[0])


def _built_dataset(source: DataSource, registry: Registry, built: dict | None):
    """The dataset a source names, built once per name and params in one check."""
    built = {} if built is None else built
    key = (source.dataset, repr(sorted(source.params.items())))
    if key not in built:
        built[key] = registry.dataset(source.dataset).build(params=source.params)
    return built[key]


def _dataset_rows(source: DataSource, modality: str, loc: str, registry: Registry,
                  errors: list[tuple[str, str]], built: dict | None) -> int | None:
    """How many items a dataset source gives (its items listed, nothing encoded); None when
    the dataset is unknown or its plugin fails in a way it does not explain."""
    if not registry.has("dataset", source.dataset):
        return None  # reported by _check_source
    try:
        count = len(_built_dataset(source, registry, built).items(modality))
    except (McrxError, OSError, ValueError, KeyError) as exc:
        errors.append((f"{loc}.dataset", f"dataset {source.dataset} cannot list its "
                       f"{modality} items: {exc}"))
        return None
    except Exception:  # noqa: BLE001  (a plugin's own failure: the run reports it)
        return None
    return min(count, source.limit) if source.limit else count


def _row_count(source: DataSource, loc: str, registry: Registry,
               errors: list[tuple[str, str]], modality: str | None = None,
               built: dict | None = None) -> int | None:
    """Rows a source gives (after ``limit``): its files, or with ``modality`` its dataset's
    listed items; None when unknown or already reported. Every file of the source must
    agree."""
    from mcrx.store.inputs import read_embeddings, read_inputs

    if source.dataset and modality is not None and not any(
            e[0].startswith(loc) for e in errors):
        return _dataset_rows(source, modality, loc, registry, errors, built)
    counts: dict[str, int] = {}
    for space, path in source.embeddings.items():
        if not path.is_file() or path.suffix not in EMBEDDING_SUFFIXES:
            return None  # reported by _check_source
        try:
            dim = registry.space(space).dim
            counts[f"embeddings.{space}"] = len(read_embeddings(path, dim))
        except UnknownComponentError:
            return None
        except McrxError as exc:
            errors.append((f"{loc}.embeddings.{space}", str(exc)))
            return None
    if source.inputs is not None and not source.dataset:
        if not source.inputs.exists() or source.inputs.suffix.lower() in TABLE_SUFFIXES:
            return None  # reported by _check_source
        try:
            counts["inputs"] = len(read_inputs(source.inputs))
        except McrxError as exc:
            errors.append((f"{loc}.inputs", str(exc)))
            return None
        except (OSError, ValueError) as exc:
            errors.append((f"{loc}.inputs", f"cannot read {source.inputs}: {exc}"))
            return None
    if len(set(counts.values())) > 1:
        errors.append((loc, "row-aligned sources differ in length: " + ", ".join(
            f"{where} {_path_of(source, where)} {count:,}"
            for where, count in counts.items())))
        return None
    if not counts:
        return None
    rows = next(iter(counts.values()))
    return min(rows, source.limit) if source.limit else rows


def _path_of(source: DataSource, field: str) -> str:
    """The file behind ``inputs``/``labels``/``embeddings.<space>`` of a source, or its
    dataset: what a message names."""
    if field.startswith("embeddings."):
        return f"({source.embeddings[field.split('.', 1)[1]]})"
    path = getattr(source, field, None)
    return f"({path})" if path is not None else f"(dataset {source.dataset})"


def _what(source: DataSource) -> str:
    """A source as a message names it: its inputs file or folder, dataset, or embeddings."""
    if source.inputs is not None:
        return str(source.inputs)
    if source.dataset:
        return f"dataset {source.dataset}"
    return ", ".join(str(p) for p in source.embeddings.values())


def _read_label_values(path: Path) -> list | np.ndarray | None:
    """The labels of a .txt or .npy file as written (None when unreadable: reported)."""
    from mcrx.store.inputs import read_labels

    try:
        return read_labels(path)
    except (McrxError, OSError, ValueError):
        return None


def check_evaluation_set(evaluation: EvaluationSet, loc: str, registry: Registry,
                         errors: list[tuple[str, str]], built: dict | None = None) -> None:
    """What the metrics need of a set's files, known before anything is encoded: items in
    every modality (files counted, datasets' items listed), one valid label per item where
    labels are given (and everywhere under ``ground_truth: labels`` and zero-shot), labels
    that name the set's classes, the same number of rows in every modality under
    ``ground_truth: pairs``. Every message names the set, and the file or dataset."""
    from mcrx.metrics.vocabulary import class_vocabulary

    built = {} if built is None else built
    first = len(errors)
    rows: dict[str, int] = {}
    needs_classes = evaluation.task == "zeroshot" or evaluation.ground_truth == "labels"
    names = _set_class_names(evaluation)
    for modality, source in evaluation.data.items():
        where = f"{loc}.data.{modality}"
        count = _row_count(source, where, registry, errors, modality, built)
        if count == 0:
            errors.append((where, f"{_what(source)}: the set is empty: no items to evaluate"))
            continue
        if count is not None:
            rows[modality] = count
        if source.labels is None:
            if needs_classes and not source.dataset:
                task = ("zero-shot needs" if evaluation.task == "zeroshot"
                        else "ground_truth: labels needs")
                errors.append((f"{where}.labels", f"{task} a class label per item of "
                               f"{modality} ({_what(source)}): give 'labels' (.npy or .txt, "
                               "one per item)"))
            elif needs_classes and registry.has("dataset", source.dataset or ""):
                try:
                    has = _built_dataset(source, registry, built).labels(modality) is not None
                except Exception:  # noqa: BLE001  (counted above; the run reports it)
                    has = True
                if not has:
                    errors.append((f"{where}.labels", f"dataset {source.dataset} has no class "
                                   f"labels for {modality}: give 'labels' (one per item)"))
            continue
        if not source.labels.is_file() or source.labels.suffix not in LABEL_SUFFIXES:
            continue  # reported by _check_source
        try:
            labels = _label_count(source.labels)
        except McrxError as exc:
            errors.append((f"{where}.labels", str(exc)))
            continue
        if source.limit:
            labels = min(labels, source.limit)
        if count is not None and labels != count:
            errors.append((f"{where}.labels", f"{source.labels} holds {labels:,} labels for "
                           f"{count:,} items of {modality} ({_what(source)}; one label per "
                           "item)"))
        elif needs_classes and names is not None:
            values = _read_label_values(source.labels)
            if values is not None:
                try:
                    class_vocabulary({modality: values}, names, f"{source.labels}",
                                     report_one_sided=False)
                except McrxError as exc:
                    errors.append((f"{where}.labels", str(exc)))
    if evaluation.task == "zeroshot" and evaluation.prompts is None and (
            evaluation.classes is None):
        named = []
        for source in evaluation.data.values():
            if source.dataset and registry.has("dataset", source.dataset):
                try:
                    named.append(_built_dataset(source, registry, built).classes())
                except Exception:  # noqa: BLE001  (the run reports the plugin's failure)
                    named.append(["?"])
        if not any(named):
            datasets = sorted({s.dataset for s in evaluation.data.values() if s.dataset})
            errors.append((f"{loc}.classes", "a zeroshot set needs 'classes' (with "
                           "'templates'), labelled 'prompts', or a dataset that names its "
                           "classes" + (f"; {', '.join(datasets)} names none" if datasets
                                        else "")))
    if (evaluation.task == "retrieval" and evaluation.ground_truth == "pairs"
            and len(set(rows.values())) > 1):
        errors.append((f"{loc}.data", "ground_truth: pairs matches row i of every modality, "
                       "but the modalities differ in length: " + ", ".join(
                           f"{m} {n:,}" for m, n in rows.items()) + " (" + "; ".join(
                           f"{m}: {_what(evaluation.data[m])}" for m in rows) + ")"))
    _name_the_set(evaluation, errors, first)


def _set_class_names(evaluation: EvaluationSet) -> list[str] | None:
    """``classes:`` as a list when it can be read without a dataset (a list, a preset, a
    .txt file that exists), else None."""
    from mcrx.metrics.templates import read_class_names

    try:
        return read_class_names(evaluation.classes, "")
    except McrxError:
        return None


def _name_the_set(evaluation: EvaluationSet, errors: list[tuple[str, str]], first: int) -> None:
    """Every problem found since ``first`` names the set it belongs to."""
    tag = f"set {evaluation.name!r}: "
    errors[first:] = [(where, message if message.startswith(tag) else tag + message)
                      for where, message in errors[first:]]


def evaluation_problems(
    sets: list[EvaluationSet], registry: Registry,
    spaces_of: dict[str, list[str]] | None = None, text_spaces: list[str] | None = None,
    check_files: bool = True, extra_embeddings: bool = False,
) -> list[tuple[str, str]]:
    """Every problem of evaluation sets, as (location, message), each naming its set,
    modality and file: the checks of a recipe's ``evaluation:`` (:func:`check_recipe`),
    of an evaluation file alone (``mcrx validate EVAL.yaml``: ``spaces_of`` None, any
    registered space may read it) and of ``mcrx evaluate`` before it encodes anything
    (``spaces_of``: the spaces the models compared read each modality with)."""
    from mcrx.metrics.templates import zeroshot_problems

    errors: list[tuple[str, str]] = []
    built: dict = {}
    for j, evaluation in enumerate(sets):
        first = len(errors)
        for modality, source in evaluation.data.items():
            loc = f"evaluation.{j}.data.{modality}"
            if spaces_of is not None and not spaces_of.get(modality):
                if not extra_embeddings:
                    errors.append((loc, f"no space of the recipe embeds {modality!r}"))
                continue
            if spaces_of is None and not registry.has("modality", modality):
                errors.append((loc, f"unknown modality {modality!r}; known: "
                               f"{registry.names('modality')}"))
                continue
            _check_source(source, modality, None if spaces_of is None else spaces_of[modality],
                          loc, registry, errors, check_files, extra_embeddings)
        if evaluation.task == "zeroshot":  # the prompts: text of the spaces
            errors.extend(zeroshot_problems(evaluation, f"evaluation.{j}", check_files))
            if text_spaces is not None and not text_spaces:
                errors.append((f"evaluation.{j}", "zero-shot prompts are text, and no "
                               "space of the recipe embeds text"))
            elif evaluation.prompts is not None:
                _check_source(evaluation.prompts, "text",
                              None if text_spaces is None else text_spaces[:1],
                              f"evaluation.{j}.prompts", registry, errors, check_files,
                              extra_embeddings)
        _name_the_set(evaluation, errors, first)
        if check_files:
            check_evaluation_set(evaluation, f"evaluation.{j}", registry, errors, built)
    return errors


def raise_evaluation_problems(source: str, sets: list[EvaluationSet], registry: Registry,
                              spaces_of: dict[str, list[str]] | None = None,
                              text_spaces: list[str] | None = None,
                              check_files: bool = True, extra_embeddings: bool = False) -> None:
    """:func:`evaluation_problems`, raised together as one :class:`RecipeError`."""
    from mcrx.errors import RecipeError

    errors = evaluation_problems(sets, registry, spaces_of, text_spaces, check_files,
                                 extra_embeddings)
    if errors:
        raise RecipeError(source, errors)


# -- where a run writes --------------------------------------------------------------------
def writable_folder_problem(path: Path) -> str | None:
    """Why a run could not create and write the folder ``path``, or None. Looks at the path
    as it is (a file in the way, a virtual filesystem, permissions) and then tries to write
    a throw-away file in the nearest existing folder: root passes permission checks, a
    read-only mount does not say so until written to."""
    path = Path(os.path.abspath(path.expanduser()))
    real = Path(os.path.realpath(path))
    for virtual in VIRTUAL_FILESYSTEMS:
        if real == virtual or virtual in real.parents:
            return f"{path} is on the kernel's {virtual} filesystem; choose a folder on disk"
    existing = path
    while not existing.exists():
        if existing.is_symlink():
            return f"{existing} is a symbolic link to nothing ({os.readlink(existing)})"
        existing = existing.parent
    if not existing.is_dir():
        return (f"{existing} is a file, not a folder" if existing == path else
                f"{path} cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable (permissions)"
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".mcrx-write-test-"):
            pass
    except OSError as exc:
        return f"cannot write in {existing}: {exc.strerror or exc}"
    return None


def _check_locations(recipe: Recipe, errors: list[tuple[str, str]]) -> None:
    from mcrx.store.paths import cache_root

    problem = writable_folder_problem(recipe.output_dir)
    if problem:
        errors.append(("output" if recipe.output is not None else "name",
                       f"the output folder: {problem}"))
    problem = writable_folder_problem(cache_root())
    if problem:
        errors.append(("MCRX_CACHE_DIR", f"the embedding cache: {problem}"))


def check_recipe(
    recipe: Recipe, registry: Registry, check_files: bool = True
) -> list[tuple[str, str]]:
    """Every problem of ``recipe`` against the loaded plugins, as (location, message)."""
    errors: list[tuple[str, str]] = []
    known_spaces: dict[str, Any] = {}
    refs = [("base", recipe.base)] + [(f"leaves.{i}", leaf) for i, leaf in enumerate(recipe.leaves)]
    errors.extend(bind_features_spaces(refs, registry))  # features/<name>: dim, modalities
    for loc, ref in refs:
        try:
            spec = registry.space(ref.space)
        except UnknownComponentError as exc:
            errors.append((f"{loc}.space", str(exc)))
            continue
        if ref.space in known_spaces:
            errors.append((f"{loc}.space", f"{ref.space} appears twice in the chain"))
        known_spaces[ref.space] = spec
        _check_params(spec, ref.params, f"{loc}.params", errors, check_files)

    try:
        rules = registry.method(recipe.method).rules
    except UnknownComponentError as exc:
        errors.append(("method", str(exc)))
        rules = None
    if rules is not None:
        connector = recipe.training.connector
        for name, full in (("connector", connector.name if connector and connector.name
                            else rules.connector),
                           ("loss", recipe.training.loss or rules.loss)):
            try:
                component = registry.get(name, full)
            except UnknownComponentError as exc:
                errors.append((f"training.{name}", str(exc)))
            else:
                if name == "connector":
                    _check_params(component, connector.params if connector else {},
                                  "training.connector.params", errors, check_files)
        if rules.max_leaves is not None and len(recipe.leaves) > rules.max_leaves:
            errors.append(("leaves", f"{recipe.method} connects exactly two spaces: give one "
                           f"leaf, not {len(recipe.leaves)}" if rules.max_leaves == 1 else
                           f"{recipe.method} takes at most {rules.max_leaves} leaves, not "
                           f"{len(recipe.leaves)}"))

    seen = {recipe.base.space}
    chain_ok = True
    for i, leaf in enumerate(recipe.leaves):
        parent = recipe.parent_of(leaf)
        if parent not in seen:
            errors.append((f"leaves.{i}.parent", f"{parent!r} is not the base or an earlier "
                           f"leaf (declared so far: {sorted(seen)})"))
            chain_ok = False
        seen.add(leaf.space)
        for field, declared in (("modality", leaf.modality),
                                ("parent_modality", leaf.parent_modality)):
            if declared is not None and declared == leaf.bridge:
                errors.append((f"leaves.{i}.{field}", f"{declared!r} is the bridge; the "
                               "modality brought across must be another one"))
                chain_ok = False
        if (rules is not None and rules.leaves_attach_to_base and leaf.parent
                and leaf.parent != recipe.base.space):
            errors.append((f"leaves.{i}.parent", f"{recipe.method} leaves attach to the base"))
        if not registry.has("modality", leaf.bridge):
            errors.append((f"leaves.{i}.bridge", f"unknown modality {leaf.bridge!r}; known: "
                           f"{registry.names('modality')}"))
            chain_ok = False
            continue
        for space in (leaf.space, parent):
            spec = known_spaces.get(space)
            if spec is not None and leaf.bridge not in spec.modalities:
                errors.append((f"leaves.{i}.bridge", f"{leaf.bridge!r} is not a modality of "
                               f"space {space} (it has {list(spec.modalities)})"))
                chain_ok = False
        for field, declared, space in (("modality", leaf.modality, leaf.space),
                                       ("parent_modality", leaf.parent_modality, parent)):
            spec = known_spaces.get(space)
            if declared and spec is not None and declared not in spec.modalities:
                errors.append((f"leaves.{i}.{field}", f"{declared!r} is not a modality of "
                               f"space {space} (it has {list(spec.modalities)})"))
                chain_ok = False

    for modality in recipe.memories:
        if not registry.has("modality", modality):
            errors.append((f"memories.{modality}", f"unknown modality {modality!r}; known: "
                           f"{registry.names('modality')}"))

    if chain_ok and len(known_spaces) == len(refs):
        resolved = True
        for i, leaf in enumerate(recipe.leaves):
            try:
                resolve_leaf_modalities(recipe, leaf, registry)
            except McrxError as exc:
                errors.append((f"leaves.{i}", str(exc)))
                resolved = False
        if resolved:
            needs = needed_memories(resolve_links(recipe, registry))
            for modality, spaces in needs.items():
                if modality not in recipe.memories:
                    errors.append(("memories", f"missing a {modality!r} memory (needed by "
                                   f"{', '.join(spaces)})"))
                    continue
                _check_source(recipe.memories[modality], modality, spaces,
                              f"memories.{modality}", registry, errors, check_files)
        spaces_of = {m: [s for s, spec in known_spaces.items() if m in spec.modalities][:1]
                     for e in recipe.evaluation for m in e.data}
        texts = [s for s, spec in known_spaces.items() if "text" in spec.modalities]
        errors.extend(evaluation_problems(recipe.evaluation, registry, spaces_of, texts,
                                          check_files))
    if check_files:
        _check_locations(recipe, errors)
    return errors
