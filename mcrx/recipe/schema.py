"""The recipe schema (pydantic v2, ``extra="forbid"``: a misspelt key is an error). Defaults
are the papers' settings; every field has a description (``mcrx schema`` prints them).

A recipe declares a base space, leaves chained to it through bridge modalities, unpaired
memories per modality, evaluation sets, and the aligner's settings. Reading and ``--set``
are in :mod:`.load`, the checks against installed plugins in :mod:`.check`, the resolved
chain a run works from in :mod:`.chain`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

EMBEDDING_SUFFIXES = (".npy", ".safetensors")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SpaceRef(StrictModel):
    space: str = Field(description="registered space name, e.g. 'toy/clip' or 'clip/ViT-B-32'")
    params: dict[str, Any] = Field(
        default_factory=dict, description="the space plugin's own parameters (validated by it)"
    )


class Leaf(SpaceRef):
    bridge: str = Field(description="the modality this space shares with its parent")
    parent: str | None = Field(
        None, description="the space this leaf attaches to: the base (default) or an earlier leaf"
    )
    modality: str | None = Field(
        None,
        description="the leaf modality to bring across (default: the only non-bridge "
        "modality of the space that has a memory)",
    )
    parent_modality: str | None = Field(
        None,
        description="the parent's non-bridge modality used for pseudo pairs (default: the "
        "only one with a memory)",
    )


class DataSource(StrictModel):
    """Where the items of one modality come from: raw inputs encoded by each space that
    needs them (``dataset`` or ``inputs``), or embeddings computed beforehand per space."""

    dataset: str | None = Field(None, description="a registered dataset, e.g. 'toy/world'")
    params: dict[str, Any] = Field(default_factory=dict, description="the dataset's parameters")
    inputs: Path | None = Field(
        None, description="a folder of files, a .txt file (one item per line) or a .npy array"
    )
    embeddings: dict[str, Path] = Field(
        default_factory=dict,
        description="space name → precomputed N×d embeddings (.npy or .safetensors), row "
        "aligned across spaces",
    )
    labels: Path | None = Field(None, description="class label per item (.npy or .txt)")
    limit: int | None = Field(None, gt=0, description="use only the first N items")

    @model_validator(mode="after")
    def _one_source(self) -> DataSource:
        if self.dataset and self.inputs:
            raise ValueError("give either 'dataset' or 'inputs', not both")
        if not (self.dataset or self.inputs or self.embeddings):
            raise ValueError("give 'dataset', 'inputs' or 'embeddings'")
        return self


class EvaluationSet(StrictModel):
    """A held-out set with ground truth. Either ``data`` per modality, or the shorthand
    ``dataset`` + ``params`` + ``modalities`` when one dataset renders every modality."""

    name: str = Field(description="name shown in reports")
    ground_truth: Literal["pairs", "labels"] = Field(
        "pairs",
        description="'pairs': row i of every modality is one item; 'labels': items of the "
        "same class match",
    )
    data: dict[str, DataSource] = Field(default_factory=dict, description="modality → source")
    dataset: str | None = Field(None, description="shorthand: one dataset for every modality")
    params: dict[str, Any] = Field(default_factory=dict, description="the dataset's parameters")
    modalities: list[str] = Field(default_factory=list, description="shorthand: modalities")

    @model_validator(mode="after")
    def _expand_shorthand(self) -> EvaluationSet:
        if self.dataset:
            if not self.modalities:
                raise ValueError("'dataset' needs 'modalities'")
            for modality in self.modalities:
                self.data.setdefault(
                    modality, DataSource(dataset=self.dataset, params=dict(self.params))
                )
        if len(self.data) < 2:
            raise ValueError("an evaluation set needs at least two modalities")
        return self


class ComponentRef(StrictModel):
    name: str = Field(description="registered name, e.g. 'mcrx/ex-mcr'")
    params: dict[str, Any] = Field(default_factory=dict, description="the component's params")


class Training(StrictModel):
    """Defaults are the papers' settings."""

    temperature: float = Field(0.05, gt=0, description="τ2, InfoNCE temperature")
    cmcr_temperature: float | None = Field(
        None, gt=0, description="C-MCR InfoNCE temperature (unstated in the paper; default τ2)"
    )
    noise_variance: float = Field(0.004, ge=0, description="σ² of the per-step Gaussian noise")
    intra_weight: float = Field(0.1, ge=0, description="λ, weight of the intra-space loss")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (torch default)")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="learning-rate decay")
    batch_size: int = Field(4096, gt=1, description="pseudo pairs per step")
    epochs: int = Field(36, gt=0, description="passes over the pseudo pairs")
    connector: ComponentRef | None = Field(
        None, description="connector (default: mcrx/ex-mcr or mcrx/c-mcr, after 'method')"
    )
    loss: str | None = Field(None, description="loss (default: after 'method')")
    checkpoint_every: int = Field(
        200, gt=0, description="save a resumable checkpoint every N steps"
    )


class Retrieval(StrictModel):
    temperature: float = Field(0.01, gt=0, description="τ1, softmax temperature of retrieval")
    mode: Literal["exact", "top-k"] = Field(
        "exact",
        description="'exact': softmax over the whole memory (the papers); 'top-k': over each "
        "query's k nearest rows only (faster for very large memories; the cosine to the exact "
        "result is measured on a sample and reported)",
    )
    k: int = Field(256, gt=0, description="rows kept per query in 'top-k' mode")
    query_block: int = Field(2048, gt=0, description="queries per block (bounds memory use)")
    # 2048 × 8192 tiles were the fastest measured here (benchmarks/bench_retrieval.py):
    # 0.89 of torch.mm's FLOP/s against 0.76 for 4096 × 16384
    memory_block: int = Field(8192, gt=0, description="memory rows per block")


class Recipe(StrictModel):
    """A unified space: a base space, leaves chained to it, memories, evaluation sets."""

    name: str = Field(description="name of the unified space")
    description: str = Field("", description="free text")
    method: str = Field(
        description="a registered method: 'ex-mcr' (extend leaves into the frozen base), "
        "'c-mcr' (project two spaces into a new one), or a plugin's 'name/method'"
    )
    base: SpaceRef = Field(description="the base space")
    leaves: list[Leaf] = Field(min_length=1, description="spaces attached through a bridge")
    memories: dict[str, DataSource] = Field(
        description="modality → unpaired unimodal collection used to build pseudo pairs"
    )
    evaluation: list[EvaluationSet] = Field(default_factory=list, description="held-out sets")
    training: Training = Field(default_factory=Training, description="aligner settings")
    retrieval: Retrieval = Field(default_factory=Retrieval, description="pseudo-pair settings")
    baseline: Literal["lstsq", "procrustes", "none"] = Field(
        "lstsq", description="closed-form linear baseline fitted on the bridge alone"
    )
    memory_dtype: Literal["float32", "float16"] = Field(
        "float32", description="how encoded memories are stored in the cache (float16 halves "
        "the disk and page-cache footprint of paper-scale memories; rows are read as float32)"
    )
    output: Path | None = Field(None, description="output folder (default: runs/<name>)")
    seed: int = Field(0, description="seed of every random draw")

    @property
    def output_dir(self) -> Path:
        return self.output if self.output is not None else Path("runs") / self.name

    # -- the chain ------------------------------------------------------------------------
    def space_refs(self) -> list[SpaceRef]:
        return [self.base, *self.leaves]

    def space_names(self) -> list[str]:
        return [ref.space for ref in self.space_refs()]

    def parent_of(self, leaf: Leaf) -> str:
        return leaf.parent or self.base.space
