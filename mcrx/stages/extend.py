"""``mcrx extend``: the order of the stages, nothing else.

    validate → 1 encode → 2 pseudo pairs → 3 train → 4 evaluate → write

Each stage reads files and writes files named by a fingerprint of its inputs, so running the
same recipe again skips finished stages, and a crash resumes where it stopped:

    $MCRX_CACHE_DIR/embeddings/<space>/<modality>/<key>/   encoded memories (shared cache)
    OUT/pseudo_pairs/<leaf>/                               pseudo pairs per leaf
    OUT/checkpoints/<leaf>/step-*/                         resumable training state
    OUT/connectors/<leaf>.safetensors                      trained connector per leaf
    OUT/model/                                             the unified model
    OUT/metrics.json, OUT/report.md                        evaluation
"""

from __future__ import annotations

import time
from typing import Any

from rich.markup import escape

from mcrx.plugin.registry import Registry
from mcrx.recipe.schema import Recipe
from mcrx.stages.context import Run
from mcrx.stages.encode import encode_evaluation, encode_memories
from mcrx.stages.evaluate import evaluate_run, make_model
from mcrx.stages.pairs import build_pairs
from mcrx.stages.train import fit_baselines, train_connectors
from mcrx.store.artifact import check_model_destination
from mcrx.store.atomic import write_json_atomic
from mcrx.store.locks import holding_output_lock
from mcrx.ui.console import console
from mcrx.ui.report import write_report


@holding_output_lock  # a second extend on the same OUT stops with a message (store.locks)
def extend(
    recipe: Recipe,
    registry: Registry,
    show_progress: bool = True,
    workers: int = 0,
    stop_after_steps: int | None = None,
    drop_bad_rows: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Run every stage of ``recipe``; returns the metrics written to OUT/metrics.json
    (an empty dict in every process but the main one of a distributed launch).
    ``drop_bad_rows``: leave NaN/Inf/all-zero embedding rows out instead of refusing them;
    ``force``: write OUT/model into a non-empty folder that is not an mcrx model."""
    began = time.perf_counter()
    timings: dict[str, float] = {}  # stage → seconds, for the report
    clock = [began]

    def lap(stage: str) -> None:
        now = time.perf_counter()
        timings[stage] = round(now - clock[0], 2)
        clock[0] = now

    run = Run(recipe, registry, show_progress=show_progress, workers=workers,
              drop_bad_rows=drop_bad_rows)
    run.out.mkdir(parents=True, exist_ok=True)
    if run.state.is_main_process:
        check_model_destination(run.out / "model", force)  # refuse now, not after training
        write_json_atomic(run.out / "recipe.json", recipe.model_dump(mode="json"))
        show_plan(run)

    # 1. Encoding: every process encodes its share of each memory into the shared cache.
    memories = encode_memories(run)
    evaluation_sets = encode_evaluation(run)
    lap("1 · encode memories and evaluation sets")
    # 2. Pseudo pairs: query chunks shared among processes.
    pairs = build_pairs(run, memories)
    lap("2 · pseudo pairs")
    # The baseline is the last user of the memories: fit it now, then let them go, so that
    # training and evaluation do not hold paper-scale memories in RAM.
    if recipe.baseline != "none":
        fit_baselines(run, memories)
    memories.clear()
    lap("linear baseline")
    # 3. Training: DDP across processes.
    connectors, training_report = train_connectors(run, pairs, stop_after_steps)
    lap("3 · train connectors")
    if not run.state.is_main_process:  # evaluation and writing: the main process only
        run.state.wait_for_everyone()
        return {}

    # 4. Evaluation, then the artifact and the report.
    console.rule("[bold]4 · evaluation")
    target = next(iter(connectors.values())).target
    model = make_model(run, connectors, run.chain.connector_name, run.chain.connector_params,
                       target)
    metrics = evaluate_run(run, model, evaluation_sets, memories, training_report)
    lap("4 · evaluate (and draw)")
    metrics["timings"] = timings
    metrics["seconds"] = round(time.perf_counter() - began, 2)
    metrics["encoded_items"] = run.encoded

    model.manifest["metrics"] = metrics
    model.save(run.out / "model", force=force)
    write_json_atomic(run.out / "metrics.json", metrics)
    write_report(metrics, run.out / "report.md")
    run.state.wait_for_everyone()
    return metrics


def show_plan(run: Run) -> None:
    """The plan first (``mcrx plan``): what the run will cost, before it costs it. A plan
    that cannot be made (a plugin's dataset that cannot be counted) never stops the run."""
    from mcrx.stages.plan import make_plan, print_plan

    try:
        plan = make_plan(run.recipe, run.registry, device=str(run.device))
    except Exception as exc:  # noqa: BLE001  (the plan is advice; the run goes on)
        console.print(f"[yellow]plan unavailable[/]: {escape(str(exc))}", highlight=False)
        return
    print_plan(plan)
