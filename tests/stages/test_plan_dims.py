"""``mcrx plan`` knows each space's width without building it: ``register(dim=)``, or for a
family a factory's ``dim_of`` (the clip plugin reads open_clip's config)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mcrx.cli import app
from mcrx.plugin.manager import get_registry
from mcrx.stages.plan import declared_dim

ROOT = Path(__file__).parents[2]


def test_clip_family_members_declare_their_width():
    registry = get_registry()
    assert registry.space("clip/ViT-B-32").dim is None  # a family: no single width
    assert declared_dim(registry, "clip/ViT-B-32") == 512
    assert declared_dim(registry, "clip/ViT-L-14") == 768
    assert declared_dim(registry, "clip/ViT-L-14-quickgelu") == 768
    assert declared_dim(registry, "clip/RN50") == 1024
    assert declared_dim(registry, "clip/not-an-architecture") is None
    assert declared_dim(registry, "toy/clip") == 64  # register(dim=)


def test_a_models_own_config_decides(tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"embed_dim": 40, "vision_cfg": {}, "text_cfg": {}}))
    assert declared_dim(get_registry(), "clip/tiny", {"model_config": str(config)}) == 40


def test_plan_of_a_clip_recipe_assumes_no_width():
    result = CliRunner().invoke(app, ["plan", str(ROOT / "recipes" / "ulip_3d.yaml"),
                                      "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["warnings"] and not any("dimension" in w for w in plan["warnings"])
