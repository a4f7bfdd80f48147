"""Fixtures of the search tests: a real (small) demo model trained once per session, the toy
world's held-out items written as .npy files, a collection of them, and a real uvicorn
server process over that collection."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from search_helpers import ITEMS, MODALITIES, QUERIES, Server
from typer.testing import CliRunner

from mcrx.cli import app
from mcrx.search.demo import write_demo_files


@pytest.fixture(scope="session")
def search_model(tmp_path_factory, make_small_recipe, cache_dir) -> Path:
    """A unified model built by the real pipeline (`mcrx extend`) on the shrunk demo recipe."""
    out = tmp_path_factory.mktemp("search-model")
    recipe = out / "small-demo.yaml"
    recipe.write_text(yaml.safe_dump(make_small_recipe("demo.yaml", out / "run"),
                                     sort_keys=False))
    # session fixtures run before the autouse per-test cache fixture: point the toy spaces'
    # cache at the session's one here too
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MCRX_CACHE_DIR", str(cache_dir))
        patch.setenv("HF_HUB_OFFLINE", "1")
        result = CliRunner().invoke(app, ["extend", str(recipe), "--no-progress"])
    assert result.exit_code == 0, result.output
    return out / "run" / "model"


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory) -> dict[str, Path]:
    """``files/<modality>/class-<c>/<modality>-<i>.npy`` and ``queries/...`` of the toy world."""
    return write_demo_files(tmp_path_factory.mktemp("search-files"), count=ITEMS,
                            queries=QUERIES)


@pytest.fixture(scope="session")
def demo_collection(tmp_path_factory, search_model, demo_files, cache_dir) -> Path:
    """A collection of all four modalities (read-only: tests that change one copy it)."""
    from mcrx.search import Collection

    path = tmp_path_factory.mktemp("search-collection") / "toy.mcrx"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MCRX_CACHE_DIR", str(cache_dir))
        with Collection(path, model=search_model) as collection:
            for modality in MODALITIES:
                report = collection.index([demo_files["files"] / modality], modality=modality)
                assert report.added == ITEMS and not report.failed
    return path


@pytest.fixture(scope="session")
def server(tmp_path_factory, demo_collection, cache_dir):
    """`mcrx serve` over the demo collection, for the API and the page tests."""
    tmp = tmp_path_factory.mktemp("server-tmp")
    running = Server(demo_collection, cache_dir, tmp)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def collection_copy(tmp_path, demo_collection) -> Path:
    """A private copy of the demo collection, for tests that change it."""
    target = tmp_path / "copy.mcrx"
    shutil.copytree(demo_collection, target)
    return target
