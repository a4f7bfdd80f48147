"""Stage 3, train: per leaf, the recipe's connector and loss (by default the method's) are
fitted on that leaf's pseudo pairs by the aligner, resuming from the last checkpoint of the
same inputs; a connector trained before for the same inputs is reused. Also the closed-form
linear baseline, fitted on the bridge memory alone.

"The same inputs" are the pseudo pairs, the connector's name and params, its spec, the
training settings, the seed, and the versions of the code that trains it: mcrx's own and
those of the plugins that registered the connector and the loss (``PluginInfo.version``),
so a plugin release that fixes its connector retrains instead of loading old weights.
``--retrain`` (:func:`retraining`) ignores trained connectors and checkpoints altogether,
for code changed without a version bump."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from mcrx.errors import McrxError
from mcrx.methods.common import LinearConnector
from mcrx.methods.params import LinearParams
from mcrx.stages.context import Run
from mcrx.store.connectors import load_connector_state, save_connector_state
from mcrx.store.fingerprint import fingerprint_of
from mcrx.store.paths import slug
from mcrx.ui.console import console

#: set by ``mcrx extend --retrain`` around a run (:func:`retraining`)
RETRAIN: ContextVar[bool] = ContextVar("mcrx_retrain", default=False)


@contextmanager
def retraining(enabled: bool = True) -> Iterator[None]:
    """Within this block, :func:`train_connectors` trains every connector afresh: neither a
    trained connector of the same inputs nor a checkpoint is reused (the new weights then
    replace the old ones, under the same fingerprint)."""
    token = RETRAIN.set(enabled)
    try:
        yield
    finally:
        RETRAIN.reset(token)


def code_versions(registry, connector_name: str, loss_name: str) -> dict[str, str]:
    """The versions of the code a trained connector depends on: mcrx's and those of the
    plugins that registered the connector and the loss (empty when a plugin declares none)."""
    import mcrx

    versions = {"mcrx": mcrx.__version__}
    for kind, name in (("connector", connector_name), ("loss", loss_name)):
        plugin = registry.get(kind, name).plugin
        info = registry.plugins.get(plugin)
        versions[f"{kind}:{plugin}"] = info.version if info is not None else ""
    return versions


def connector_fingerprint(run: Run, link, pairs_fingerprint: str, seed: int) -> str:
    """The key a trained connector is stored and found under (see the module docstring)."""
    chain = run.chain
    return fingerprint_of("train", pairs_fingerprint, chain.connector_name,
                          chain.connector_params, run.connector_spec(link).as_dict(),
                          training_settings(run.recipe.training), seed,
                          code_versions(run.registry, chain.connector_name, chain.loss_name))


def train_connectors(run: Run, pairs, stop_after_steps: int | None = None):
    """Leaf space → trained connector, and leaf space → training report."""
    from mcrx.train.aligner import align

    console.rule("[bold]3 · aligner")
    recipe, chain = run.recipe, run.chain
    connectors, reports = {}, {}
    for link in chain.links:
        leaf_pairs, pairs_fingerprint = pairs[link.space]
        spec = run.connector_spec(link)
        seed = recipe.seed + link.index
        fingerprint = connector_fingerprint(run, link, pairs_fingerprint, seed)
        retrain = RETRAIN.get() or bool(getattr(run, "retrain", False))
        torch.manual_seed(seed)  # connector initialisation
        connector = run.registry.connector(chain.connector_name).build(
            spec, params=chain.connector_params
        )
        loss = run.registry.loss(chain.loss_name).build(recipe.training)
        path = run.out / "connectors" / f"{slug(link.space)}.safetensors"
        done = None if retrain else load_connector_state(path, fingerprint)
        if done is not None:
            connector.load_state_dict(done)
            connector.eval()
            console.print(f"  {link.space}: trained before")
            reports[link.space] = {"resumed_from": None, "seconds": 0.0}
        else:
            result = align(
                connector, loss, leaf_pairs, recipe.training,
                checkpoint_dir=run.out / "checkpoints" / slug(link.space),
                # --retrain: checkpoints of the same inputs are not resumed either
                fingerprint=(fingerprint_of(fingerprint, "retrain", time.time_ns())
                             if retrain else fingerprint), seed=seed,
                description=f"train {link.space} → {link.parent}",
                show_progress=run.show_progress, stop_after_steps=stop_after_steps,
                device=run.device, log_dir=run.out / "logs",
            )
            if stop_after_steps is not None and result.steps > stop_after_steps:
                raise McrxError(f"stopped after {stop_after_steps} steps as asked")
            if run.state.is_main_process:
                save_connector_state(path, connector, fingerprint)
            run.state.wait_for_everyone()
            reports[link.space] = {"resumed_from": result.resumed_from,
                                   "seconds": round(result.seconds, 2),
                                   "steps": result.steps, "final_loss": result.final_loss,
                                   # (step, loss) every 10 steps: the report's loss curves
                                   "losses": [list(sample) for sample in result.losses]}
            console.print(f"  {link.space}: {result.steps} steps in {result.seconds:.1f} s"
                          + (f", final loss {result.final_loss:.4f}"
                             if result.final_loss is not None else ""))
        connectors[link.space] = connector
    return connectors, reports


def training_settings(training) -> dict:
    """The training fields a connector depends on: ``loss_every`` only changes how often the
    loss is read, and the default ``precision`` is left out so that connectors trained
    before precisions existed keep their fingerprint."""
    exclude = {"loss_every", "log_with"} | (
        {"precision"} if training.precision == "fp32" else set())
    return training.model_dump(exclude=exclude)


def fit_baselines(run: Run, memories) -> dict[str, LinearConnector]:
    """Closed-form linear maps leaf → parent fitted on the bridge memory alone. Fitted once
    per run: ``mcrx extend`` fits them right after the pseudo pairs, releases the memories,
    and evaluation gets the same connectors back."""
    if getattr(run, "baselines", None) is not None:
        return run.baselines
    connectors = {}
    for link in run.chain.links:
        connector = LinearConnector(run.connector_spec(link),
                                    LinearParams(solver=run.recipe.baseline))
        connector.fit(memories[link.bridge, link.space].rows,
                      memories[link.bridge, link.parent].rows)
        connectors[link.space] = connector
    run.baselines = connectors
    return connectors
