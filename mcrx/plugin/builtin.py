"""Components that ship with the core, registered as the plugin ``mcrx`` exactly as a third
party would register its own: the four standard modalities, and both papers — each as a
method (its pools), a connector and a loss, implemented in :mod:`mcrx.methods.exmcr` and
:mod:`mcrx.methods.cmcr` — plus the closed-form linear baseline. Imports without torch:
every factory imports its paper's module when it is called.

A second built-in plugin, ``features`` (:class:`PrecomputedFeatures`), registers the space
family ``features/*``: embeddings a user computed elsewhere (on a cluster, with any model),
joined without writing a plugin. Its width and modalities are params, so each member is
bound into the registry when a recipe names it (:func:`bind_features_spaces`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mcrx.errors import McrxError
from mcrx.methods.params import CMcrParams, ExMcrParams, LinearParams
from mcrx.plugin.hookspecs import hookimpl
from mcrx.plugin.interfaces import Encoder, MethodRules, Space
from mcrx.store.fingerprint import fingerprint_of

STANDARD_MODALITIES = {
    "image": "still pictures (files or arrays)",
    "text": "strings",
    "audio": "sound clips",
    "pointcloud": "3D point sets (N×3 or N×6)",
}


@hookimpl
def register_modalities(register):
    for name, description in STANDARD_MODALITIES.items():
        register(name, description=description)


# -- Ex-MCR ------------------------------------------------------------------------------
def _exmcr_method(params):
    from mcrx.methods.exmcr import METHOD

    return METHOD


def _exmcr_connector(spec, params):
    from mcrx.methods.exmcr import ExMcrConnector

    return ExMcrConnector(spec, params)


def _exmcr_loss(training, params):
    from mcrx.methods.exmcr import ExMcrLoss

    return ExMcrLoss(training.temperature, training.intra_weight)


# -- C-MCR -------------------------------------------------------------------------------
def _cmcr_method(params):
    from mcrx.methods.cmcr import METHOD

    return METHOD


def _cmcr_connector(spec, params):
    from mcrx.methods.cmcr import CMcrConnector

    return CMcrConnector(spec, params)


def _cmcr_loss(training, params):
    from mcrx.methods.cmcr import CMcrLoss

    return CMcrLoss(training.cmcr_temperature or training.temperature, training.intra_weight)


# -- the linear baseline -----------------------------------------------------------------
def _linear_connector(spec, params):
    from mcrx.methods.common import LinearConnector

    return LinearConnector(spec, params)


@hookimpl
def register_methods(register):
    register("ex-mcr", _exmcr_method,
             rules=MethodRules(connector="mcrx/ex-mcr", loss="mcrx/ex-mcr", target="parent"),
             description="Ex-MCR: every modality a query (three pools); leaves extend the "
             "frozen base")
    register("c-mcr", _cmcr_method,
             rules=MethodRules(connector="mcrx/c-mcr", loss="mcrx/c-mcr", target="new",
                               max_leaves=1, leaves_attach_to_base=True),
             description="C-MCR: bridge-centric pairs; two spaces projected into a new one")


@hookimpl
def register_connectors(register):
    register("ex-mcr", _exmcr_connector, params=ExMcrParams,
             description="Ex-MCR: identity-initialised f_l + MLP f_m into the frozen parent")
    register("c-mcr", _cmcr_connector, params=CMcrParams,
             description="C-MCR: one projector per space into a new space")
    register("linear", _linear_connector, params=LinearParams,
             description="closed-form linear map fitted on the bridge (baseline)")


@hookimpl
def register_losses(register):
    register("ex-mcr", _exmcr_loss,
             description="λ·½‖f_l(ã)−t̃‖ + ¼·Σ four InfoNCE terms against the frozen base")
    register("c-mcr", _cmcr_loss,
             description="two InfoNCE terms in the new space + λ·intra-space attraction")



# -- the papers' benchmarks, read from their downloaded layouts (mcrx.datasets) ----------
def _esc50(params):
    from mcrx.datasets.esc50 import Esc50Dataset

    return Esc50Dataset(params)


def _audiocaps(params):
    from mcrx.datasets.audio_captions import AudioCapsDataset

    return AudioCapsDataset(params)


def _clotho(params):
    from mcrx.datasets.audio_captions import ClothoDataset

    return ClothoDataset(params)


def _wavcaps(params):
    from mcrx.datasets.audio_captions import WavCapsRetrievalDataset

    return WavCapsRetrievalDataset(params)


def _coco(params):
    from mcrx.datasets.karpathy import CocoDataset

    return CocoDataset(params)


def _flickr30k(params):
    from mcrx.datasets.karpathy import Flickr30kDataset

    return Flickr30kDataset(params)


def _modelnet40(params):
    from mcrx.datasets.modelnet40 import ModelNet40Dataset

    return ModelNet40Dataset(params)


def _objaverse_lvis(params):
    from mcrx.datasets.objaverse_lvis import ObjaverseLvisDataset

    return ObjaverseLvisDataset(params)


@hookimpl
def register_datasets(register):
    from mcrx.datasets import params as p

    register("esc50", _esc50, modalities=("audio",), params=p.Esc50Params,
             description="ESC-50 as cloned (meta/esc50.csv, audio/): 50 classes, folds 1-5")
    register("audiocaps", _audiocaps, modalities=("audio", "text"), params=p.AudioCapsParams,
             description="AudioCaps CSV split (test.csv) and its clips: 5 captions per clip")
    register("clotho", _clotho, modalities=("audio", "text"), params=p.ClothoParams,
             description="Clotho v2 captions CSV and clips (evaluation split): 5 captions each")
    register("wavcaps-retrieval", _wavcaps, modalities=("audio", "text"),
             params=p.WavCapsRetrievalParams,
             description="a WavCaps retrieval JSON (AudioCaps or Clotho test) and its clips")
    register("coco", _coco, modalities=("image", "text"), params=p.KarpathyParams,
             description="COCO on Karpathy's split (dataset_coco.json, val2014/): 5k test")
    register("flickr30k", _flickr30k, modalities=("image", "text"), params=p.KarpathyParams,
             description="Flickr30K on Karpathy's split (dataset_flickr30k.json): 1k test")
    register("modelnet40", _modelnet40, modalities=("pointcloud",),
             params=p.ModelNet40Params,
             description="ULIP's ModelNet40 test file (2,468 shapes, 8192 points), 40 classes")
    register("objaverse-lvis", _objaverse_lvis, modalities=("pointcloud",),
             params=p.ObjaverseLvisParams,
             description="OpenShape's Objaverse-LVIS split (lvis.json + .npy), 1,156 classes")

# -- precomputed features: the `features` plugin -------------------------------------------
FEATURES_PLUGIN = "features"
FEATURES_FAMILY = "features/*"


class FeaturesParams(BaseModel):
    """``params:`` of a ``features/<name>`` space: what the precomputed embeddings are."""

    model_config = ConfigDict(extra="forbid")
    dim: int = Field(gt=0, description="width of every embedding file of this space (N×dim)")
    modalities: list[str] = Field(
        min_length=1, description="the modalities the files embed, e.g. [image, text]"
    )
    description: str = Field("", description="free text: the model the features come from")


class FeaturesSpace(Space):
    """A space known only by its embeddings: every memory and evaluation set of its
    modalities gives ``embeddings: {features/<name>: file}``; there is no encoder."""

    def __init__(self, name: str, params: FeaturesParams) -> None:
        self.name = name
        self.dim = params.dim
        self.modalities = tuple(params.modalities)

    def encoder(self, modality: str) -> Encoder:
        raise McrxError(
            f"{self.name} holds precomputed features and has no encoder: give the "
            f"{modality!r} rows as a file, `embeddings: {{{self.name}: {modality}.npy}}`"
        )

    def fingerprint(self) -> str:
        return fingerprint_of(FEATURES_PLUGIN, self.name, self.dim, list(self.modalities))


def _features_space(full_name: str, params: FeaturesParams) -> FeaturesSpace:
    return FeaturesSpace(full_name, params)


class PrecomputedFeatures:
    """The built-in plugin ``features`` (registered by :mod:`mcrx.plugin.manager`)."""

    @hookimpl
    def register_spaces(self, register):
        register("*", _features_space, params=FeaturesParams,
                 description="precomputed embeddings (params: dim, modalities); every "
                 "source gives `embeddings:` files for it")


def bind_features_spaces(refs: list[tuple[str, Any]], registry: Any) -> list[tuple[str, str]]:
    """Register each ``features/<name>`` of a recipe exactly, with the ``modalities`` and
    ``dim`` its params declare, so everything that asks the registry about the space (the
    chain's modalities, the width an embeddings file must have) gets its own answer.
    ``refs`` are (location, SpaceRef); returns located errors (unknown modalities)."""
    errors: list[tuple[str, str]] = []
    if not registry.registered_exactly("space", FEATURES_FAMILY):
        return errors  # the plugin is disabled
    family = registry.get("space", FEATURES_FAMILY)
    for loc, ref in refs:
        if not ref.space.startswith(f"{FEATURES_PLUGIN}/") or ref.space == FEATURES_FAMILY:
            continue
        try:
            params = FeaturesParams.model_validate(ref.params)
        except ValidationError:
            continue  # the recipe check reports these, located, against the family's model
        unknown = [m for m in params.modalities if not registry.has("modality", m)]
        if unknown:
            errors.append((f"{loc}.params.modalities", f"unknown modalities {unknown}; known: "
                           f"{registry.names('modality')}"))
            continue
        registry.bind(dataclasses.replace(
            family, name=ref.space, modalities=tuple(params.modalities), dim=params.dim,
            description=params.description or family.description))
    return errors
