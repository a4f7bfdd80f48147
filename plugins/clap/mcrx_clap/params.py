"""Parameters and named models of the ``clap/<model>`` spaces. Imports without torch or
laion_clap, so ``mcrx validate`` checks a recipe instantly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from mcrx.device import check_device_name
from mcrx.store.weights import weights_file

#: where LAION-AI/CLAP's README points for its checkpoints
RELEASE_URL = "https://huggingface.co/lukewys/laion_clap/tree/main"
#: roberta-base, the text encoder of every released CLAP checkpoint
ROBERTA_URL = "https://huggingface.co/FacebookAI/roberta-base"
DEFAULT_AMODEL = "HTSAT-tiny"


@dataclass(frozen=True)
class Preset:
    """A released CLAP model: its checkpoint file and the architecture it needs."""

    checkpoint: str
    amodel: str
    fusion: bool
    trained_on: str


#: ``clap/<name>`` for every checkpoint of the LAION-AI/CLAP release; any other name is a
#: custom model whose architecture comes from params (and fusion from the checkpoint)
PRESETS = {
    "630k": Preset("630k-best.pt", "HTSAT-tiny", False, "LAION-Audio-630K"),
    "630k-audioset": Preset("630k-audioset-best.pt", "HTSAT-tiny", False,
                            "LAION-Audio-630K + AudioSet"),
    "630k-fusion": Preset("630k-fusion-best.pt", "HTSAT-tiny", True, "LAION-Audio-630K"),
    "630k-audioset-fusion": Preset("630k-audioset-fusion-best.pt", "HTSAT-tiny", True,
                                   "LAION-Audio-630K + AudioSet"),
    "music": Preset("music_audioset_epoch_15_esc_90.14.pt", "HTSAT-base", False,
                    "music + AudioSet + LAION-Audio-630K"),
    "music-speech": Preset("music_speech_epoch_15_esc_89.25.pt", "HTSAT-base", False,
                           "music + speech + LAION-Audio-630K"),
    "music-speech-audioset": Preset("music_speech_audioset_epoch_15_esc_89.98.pt", "HTSAT-base",
                                    False, "music + speech + AudioSet + LAION-Audio-630K"),
}

_WHERE_TO_GET = (
    f"download a LAION-AI/CLAP checkpoint from {RELEASE_URL}, e.g. 630k-fusion-best.pt for "
    "clap/630k-fusion, the weight both papers used ("
    + ", ".join(f"clap/{name}: {preset.checkpoint}" for name, preset in PRESETS.items())
    + ")"
)


def _is_local_path(value: str) -> bool:
    """Hugging Face ids look like paths (``FacebookAI/roberta-base``): only absolute,
    explicitly relative, home-relative or existing paths count as local."""
    return value.startswith(("/", "./", "../", "~", "\\")) or Path(value).exists()


class ClapParams(BaseModel):
    """``params:`` of a ``clap/<model>`` space."""

    model_config = ConfigDict(extra="forbid")

    random_weights: bool = Field(
        False,
        description="build with RANDOM (seeded) weights and no checkpoint: for tests and "
        "benchmarks only, never for real embeddings",
    )
    checkpoint: Path | None = Field(
        None,
        validate_default=True,
        description=f"a LAION-AI/CLAP checkpoint file (required unless random_weights), "
        f"from {RELEASE_URL}",
        json_schema_extra=weights_file(trust="trust_checkpoint"),
    )
    trust_checkpoint: bool = Field(
        False,
        description="allow a checkpoint that pickles Python objects beyond tensors, numpy "
        "scalars and dtypes to be unpickled in full (which can run code from the file): only "
        "for a file you trust. Not needed for the released checkpoints: they are whole "
        "training states (weights + AdamW state with a numpy learning rate), which mcrx reads "
        "without running anything; any other object is refused with a message naming it",
    )
    fusion: bool | None = Field(
        None,
        description="the feature-fusion audio branch (long clips as global + 3 local views). "
        "Default: the named model's (clap/630k-fusion: true, ...); for other names, as "
        "the checkpoint is; a mismatch with the checkpoint is an error",
    )
    amodel: str | None = Field(
        None,
        description=f"laion_clap audio architecture. Default: the named model's "
        f"({DEFAULT_AMODEL}; HTSAT-base for the music models), else {DEFAULT_AMODEL}",
    )
    tmodel: Literal["roberta", "transformer"] = Field(
        "roberta",
        description="text branch: 'roberta' (every released checkpoint) or 'transformer' "
        "(laion_clap's CLIP-style text tower with its bundled tokenizer)",
    )
    tokenizer: str = Field(
        "roberta-base",
        description="where the roberta tokenizer comes from: a local folder holding "
        "roberta-base's vocab.json and merges.txt (or tokenizer.json), or a Hugging Face id "
        f"already in the local cache ({ROBERTA_URL})",
    )
    device: str = Field("auto", description="torch device: auto (this process's GPU under "
                        "torchrun / accelerate launch, else the CPU), cpu, cuda, cuda:1, mps")
    batch_size: int | None = Field(
        None, gt=0, description="audio clips per forward pass (default: 128 on a GPU, 16 on "
        "the CPU; text batches are at least 64)")
    autocast: Literal["none", "fp16", "bf16"] = Field(
        "none", description="run the towers under fp16 / bf16 autocast (faster on GPUs; the "
        "embeddings change slightly, so the cache keeps them apart from float32 ones)")

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        random = info.data.get("random_weights", False)
        if value is None:
            if not random:
                raise ValueError(f"a checkpoint is required: {_WHERE_TO_GET}; tests may set "
                                 "`random_weights: true` instead")
            return None
        if random:
            raise ValueError("give either `checkpoint` or `random_weights: true`, not both")
        value = value.expanduser()
        if not value.is_file():
            raise ValueError(f"checkpoint not found: {value}; {_WHERE_TO_GET}")
        return value

    @field_validator("tokenizer")
    @classmethod
    def _tokenizer_folder(cls, value: str) -> str:
        if not _is_local_path(value):
            return value
        folder = Path(value).expanduser()
        if not folder.is_dir():
            raise ValueError(f"tokenizer folder not found: {folder}; save roberta-base's "
                             f"tokenizer there ({ROBERTA_URL}: vocab.json, merges.txt)")
        if not ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
                or (folder / "tokenizer.json").is_file()):
            raise ValueError(f"{folder} holds neither vocab.json + merges.txt nor "
                             f"tokenizer.json (roberta-base's tokenizer files, {ROBERTA_URL})")
        return str(folder)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        return check_device_name(value)
