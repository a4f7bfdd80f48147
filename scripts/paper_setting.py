"""A rehearsal of the papers' setting with format-faithful stand-ins of the released files.

    python scripts/paper_setting.py [WORK]          (default: runs/paper-setting)

No released weight can be downloaded here, so each file is built at FULL size from random
weights with the upstream code's own container, by the builders the plugins' tests use:

    weights/clip-vit-base-patch32/  the transformers folder the authors load (config.json,
                                 model.safetensors, tokenizer files, preprocessor_config.json)
    weights/ViT-B-32.pt          OpenAI's TorchScript archive (traced CLIP with QuickGELU,
                                 fp16, input_resolution/context_length/vocab_size entries),
                                 the alternative (``--set base.params.pretrained=...``)
    weights/630k-fusion-best.pt  LAION-CLAP's training state (epoch, name, ``module.`` keys,
                                 stale position_ids, AdamW state with a numpy.float64 lr)
    weights/roberta-base/        a tokenizer folder in roberta-base's format (50,265 entries)
    weights/pointbert_ULIP-2.pt  ULIP's training state (``module.`` keys, AdamW with a numpy
                                 lr, GradScaler state, best_acc1, argparse.Namespace args)

plus a few real-format inputs (wav, jpeg/png, the C-MCR/Ex-MCR dict ``.npy`` clouds) and
stand-ins of the benchmarks' downloaded layouts. Then, as a user would, with no trust flag:
``mcrx validate``, ``mcrx encode`` and a 1-epoch ``mcrx extend recipes/audio_3d.yaml``
(``--set`` for sizes), and ``mcrx.load(model).embed("audio", ...)`` from another folder.
Prints the time of each step; the last line is one JSON object.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "audio_3d.yaml"
SIZES = [  # tiny data, the paper's architectures and hyper-parameters otherwise
    "training.epochs=1", "training.batch_size=8", "retrieval.memory_block=64",
    "retrieval.query_block=64", "evaluation.3.templates=name",
]


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_weights(weights: Path) -> dict[str, float]:
    """The released files, full size (each written once: kept across runs); seconds per
    file written."""
    clip = _module(ROOT / "plugins/clip/tests/clip_release_format.py", "clip_release_format")
    clap = _module(ROOT / "plugins/clap/tests/clap_release_format.py", "clap_release_format")
    ulip = _module(ROOT / "plugins/ulip/tests/ulip_release_format.py", "ulip_release_format")
    weights.mkdir(parents=True, exist_ok=True)
    writers = {
        "ViT-B-32.pt": write_openai_torchscript,
        "clip-vit-base-patch32": clip.write_transformers_folder,
        "630k-fusion-best.pt": lambda path: clap.write_release_checkpoint(path, optimizer="all"),
        "roberta-base": clap.write_roberta_tokenizer,
        "pointbert_ULIP-2.pt": ulip.write_release_checkpoint,
    }
    took = {}
    for name, write in writers.items():
        if (weights / name).exists():
            continue
        began = time.perf_counter()
        write(weights / name)
        took[name] = round(time.perf_counter() - began, 1)
    return took


def write_openai_torchscript(path: Path) -> None:
    """ViT-B/32 traced as OpenAI's clip.py module was (QuickGELU, the causal mask a traced
    constant, fp16, the three int entries OpenAI's state dict carries)."""
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", force_quick_gelu=True).eval()
    for name, value in (("input_resolution", 224), ("context_length", 77),
                        ("vocab_size", 49408)):
        if name in vars(model):
            delattr(model, name)
        model.register_buffer(name, torch.tensor(value))
    model.attn_mask = model._buffers.pop("attn_mask")
    image = torch.randn(1, 3, 224, 224)
    text = open_clip.get_tokenizer("ViT-B-32")(["a photo"])
    with torch.no_grad():
        traced = torch.jit.trace_module(model, {"forward": (image, text),
                                                "encode_image": (image,),
                                                "encode_text": (text,)})
    traced.half()
    traced.save(str(path))


