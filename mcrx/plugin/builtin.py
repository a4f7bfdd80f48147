"""Components that ship with the core, registered as the plugin ``mcrx`` exactly as a third
party would register its own: the four standard modalities, and both papers — each as a
method (its pools), a connector and a loss, implemented in :mod:`mcrx.methods.exmcr` and
:mod:`mcrx.methods.cmcr` — plus the closed-form linear baseline. Imports without torch:
every factory imports its paper's module when it is called."""

from __future__ import annotations

from mcrx.methods.params import CMcrParams, ExMcrParams, LinearParams
from mcrx.plugin.hookspecs import hookimpl
from mcrx.plugin.interfaces import MethodRules

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
