"""The README's Python examples run: every ```python block marked ``<!-- tested ... -->``
is executed, in order, in a folder whose ``runs/demo`` is a (small) ``make demo`` run, so
an example that names an undefined variable or a changed API fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
MARKED_BLOCK = re.compile(r"<!-- tested[^>]*-->\s*```python\n(.*?)```", re.S)


def readme_blocks() -> list[str]:
    return MARKED_BLOCK.findall((ROOT / "README.md").read_text())


def test_the_api_example_is_marked():
    assert any('mcrx.load("runs/demo/model")' in block for block in readme_blocks())


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory, cache_dir, make_small_recipe) -> Path:
    """A folder holding runs/demo from the demo recipe, shrunk (conftest's small recipe)."""
    import os

    from mcrx.plugin.manager import get_registry
    from mcrx.recipe import load_recipe
    from mcrx.stages.extend import extend

    os.environ["MCRX_CACHE_DIR"] = str(cache_dir)  # module scope: before the autouse fixture
    folder = tmp_path_factory.mktemp("readme")
    recipe = folder / "demo.yaml"
    recipe.write_text(yaml.safe_dump(make_small_recipe("demo.yaml", folder / "runs" / "demo")))
    extend(load_recipe(recipe, registry=get_registry()), get_registry(), show_progress=False)
    return folder


def test_readme_python_blocks_run(demo_folder, monkeypatch, capsys):
    monkeypatch.chdir(demo_folder)
    namespace: dict = {"__name__": "__readme__"}
    for block in readme_blocks():
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102  (our own README)
    printed = capsys.readouterr().out
    found = re.search(r"audio→pointcloud R@1 \(class\): ([\d.]+) %", printed)
    assert found, printed
    assert float(found.group(1)) > 10  # far above chance (2.6 %) even for the small demo