def write_data(data: Path) -> None:
    """A few unpaired items per modality in the formats users have, and the benchmarks'
    layouts as the tests write them."""
    import soundfile
    from PIL import Image

    rng = np.random.default_rng(0)
    data.mkdir(parents=True, exist_ok=True)
    (data / "texts.txt").write_text("\n".join(
        f"a sound of {w} in a {p}" for w in ("rain", "a dog", "an engine", "a bell")
        for p in ("room", "street", "forest")) + "\n")
    for i in range(8):
        pixels = rng.integers(0, 255, (40 + 8 * i, 56, 3), dtype=np.uint8)
        suffix = "jpg" if i % 2 else "png"
        (data / "images").mkdir(exist_ok=True)
        Image.fromarray(pixels).save(data / "images" / f"{i:03d}.{suffix}")
    for i in range(6):
        (data / "audio").mkdir(exist_ok=True)
        samples = rng.uniform(-0.3, 0.3, 48_000 * (1 + i % 3)).astype(np.float32)
        soundfile.write(str(data / "audio" / f"{i:03d}.{'flac' if i % 2 else 'wav'}"),
                        samples, 48_000 if i % 2 else 44_100)
    for i in range(6):  # the authors' dict layout: 10,000 float16 points, xyz and rgb
        (data / "pointclouds").mkdir(exist_ok=True)
        cloud = {"dataset": "Objaverse", "id": f"uid{i}",
                 "xyz": rng.normal(size=(10_000, 3)).astype(np.float16),
                 "rgb": rng.uniform(size=(10_000, 3)).astype(np.float16)}
        np.save(data / "pointclouds" / f"uid{i}.npy", cloud)  # type: ignore[arg-type]
    layouts = _module(ROOT / "tests/datasets/conftest.py", "benchmark_layouts")
    shutil.rmtree(data / "eval", ignore_errors=True)  # written afresh on every run
    for name in ("audiocaps", "esc50", "modelnet40", "objaverse_lvis"):
        layouts.BUILDERS[name](data / "eval" / name)
    full_size_clouds(data / "eval", rng)


def full_size_clouds(folder: Path, rng: np.random.Generator) -> None:
    """The tests' layouts hold tiny clouds; the real files hold 8,192 points (ULIP's
    ModelNet40 .dat: pickle.dump([points, labels])) and 10,000 (OpenShape's dicts), which
    the authors' pipeline feeds to PointBERT whole: rewrite them at those sizes."""
    import pickle

    dat = folder / "modelnet40" / "modelnet40_test_8192pts_fps.dat"
    with open(dat, "rb") as handle:  # written by this script's own test layouts
        points, labels = pickle.load(handle)
    points = [rng.normal(size=(8192, 6)).astype(np.float32) for _ in points]
    with open(dat, "wb") as handle:
        pickle.dump([points, labels], handle)
    for path in (folder / "objaverse_lvis").rglob("*.npy"):
        shape = np.load(path, allow_pickle=True).item()  # written by this script
        shape["xyz"] = rng.normal(size=(10_000, 3)).astype(np.float32)
        shape["rgb"] = rng.uniform(size=(10_000, 3)).astype(np.float32)
        np.save(path, shape)  # type: ignore[arg-type]


def mcrx(work: Path, *args: str, env: dict[str, str]) -> float:
    """Run ``mcrx ARGS`` in ``work`` as a user would; seconds taken (stops on failure)."""
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mcrx", *args], cwd=work, env=env,
                          capture_output=True, text=True)
    took = time.perf_counter() - began
    print(f"$ mcrx {' '.join(args)}  ({took:.1f} s, exit {done.returncode})", flush=True)
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-6000:], sep="\n")
        raise SystemExit(f"mcrx {args[0]} failed")
    return took


def main() -> None:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "runs" / "paper-setting").resolve()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "MCRX_CACHE_DIR": str(work / "cache")}
    os.environ.update(env)
    figures: dict[str, object] = {}
    figures["build_s"] = write_weights(work / "weights")
    figures["weights_bytes"] = {
        str(p.relative_to(work / "weights")): p.stat().st_size
        for p in sorted((work / "weights").rglob("*")) if p.suffix in (".pt", ".safetensors")}
    write_data(work / "data")
    sets = [arg for size in SIZES for arg in ("--set", size)]
    figures["validate_s"] = mcrx(work, "validate", str(RECIPE), *sets, env=env)
    figures["encode_s"] = mcrx(work, "encode", str(RECIPE), "--no-progress", *sets, env=env)
    figures["extend_s"] = mcrx(work, "extend", str(RECIPE), "--no-progress", *sets, env=env)

    import mcrx as library

    elsewhere = work / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    os.chdir(elsewhere)  # relative weight paths must still be found
    model = library.load(work / "runs" / "audio_3d" / "model")
    audio = model.embed("audio", [str(work / "data" / "audio" / "000.wav")])
    clouds = model.embed("pointcloud", [str(work / "data" / "pointclouds" / "uid0.npy")])
    figures["embed_from_elsewhere"] = {"audio": list(audio.shape),
                                       "pointcloud": list(clouds.shape)}
    metrics = json.loads((work / "runs" / "audio_3d" / "metrics.json").read_text())
    figures["evaluated_sets"] = sorted({key.split("/")[0] for key in
                                        [*metrics.get("retrieval", {}),
                                         *metrics.get("zeroshot", {})]})
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
