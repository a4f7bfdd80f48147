"""The recipe schema (pydantic v2, ``extra="forbid"``: a misspelt key is an error). Defaults
are the papers' settings; every field has a description (``mcrx schema`` prints them).

A recipe declares a base space, leaves chained to it through bridge modalities, unpaired
memories per modality, evaluation sets, and the aligner's settings. Reading and ``--set``
are in :mod:`.load`, the checks against installed plugins in :mod:`.check`, the resolved
chain a run works from in :mod:`.chain`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

EMBEDDING_SUFFIXES = (".npy", ".safetensors")

# Upper bounds. Past them a value is a typo or asks for more than one run can hold (a
# dataset count of 10^12 is a 7 TiB allocation; epochs 10^400 never end): `mcrx validate`
# refuses it with the bound, instead of `extend` crashing hours in.
MAX_SEED = 2**32 - 1  # numpy's legacy seeding and many samplers take 32-bit seeds
MAX_EPOCHS = 100_000
MAX_BATCH = 2**17  # InfoNCE holds B×B logits: 2^17 rows are 64 GiB per fp32 matrix
MAX_ROWS = 2**40  # `limit`: beyond any memory (and numpy's index range stays far)
MAX_BLOCK = 2**20  # retrieval tiles hold query_block × memory_block similarities
MAX_TILE = 2**31  # ... at most 8 GiB of fp32 per tile
MAX_STEPS = 10**9
# Temperatures divide cosines in [-1, 1]: below 1e-4 the logits leave what fp16/bf16 (and
# soon fp32 exponentials) represent; above 100 every softmax is uniform. The papers: 0.01/0.05.
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-4, 100.0

_NAME = re.compile(r"^\w[\w.+\- ]{0,127}$")
_COMPONENT = re.compile(r"^[\w.+\-:@]+(/[\w.+\-:@]+)*$")


def _plain_name(value: str) -> str:
    """A name that is also a folder name (``runs/<name>``) and a report heading."""
    if not _NAME.match(value) or value.endswith((" ", ".")):
        raise ValueError(f"{value!r}: a name is 1-128 letters, digits, '_', '-', '.', '+' or "
                         "spaces, starting with a letter or digit (it names the output folder "
                         "runs/<name>, so no '/' or '..')")
    return value


def _component_name(value: str) -> str:
    """A registered name (``toy/clip``, ``clip/ViT-B-32``): no markup, spaces or control
    characters can reach the console or a file name through it."""
    if not _COMPONENT.match(value):
        raise ValueError(f"{value!r} is not a component name (letters, digits, '_', '-', "
                         "'.', '+', ':', '@', parts joined by '/', e.g. 'clip/ViT-B-32')")
    return value


PlainName = Annotated[str, AfterValidator(_plain_name)]
ComponentName = Annotated[str, AfterValidator(_component_name)]
Temperature = Annotated[float, Field(ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE)]


class StrictModel(BaseModel):
    # every float of a recipe is finite: `training.lr: .inf` is an error, not a NaN run
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SpaceRef(StrictModel):
    space: ComponentName = Field(
        description="registered space name, e.g. 'toy/clip' or 'clip/ViT-B-32'")
    params: dict[str, Any] = Field(
        default_factory=dict, description="the space plugin's own parameters (validated by it)"
    )


class Leaf(SpaceRef):
    bridge: str = Field(description="the modality this space shares with its parent")
    parent: ComponentName | None = Field(
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

    dataset: ComponentName | None = Field(
        None, description="a registered dataset, e.g. 'toy/world'")
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
    limit: int | None = Field(None, gt=0, le=MAX_ROWS,
                              description="use only the first N items")

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

    name: PlainName = Field(description="name shown in reports (unique in the recipe)")
    task: Literal["retrieval", "zeroshot"] = Field(
        "retrieval",
        description="'retrieval': every ordered pair of modalities; 'zeroshot': the items of "
        "each modality classified against text prompts of the classes (top-1/3/5, per-class "
        "accuracy, confusion matrix)",
    )
    ground_truth: Literal["pairs", "labels", "items"] = Field(
        "pairs",
        description="'pairs': row i of every modality is one item; 'labels': items of the "
        "same class match; 'items': each source's 'labels' are item ids (several captions "
        "per item: AudioCaps, Clotho, COCO), a source without them is one item per row",
    )
    classes: list[str] | str | None = Field(
        None,
        description="the class names in label order (label i is classes[i]): a list, a "
        "preset ('modelnet40') or a .txt file with one name per line; authoritative for "
        "zero-shot and 'ground_truth: labels' (a label is a name or an index into them). "
        "Default: the dataset's own class names, if it has them",
    )
    unmatched_queries: Literal["skip", "miss"] = Field(
        "skip",
        description="retrieval: a query with no relevant gallery item (its class or id is "
        "absent from the gallery) is left out of the figures ('skip'), or counted as a "
        "failure ('miss', CLIP_benchmark's convention); either way metrics.json counts them "
        "as queries_without_match",
    )
    templates: list[str] | str = Field(
        "name",
        description="zeroshot: prompt templates, '{}' where the class name goes: a list or a "
        "preset ('modelnet40_64': ULIP's 64, 'clap_esc50': 'This is a sound of {}.', "
        "'clip_imagenet_80': CLIP's 80, 'name': the class name alone)",
    )
    prompts: DataSource | None = Field(
        None,
        description="zeroshot: labelled text items as the prompts instead of classes × "
        "templates (each class: the renormalised mean of its items; 'classes' then only "
        "names them), e.g. the toy world's texts",
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
        if self.task == "zeroshot":
            if not self.data:
                raise ValueError("a zeroshot set needs the modality of its items")
            if (self.classes is None and self.prompts is None
                    and not any(source.dataset for source in self.data.values())):
                raise ValueError("a zeroshot set needs 'classes' (with 'templates'), "
                                 "labelled 'prompts', or a 'dataset' that names its classes")
        elif len(self.data) < 2:
            raise ValueError("an evaluation set needs at least two modalities")
        return self


class ComponentRef(StrictModel):
    name: ComponentName = Field(description="registered name, e.g. 'mcrx/ex-mcr'")
    params: dict[str, Any] = Field(default_factory=dict, description="the component's params")


class ConnectorRef(ComponentRef):
    """``training.connector``: without ``name`` the method's own connector, so that
    ``--set training.connector.params.hidden_dim=128`` changes one param and keeps the rest."""

    name: ComponentName | None = Field(  # type: ignore[assignment]
        None, description="registered name (default: the method's, e.g. 'mcrx/ex-mcr')")


#: the experiment trackers Accelerate supports (``training.log_with``)
Tracker = Literal["tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive"]


class Training(StrictModel):
    """Defaults are the papers' settings."""

    temperature: Temperature = Field(0.05, description="τ2, InfoNCE temperature")
    cmcr_temperature: Temperature | None = Field(
        None, description="C-MCR InfoNCE temperature (unstated in the paper; default τ2)"
    )
    # at σ² = 1 the noise on each unit vector is √d times the signal: nothing is left to learn
    noise_variance: float = Field(0.004, ge=0, le=1.0,
                                  description="σ² of the per-step Gaussian noise")
    intra_weight: float = Field(0.1, ge=0, le=1000.0,
                                description="λ, weight of the intra-space loss")
    lr: float = Field(1e-3, gt=0, le=10.0, description="AdamW learning rate")
    weight_decay: float = Field(0.01, ge=0, le=100.0,
                                description="AdamW weight decay (torch default)")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="learning-rate decay")
    batch_size: int = Field(4096, gt=1, le=MAX_BATCH, description="pseudo pairs per step")
    epochs: int = Field(36, gt=0, le=MAX_EPOCHS, description="passes over the pseudo pairs")
    connector: ConnectorRef | None = Field(
        None, description="connector (default: mcrx/ex-mcr or mcrx/c-mcr, after 'method')"
    )
    loss: ComponentName | None = Field(None, description="loss (default: after 'method')")
    checkpoint_every: int = Field(
        200, gt=0, le=MAX_STEPS, description="save a resumable checkpoint every N steps"
    )
    precision: Literal["fp32", "tf32", "bf16", "fp16"] = Field(
        "fp32", description="aligner arithmetic: 'fp32'; 'tf32' (TF32 matmuls on CUDA); "
        "'bf16' / 'fp16' autocast of the forward pass and the loss (fp16 with loss scaling); "
        "the InfoNCE logsumexps stay float32. CPU runs of 'fp32' are bit-for-bit reproducible"
    )
    loss_every: int = Field(
        10, gt=0, le=MAX_STEPS, description="read the loss back (a device sync) every N steps"
    )
    log_with: list[Tracker] = Field(
        default_factory=list,
        description="Accelerate trackers that receive the loss and learning rate every "
        "'loss_every' steps, e.g. 'tensorboard' (pip install 'mcrx[tensorboard]'; logs in "
        "OUT/logs, view with `tensorboard --logdir OUT/logs`), or a list of them",
    )

    @field_validator("log_with", mode="before")
    @classmethod
    def _one_tracker_or_several(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class AnnIndex(StrictModel):
    """The faiss index of ``retrieval.mode: ann`` (one per memory, inner product)."""

    index: Literal["hnsw", "ivf-flat"] = Field(
        "hnsw", description="'hnsw': a graph linking each row to its neighbours (no training; "
        "the default: best recall at a given speed on a CPU, see benchmarks/bench_ann.py); "
        "'ivf-flat': k-means lists, `nprobe` of them searched per query (moved to the GPU "
        "with faiss-gpu)")
    nlist: int | None = Field(
        None, gt=0, description="IVF lists (default 4·√rows, at most rows/39)")
    nprobe: int = Field(32, gt=0, description="IVF lists searched per query (recall vs speed)")
    train_rows: int = Field(65536, gt=0, description="rows sampled to train the IVF lists")
    hnsw_m: int = Field(32, gt=1, description="HNSW graph degree")
    ef_construction: int = Field(80, gt=0, description="HNSW build beam width")
    ef_search: int = Field(128, gt=0, description="HNSW search beam width, raised to k (a "
                           "wider beam finds more of the true neighbours, more slowly)")
    gpu: bool = Field(True, description="move IVF indexes to the GPU when faiss-gpu is "
                      "installed and the run's device is CUDA")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the k-means sample")


class Retrieval(StrictModel):
    temperature: Temperature = Field(0.01, description="τ1, softmax temperature of retrieval")
    mode: Literal["exact", "top-k", "ann"] = Field(
        "exact",
        description="'exact': softmax over the whole memory (the papers); 'top-k': over each "
        "query's k nearest rows only, found by the full product (the cosine to the exact "
        "result is measured on a sample and reported); 'ann': the k nearest found by a faiss "
        "index (`ann`), far faster on large memories (measured with HNSW at 1M × 1M: k: 128 "
        "10.9× faster than exact at mean cosine 0.995), deviation reported the same way",
    )
    k: int = Field(256, gt=0, le=MAX_BLOCK,
                   description="rows kept per query in 'top-k' and 'ann' modes")
    ann: AnnIndex = Field(default_factory=AnnIndex, description="the index of 'ann' mode")
    query_block: int = Field(2048, gt=0, le=MAX_BLOCK,
                             description="queries per block (bounds memory use)")
    # 2048 × 8192 tiles were the fastest measured here (benchmarks/bench_retrieval.py):
    # 0.89 of torch.mm's FLOP/s against 0.76 for 4096 × 16384
    memory_block: int = Field(8192, gt=0, le=MAX_BLOCK, description="memory rows per block")
    precision: Literal["fp32", "tf32", "fp16"] = Field(
        "fp32", description="inputs of the retrieval matmuls: 'fp32'; 'tf32' or 'fp16' (GPU "
        "tensor cores, ~1e-7 mean 1 − cosine to exact); products accumulate and the softmax "
        "runs in float32 in every mode. No 'bf16': at τ1 = 0.01 its logits are off by ~0.4"
    )

    @model_validator(mode="after")
    def _tile_fits(self) -> Retrieval:
        tile = self.query_block * self.memory_block
        if tile > MAX_TILE:
            raise ValueError(f"query_block × memory_block = {tile:,} similarities per tile; "
                             f"at most {MAX_TILE:,} (8 GiB of fp32)")
        return self


class Recipe(StrictModel):
    """A unified space: a base space, leaves chained to it, memories, evaluation sets."""

    name: PlainName = Field(description="name of the unified space (and of runs/<name>)")
    description: str = Field("", description="free text")
    method: ComponentName = Field(
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
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of every random draw")
    device: Literal["auto", "cpu"] = Field(
        "auto", description="where pseudo pairs, training and evaluation run: 'auto' is this "
        "process's GPU (its local rank's under torchrun / accelerate launch), else the CPU; "
        "'cpu' keeps them on the CPU on a GPU machine too (choose GPUs with "
        "CUDA_VISIBLE_DEVICES; encoders follow their own 'device' params)"
    )

    @field_validator("output", mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():  # Path("") is the current folder
            raise ValueError("an empty output folder; give a path, or leave 'output' out "
                             "for runs/<name>")
        return value

    @field_validator("evaluation")
    @classmethod
    def _unique_evaluation_names(cls, sets: list[EvaluationSet]) -> list[EvaluationSet]:
        names = [evaluation.name for evaluation in sets]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:  # reports and metrics.json key sets by name: one would silently vanish
            raise ValueError(f"evaluation sets need distinct names; given twice: {twice}")
        return sets

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
