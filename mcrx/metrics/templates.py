"""Prompt templates for zero-shot classification, each preset with where it comes from.

A template holds ``{}`` where the class name goes. Zero-shot classification encodes every
template filled with each class name, normalises, averages per class and renormalises (the
prompt ensembling of CLIP, Radford et al. 2021, §3.1.4, which ULIP and CLAP evaluations use).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mcrx.errors import McrxError

#: ULIP's 64 templates for ModelNet40 zero-shot, verbatim (one lacks its final period):
#: salesforce/ULIP ``data/templates.json``, key ``modelnet40_64`` (commit f194ddb), read by
#: ULIP's ``main.py`` zero-shot test; the Ex-MCR paper's 3D evaluation uses the same.
MODELNET40_64: tuple[str, ...] = (
    "a point cloud model of {}.", "There is a {} in the scene.", "There is the {} in the scene.",
    "a photo of a {} in the scene.", "a photo of the {} in the scene.",
    "a photo of one {} in the scene.", "itap of a {}.", "itap of my {}.", "itap of the {}.",
    "a photo of a {}.", "a photo of my {}.", "a photo of the {}.", "a photo of one {}.",
    "a photo of many {}.", "a good photo of a {}.", "a good photo of the {}.",
    "a bad photo of a {}.", "a bad photo of the {}.", "a photo of a nice {}.",
    "a photo of the nice {}.", "a photo of a cool {}.", "a photo of the cool {}.",
    "a photo of a weird {}.", "a photo of the weird {}.", "a photo of a small {}.",
    "a photo of the small {}.", "a photo of a large {}.", "a photo of the large {}.",
    "a photo of a clean {}.", "a photo of the clean {}.", "a photo of a dirty {}.",
    "a photo of the dirty {}.", "a bright photo of a {}.", "a bright photo of the {}.",
    "a dark photo of a {}.", "a dark photo of the {}.", "a photo of a hard to see {}.",
    "a photo of the hard to see {}.", "a low resolution photo of a {}.",
    "a low resolution photo of the {}.", "a cropped photo of a {}.",
    "a cropped photo of the {}.", "a close-up photo of a {}.", "a close-up photo of the {}.",
    "a jpeg corrupted photo of a {}.", "a jpeg corrupted photo of the {}.",
    "a blurry photo of a {}.", "a blurry photo of the {}.", "a pixelated photo of a {}.",
    "a pixelated photo of the {}.", "a black and white photo of the {}.",
    "a black and white photo of a {}", "a plastic {}.", "the plastic {}.", "a toy {}.",
    "the toy {}.", "a plushie {}.", "the plushie {}.", "a cartoon {}.", "the cartoon {}.",
    "an embroidered {}.", "the embroidered {}.", "a painting of the {}.", "a painting of a {}.",
)

#: LAION-CLAP's zero-shot template for ESC-50, with its final period, as its evaluation code
#: writes it: LAION-AI/CLAP ``src/laion_clap/evaluate/eval_zeroshot_classification.py``
#: (commit 1fd4c37, line 52, ``f"This is a sound of {t}."``, so since ae31cef). Its README
#: example and ``experiment_scripts/esc50_api.py`` write ``"This is a sound of " + t``,
#: without the period. One template.
CLAP_ESC50: tuple[str, ...] = ("This is a sound of {}.",)

#: CLIP's 80 ImageNet templates (openai/CLIP ``notebooks/Prompt_Engineering_for_ImageNet``;
#: identical to open_clip's ``OPENAI_IMAGENET_TEMPLATES``), in their published order.
CLIP_IMAGENET_80: tuple[str, ...] = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.",
    "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.",
    "a photo of a hard to see {}.", "a bright photo of a {}.", "a photo of a clean {}.",
    "a photo of a dirty {}.", "a dark photo of the {}.", "a drawing of a {}.",
    "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.",
    "a bright photo of the {}.", "a cropped photo of a {}.", "a plastic {}.",
    "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.",
    "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.",
    "a close-up photo of the {}.", "a photo of a {}.", "the origami {}.",
    "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.", "a origami {}.",
    "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.",
    "a photo of a nice {}.", "a photo of a weird {}.", "a blurry photo of a {}.",
    "a cartoon {}.", "art of a {}.", "a sketch of the {}.", "a embroidered {}.",
    "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.",
    "a photo of the small {}.", "a photo of the weird {}.", "the cartoon {}.", "art of the {}.",
    "a drawing of the {}.", "a photo of the large {}.", "a black and white photo of a {}.",
    "the plushie {}.", "a dark photo of a {}.", "itap of a {}.", "graffiti of the {}.",
    "a toy {}.", "itap of my {}.", "a photo of a cool {}.", "a photo of a small {}.",
    "a tattoo of the {}.",
)

#: the ModelNet40 class names in ULIP's label order (salesforce/ULIP ``data/labels.json``)
MODELNET40_CLASSES: tuple[str, ...] = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone",
    "cup", "curtain", "desk", "door", "dresser", "flower pot", "glass box", "guitar", "keyboard",
    "lamp", "laptop", "mantel", "monitor", "night stand", "person", "piano", "plant", "radio",
    "range hood", "sink", "sofa", "stairs", "stool", "table", "tent", "toilet", "tv stand",
    "vase", "wardrobe", "xbox",
)

#: preset name → templates (a recipe's ``templates:`` names one, or lists its own)
TEMPLATE_PRESETS: dict[str, tuple[str, ...]] = {
    "modelnet40_64": MODELNET40_64,
    "clap_esc50": CLAP_ESC50,
    "clip_imagenet_80": CLIP_IMAGENET_80,
    "name": ("{}",),  # the class name alone
}

#: preset name → class names (a recipe's ``classes:`` names one, or lists its own)
CLASS_PRESETS: dict[str, tuple[str, ...]] = {"modelnet40": MODELNET40_CLASSES}


def resolve_templates(templates: str | Sequence[str]) -> list[str]:
    """A preset's templates, or the user's own list (each must hold one ``{}``)."""
    if isinstance(templates, str):
        if templates not in TEMPLATE_PRESETS:
            raise McrxError(f"unknown template preset {templates!r}; presets: "
                            f"{', '.join(sorted(TEMPLATE_PRESETS))}, or give a list")
        return list(TEMPLATE_PRESETS[templates])
    out = list(templates)
    if not out:
        raise McrxError("templates: the list is empty")
    for template in out:
        if template.count("{}") != 1:
            raise McrxError(f"templates: {template!r} must hold exactly one '{{}}' where the "
                            "class name goes")
    return out


def prompts(classes: Sequence[str], templates: Sequence[str]) -> tuple[list[str], list[int]]:
    """Every template filled with every class name, and the class index of each prompt:
    class-major order (class 0's templates first)."""
    texts, labels = [], []
    for index, name in enumerate(classes):
        for template in templates:
            texts.append(template.format(name))
            labels.append(index)
    return texts, labels


def zeroshot_problems(evaluation: Any, loc: str, check_files: bool = True
                      ) -> list[tuple[str, str]]:
    """What ``mcrx validate`` reports of a zero-shot set's classes and templates (torch-free):
    an unknown preset, a template without its one ``{}``, a class file that is missing."""
    from pathlib import Path

    problems = []
    if evaluation.prompts is None:
        try:
            resolve_templates(evaluation.templates)
        except McrxError as exc:
            problems.append((f"{loc}.templates", str(exc).removeprefix("templates: ")))
    classes = evaluation.classes
    if isinstance(classes, str) and classes not in CLASS_PRESETS:
        if check_files and not Path(classes).is_file():
            problems.append((f"{loc}.classes", f"not found: {classes} (a .txt file with one "
                             f"class name per line, or a preset: {', '.join(CLASS_PRESETS)})"))
    elif isinstance(classes, list) and len(set(classes)) != len(classes):
        problems.append((f"{loc}.classes", "class names must be distinct"))
    return problems


def read_class_names(classes: list[str] | str | None, where: str) -> list[str] | None:
    """An evaluation set's ``classes:`` as a list: given, a preset (:data:`CLASS_PRESETS`),
    or a UTF-8 .txt file with one name per line; None when the set names none."""
    from pathlib import Path

    if classes is None or isinstance(classes, list):
        return classes
    if classes in CLASS_PRESETS:
        return list(CLASS_PRESETS[classes])
    path = Path(classes)
    if not path.is_file():
        raise McrxError(f"{where}.classes: {classes!r} is neither a class preset "
                        f"({', '.join(CLASS_PRESETS)}) nor a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise McrxError(f"{where}.classes: cannot read {path} ({exc})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]
