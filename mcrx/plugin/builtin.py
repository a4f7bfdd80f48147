"""Components that ship with the core, registered as the plugin ``mcrx``: the four standard
modalities, the papers' connectors and losses. Imports without torch."""

from __future__ import annotations

from mcrx.methods.params import CMcrParams, ExMcrParams, LinearParams
from mcrx.plugin.hookspecs import hookimpl

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


def _exmcr_connector(spec, params):
    from mcrx.methods.connectors import ExMcrConnector

    return ExMcrConnector(spec, params)


def _cmcr_connector(spec, params):
    from mcrx.methods.connectors import CMcrConnector

    return CMcrConnector(spec, params)


def _linear_connector(spec, params):
    from mcrx.methods.connectors import LinearConnector

    return LinearConnector(spec, params)


@hookimpl
def register_connectors(register):
    register("ex-mcr", _exmcr_connector, params=ExMcrParams,
             description="Ex-MCR: identity-initialised f_l + MLP f_m into the frozen parent")
    register("c-mcr", _cmcr_connector, params=CMcrParams,
             description="C-MCR: one projector per space into a new space")
    register("linear", _linear_connector, params=LinearParams,
             description="closed-form linear map fitted on the bridge (baseline)")


def _exmcr_loss(training, params):
    from mcrx.methods.losses import ExMcrLoss

    return ExMcrLoss(training.temperature, training.intra_weight)


def _cmcr_loss(training, params):
    from mcrx.methods.losses import CMcrLoss

    return CMcrLoss(training.cmcr_temperature or training.temperature, training.intra_weight)


@hookimpl
def register_losses(register):
    register("ex-mcr", _exmcr_loss,
             description="λ·½‖f_l(ã)−t̃‖ + ¼·Σ four InfoNCE terms against the frozen base")
    register("c-mcr", _cmcr_loss,
             description="two InfoNCE terms in the new space + λ·intra-space attraction")
