"""`mcrx evaluate`: a trained toy model and an imported official one side by side (a real
process), a whole recipe as the evaluation file, zero-shot and multi-caption sets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import mcrx
from mcrx.cli import app
from mcrx.errors import McrxError
from mcrx.infer.official import import_official
from mcrx.metrics.retrieval import retrieval_metrics
from mcrx.plugin.manager import get_registry
from mcrx.recipe import load_recipe
from mcrx.stages.evaluate_model import labels_by_name
from mcrx.stages.extend import extend

ZEROSHOT = {"name": "zeroshot", "task": "zeroshot", "dataset": "toy/world",
            "params": {"split": "eval", "count": 300}, "modalities": ["audio", "pointcloud"],
            "prompts": {"dataset": "toy/world", "params": {"split": "memory", "count": 800}}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir, make_small_recipe):
    os.environ["MCRX_CACHE_DIR"] = str(cache_dir)  # module scope: before the autouse fixture
    out = tmp_path_factory.mktemp("evaluate")
    raw = make_small_recipe("demo.yaml", out / "run")  # its sets: heldout, zeroshot
    assert [s["name"] for s in raw["evaluation"]] == ["heldout", "zeroshot"]
    path = out / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    metrics = extend(load_recipe(path, registry=get_registry()), get_registry(),
                     show_progress=False)
    return path, out / "run", metrics


def test_extend_reports_zeroshot_and_pictures(trained):
    _, run, metrics = trained
    assert set(metrics["zeroshot"]) == {"zeroshot/audio", "zeroshot/pointcloud"}
    for values in metrics["zeroshot"].values():
        assert values["top1"] > 5 * values["chance_top1"]  # aligned far above chance
        assert values["top5"] >= values["top3"] >= values["top1"]
    # audio's own space has text: CLAP's own zero-shot figure beside the unified one
    assert metrics["zeroshot"]["zeroshot/audio"]["native"]["space"] == "toy/clap"
    assert metrics["zeroshot"]["zeroshot/audio"]["native"]["top1"] > 0.5
    assert "native" not in metrics["zeroshot"]["zeroshot/pointcloud"]  # toy/ulip has no text
    assert metrics["training"]["toy/clap"]["losses"][-1][0] == metrics["training"]["toy/clap"][
        "steps"]
    assert metrics["gap"]["audio~text"]["before"]["space"] == "toy/clap"
    assert set(metrics["timings"]) >= {"2 · pseudo pairs", "3 · train connectors"}
    report = (run / "report.md").read_text()
    for file in metrics["figures"].values():
        assert (run / file).is_file() and f"]({file})" in report


def test_a_whole_recipe_is_an_evaluation_file(trained, tmp_path):
    recipe, run, metrics = trained
    result = CliRunner().invoke(app, ["evaluate", str(run / "model"), str(recipe),
                                      "--out", str(tmp_path / "ev"), "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    again = document["models"]["run"]
    # the same model on the same sets: extend's own figures, from the embedding cache
    assert again["encoded_items"] == 0
    for pair, values in metrics["retrieval"].items():
        assert again["retrieval"][pair]["R@1"] == pytest.approx(values["R@1"])
    assert again["zeroshot"]["zeroshot/audio"]["top1"] == pytest.approx(
        metrics["zeroshot"]["zeroshot/audio"]["top1"])
    assert (tmp_path / "ev" / "report.md").is_file()


def test_multi_caption_set_with_item_ids(trained, tmp_path):
    _, run, _ = trained
    model = mcrx.load(run / "model")
    dataset = get_registry().dataset("toy/world").build(params={"split": "eval", "count": 200})
    text = model.space("toy/clip").encoder("text").encode(dataset.items("text")).numpy()
    second = text[::-1] + 0.05 * np.random.default_rng(0).standard_normal(text.shape)
    second /= np.linalg.norm(second, axis=1, keepdims=True)  # a second, different caption
    np.save(tmp_path / "captions.npy", np.concatenate([text, second]).astype(np.float32))
    np.save(tmp_path / "caption_ids.npy", np.concatenate([np.arange(200), np.arange(200)[::-1]]))
    evaluation = {"evaluation": [{
        "name": "captions", "ground_truth": "items",
        "data": {"audio": {"dataset": "toy/world", "params": {"split": "eval", "count": 200}},
                 "text": {"embeddings": {"toy/clip": str(tmp_path / "captions.npy")},
                          "labels": str(tmp_path / "caption_ids.npy")}}}]}
    path = tmp_path / "captions.yaml"
    path.write_text(yaml.safe_dump(evaluation))
    result = CliRunner().invoke(app, ["evaluate", str(run / "model"), str(path),
                                      "--out", str(tmp_path / "ev"), "--json"])
    assert result.exit_code == 0, result.output
    retrieval = json.loads(result.stdout)["models"]["run"]["retrieval"]
    t2a, a2t = retrieval["text->audio"], retrieval["audio->text"]
    assert t2a["n"] == 400 and a2t["n"] == 200 and t2a["queries_without_match"] == 0
    assert 0 < t2a["mAP@10"] <= 1 and t2a["R@1"] > 10 * t2a["chance_R@1"]
    # best rank among an item's captions: recall as "any relevant in the top k" of labels mode
    audio = model.project("toy/clap", "audio", model.space("toy/clap").encoder("audio").encode(
        dataset.items("audio")))
    captions = model.project("toy/clip", "text", np.load(tmp_path / "captions.npy"))
    reference = retrieval_metrics(audio, captions, "labels", np.arange(200),
                                  np.load(tmp_path / "caption_ids.npy"))
    for k in ("R@1", "R@5", "R@10"):
        assert a2t[k] == pytest.approx(reference[k])


def test_trained_and_official_side_by_side_in_a_real_process(trained, tmp_path,
                                                                exmcr_release):
    _, run, _ = trained
    official = import_official(tmp_path / "official",
                               ex_clap=exmcr_release(tmp_path / "ex_clap.pt", 1))
    model = mcrx.load(run / "model")
    dataset = get_registry().dataset("toy/world").build(params={"split": "eval", "count": 150})
    g = torch.Generator().manual_seed(0)
    data = {}
    for modality, toy_space, real_space in (("image", "toy/clip", "clip/ViT-B-32"),
                                            ("audio", "toy/clap", official.space_of("audio"))):
        toy = model.space(toy_space).encoder(modality).encode(dataset.items(modality)).numpy()
        np.save(tmp_path / f"{modality}-toy.npy", toy)
        np.save(tmp_path / f"{modality}-real.npy", torch.randn(150, 512, generator=g).numpy())
        data[modality] = {"embeddings": {toy_space: str(tmp_path / f"{modality}-toy.npy"),
                                         real_space: str(tmp_path / f"{modality}-real.npy")}}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump({"evaluation": [{"name": "shared", "data": data}]}))
    mcrx_command = Path(sys.executable).with_name("mcrx")
    result = subprocess.run(
        [str(mcrx_command), "evaluate", str(run / "model"), str(tmp_path / "official"),
         str(path), "--out", str(tmp_path / "side"), "--no-progress"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "run R@1" in result.stderr and "official R@1" in result.stderr
    document = json.loads((tmp_path / "side" / "metrics.json").read_text())
    assert list(document["models"]) == ["run", "official"]
    mine, theirs = (document["models"][k]["retrieval"]["audio->image"] for k in document["models"])
    assert mine["R@1"] > 0.1 and theirs["R@1"] < 0.1  # random heads on random rows: chance
    report = (tmp_path / "side" / "report.md").read_text()
    assert "| query→gallery | run R@1 |" in report and "official R@1" in report


def test_bad_evaluation_files_name_the_field(trained, tmp_path):
    _, run, _ = trained
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"evaluation": [{"name": "z", "task": "zeroshot",
                                                    "data": {"audio": {"dataset": "toy/world"}},
                                                    "templates": "nope"}]}))
    result = CliRunner().invoke(app, ["evaluate", str(run / "model"), str(path)])
    assert result.exit_code == 1
    assert "evaluation.0" in result.output and "'classes'" in result.output
    result = CliRunner().invoke(app, ["evaluate", str(path)])
    assert result.exit_code == 1 and "at least one model folder" in result.output
    path.write_text(yaml.safe_dump({"evaluation": [ZEROSHOT], "evalution": []}))
    result = CliRunner().invoke(app, ["evaluate", str(run / "model"), str(path)])
    assert result.exit_code == 1 and "evalution" in result.output and "unknown field" in (
        result.output)


def test_text_labels_follow_the_order_of_classes(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("rain\ndog\n\nrain\n")
    # np.unique would give dog 0, rain 1; the classes list says rain 0, dog 1
    assert labels_by_name(path, ["rain", "dog"], None, "x").tolist() == [0, 1, 0]
    assert labels_by_name(path, ["rain", "dog"], 2, "x").tolist() == [0, 1]
    path.write_text("2\n0\n")
    assert labels_by_name(path, ["a", "b", "c"], None, "x").tolist() == [2, 0]
    path.write_text("cat\n")
    with pytest.raises(McrxError, match="not in 'classes'"):
        labels_by_name(path, ["rain", "dog"], None, "evaluation.0.data.audio")


# -- one vocabulary per set, end to end: .txt and .npy labels give the same figures ---------
def _peers():
    """The peers' definitions re-implemented in tests/metrics/test_peers.py."""
    import importlib.util

    path = Path(__file__).parents[1] / "metrics" / "test_peers.py"
    spec = importlib.util.spec_from_file_location("mcrx_peer_definitions", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _evaluate(run: Path, tmp_path: Path, sets: list[dict], name: str = "ev"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"evaluation": sets}))
    result = CliRunner().invoke(app, ["evaluate", str(run / "model"), str(path), "--out",
                                      str(tmp_path / name), "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{"):])["models"]["run"], result.output


def _toy_rows(model, space: str, modality: str, count: int, noise: float = 0.0, seed: int = 0):
    dataset = get_registry().dataset("toy/world").build(params={"split": "eval", "count": count})
    raw = dataset.items(modality)
    raw = raw + noise * np.random.default_rng(seed).standard_normal(raw.shape)
    rows = model.space(space).encoder(modality).encode(raw.astype(np.float32)).numpy()
    return rows, dataset.labels(modality)


def _save(tmp_path: Path, name: str, values) -> str:
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, np.asarray(values))
    else:
        path.write_text("".join(f"{v}\n" for v in values))
    return str(path)


def test_items_across_files_wavcaps_layout_and_one_sided_ids(trained, tmp_path):
    """WavCaps's layout (audio rows repeated per caption) gives WavCaps's figures; ids as
    strings in .txt, integers in .txt (string order ≠ integer order) and integers in .npy
    give the same figures; an audio id without captions is counted and named."""
    peers = _peers()
    general_items, wavcaps_a2t, wavcaps_t2a = peers.general_items, peers.wavcaps_a2t, (
        peers.wavcaps_t2a)
    _, run, _ = trained
    model = mcrx.load(run / "model")
    items, per = 30, 3
    audio, _ = _toy_rows(model, "toy/clap", "audio", items)
    captions = np.concatenate([_toy_rows(model, "toy/clip", "text", items, 0.6, s)[0]
                               for s in range(per)])
    captions = captions.reshape(per, items, -1).transpose(1, 0, 2).reshape(items * per, -1)
    ids = np.repeat(np.arange(items), per)
    np.save(tmp_path / "audio.npy", np.repeat(audio, per, axis=0))
    np.save(tmp_path / "captions.npy", captions)
    lonely = _toy_rows(model, "toy/clap", "audio", items + 1)[0][-1:]  # an audio, no caption
    np.save(tmp_path / "audio-plus.npy", np.concatenate([np.repeat(audio, per, axis=0), lonely]))

    def items_set(name, audio_file, audio_ids, caption_ids):
        return {"name": name, "ground_truth": "items", "data": {
            "audio": {"embeddings": {"toy/clap": str(tmp_path / audio_file)},
                      "labels": audio_ids},
            "text": {"embeddings": {"toy/clip": str(tmp_path / "captions.npy")},
                     "labels": caption_ids}}}

    names = [f"Y{i:03d}x" for i in ids]
    sets = [items_set("npy", "audio.npy", _save(tmp_path, "a.npy", ids),
                      _save(tmp_path, "c.npy", ids)),
            items_set("strings", "audio-plus.npy", _save(tmp_path, "a.txt", names + ["Yzzz"]),
                      _save(tmp_path, "c.txt", names)),
            items_set("integers", "audio-plus.npy", _save(tmp_path, "ai.txt", [*ids, 999]),
                      _save(tmp_path, "ci.npy", ids))]
    metrics, output = _evaluate(run, tmp_path, sets)
    retrieval = metrics["retrieval"]
    a = model.project("toy/clap", "audio", np.repeat(audio, per, axis=0)).numpy()
    t = model.project("toy/clip", "text", captions).numpy()
    reference = {"text->audio": wavcaps_t2a(a, t, per), "audio->text": wavcaps_a2t(a, t, per)}
    plus = np.concatenate([a[::per], model.project("toy/clap", "audio", lonely).numpy()])
    plus_ids = np.arange(items + 1)  # the lonely audio is item 30: no caption has its id
    with_lonely = {"text->audio": general_items(t, plus, ids, plus_ids),
                   "audio->text": general_items(plus, t, plus_ids, ids)}
    for pair, expected in reference.items():
        for key in ("R@1", "R@5", "R@10", "mAP@10", "median_rank", "mean_rank"):
            assert retrieval[f"npy/{pair}"][key] == pytest.approx(expected[key], abs=1e-6)
            for name in ("strings", "integers"):
                assert retrieval[f"{name}/{pair}"][key] == pytest.approx(
                    with_lonely[pair][key], abs=1e-6)
    assert retrieval["npy/text->audio"]["gallery"] == items  # one row per item
    assert retrieval["strings/audio->text"]["queries_without_match"] == 1
    assert metrics["vocabulary"]["strings"]["unmatched"] == {"audio": 1, "text": 0}
    assert metrics["vocabulary"]["strings"]["unmatched_examples"] == {"audio": ["Yzzz"]}
    assert metrics["vocabulary"]["integers"]["unmatched_examples"] == {"audio": [999]}
    assert "Yzzz" in output and "appear in no other modality" in output
    report = (tmp_path / "ev" / "report.md").read_text()  # and in the report, with its count
    assert "set 'strings': 1 ids of audio appear in no other modality ('Yzzz')" in report
    row = next(line for line in report.splitlines() if line.startswith("| strings/audio->text"))
    assert row.endswith("| 1 |")  # the no-match column
    assert metrics["conventions"]["ties"].startswith("equal similarity")
    # counted as misses (CLIP_benchmark): the lonely audio is one more query, a failure
    sets[1]["unmatched_queries"] = "miss"
    missed, _ = _evaluate(run, tmp_path, sets[1:2], "miss")
    a2t = missed["retrieval"]["audio->text"]
    assert a2t["n"] == items + 1 and a2t["queries_without_match"] == 1
    assert a2t["R@1"] == pytest.approx(with_lonely["audio->text"]["R@1"] * items / (items + 1))


def test_zeroshot_classes_order_rules_prompts_and_items(trained, tmp_path, monkeypatch):
    """Class names out of alphabetical order, prompts and items labelled by name in .txt,
    a class absent from the items: the figures of ULIP's top-k on the same rows, the same
    as with integer labels in .npy, and with the dataset's own class names."""
    from mcrx_toy.dataset import WorldDataset

    ulip_topk = _peers().ulip_topk
    _, run, _ = trained
    model = mcrx.load(run / "model")
    prompt_rows, prompt_labels = _toy_rows(model, "toy/clip", "text", 400)
    items, item_labels = _toy_rows(model, "toy/clap", "audio", 120)
    absent = item_labels[0]
    keep = item_labels != absent  # one class has no item at all
    items, item_labels = items[keep], item_labels[keep]
    classes = int(max(prompt_labels.max(), item_labels.max())) + 1
    assert set(np.unique(prompt_labels)) == set(range(classes))
    names = [f"{chr(ord('z') - c)}-sound" for c in range(classes)]  # reverse sorted order
    np.save(tmp_path / "prompts.npy", prompt_rows)
    np.save(tmp_path / "items.npy", items)

    def zeroshot_set(name, prompt_file, item_file, **extra):
        return {"name": name, "task": "zeroshot", **extra,
                "prompts": {"embeddings": {"toy/clip": str(tmp_path / "prompts.npy")},
                            "labels": prompt_file},
                "data": {"audio": {"embeddings": {"toy/clap": str(tmp_path / "items.npy")},
                                   "labels": item_file}}}

    by_name = (_save(tmp_path, "p.txt", [names[c] for c in prompt_labels]),
               _save(tmp_path, "i.txt", [names[c] for c in item_labels]))
    by_index = (_save(tmp_path, "p.npy", prompt_labels), _save(tmp_path, "i.npy", item_labels))
    metrics, _ = _evaluate(run, tmp_path, [zeroshot_set("names", *by_name, classes=names),
                                           zeroshot_set("indices", *by_index, classes=names)])
    protos = model.project("toy/clip", "text", prompt_rows)
    protos = np.stack([torch.nn.functional.normalize(
        torch.nn.functional.normalize(protos[prompt_labels == c], dim=-1).mean(0), dim=0).numpy()
        for c in range(classes)])
    logits = model.project("toy/clap", "audio", items).numpy() @ protos.T
    reference = ulip_topk(logits, [names[c] for c in item_labels], names, (1, 3, 5))
    for name in ("names", "indices"):
        mine = metrics["zeroshot"][f"{name}/audio"]
        for k in (1, 3, 5):
            assert mine[f"top{k}"] == pytest.approx(reference[f"top{k}"], abs=1e-6)
        assert mine["per_class"] == pytest.approx(reference["per_class"], abs=1e-6)
        assert mine["classes"] == names and names[absent] not in mine["per_class"]
    # no 'classes:': a dataset that names its classes gives them
    monkeypatch.setattr(WorldDataset, "classes", lambda self: names, raising=False)
    shorthand = {"name": "dataset", "task": "zeroshot", "dataset": "toy/world",
                 "params": {"split": "eval", "count": 120}, "modalities": ["audio"],
                 "prompts": {"embeddings": {"toy/clip": str(tmp_path / "prompts.npy")},
                             "labels": by_name[0]}}
    from_dataset, _ = _evaluate(run, tmp_path, [shorthand], "dataset")
    assert from_dataset["zeroshot"]["dataset/audio"]["classes"] == names


def test_dataset_item_ids_are_the_items_ids(trained, tmp_path, monkeypatch):
    from mcrx_toy.dataset import WorldDataset

    _, run, _ = trained
    model = mcrx.load(run / "model")
    captions, _ = _toy_rows(model, "toy/clip", "text", 50)
    np.save(tmp_path / "captions.npy", captions[::-1].copy())  # reversed order
    ids = [f"clip-{i}" for i in range(50)]
    monkeypatch.setattr(WorldDataset, "item_ids",
                        lambda self, modality: np.asarray(ids[: self.params.count]),
                        raising=False)
    evaluation = {"name": "ids", "ground_truth": "items", "data": {
        "audio": {"dataset": "toy/world", "params": {"split": "eval", "count": 50}},
        "text": {"embeddings": {"toy/clip": str(tmp_path / "captions.npy")},
                 "labels": _save(tmp_path, "ids.txt", ids[::-1])}}}
    metrics, _ = _evaluate(run, tmp_path, [evaluation])
    aligned, _ = _evaluate(run, tmp_path, [{"name": "pairs", "data": {
        "audio": {"dataset": "toy/world", "params": {"split": "eval", "count": 50}},
        "text": {"embeddings": {"toy/clip": str(tmp_path / "captions.npy")}}}}], "pairs")
    t2a = metrics["retrieval"]["text->audio"]
    assert t2a["queries_without_match"] == 0 and t2a["R@1"] > 0.3
    assert aligned["retrieval"]["text->audio"]["R@1"] < t2a["R@1"]  # reversed: misaligned


def test_class_labels_with_a_class_on_one_side_only(trained, tmp_path):
    """ground_truth: labels with class names in .txt, one class among the audio only: the
    other classes keep their meaning (CLIP_benchmark's recall, skip and miss), and the
    lonely class is counted and named; integer .npy labels give the same figures."""
    peers = _peers()
    _, run, _ = trained
    model = mcrx.load(run / "model")
    audio, a_labels = _toy_rows(model, "toy/clap", "audio", 80)
    image, i_labels = _toy_rows(model, "toy/clip", "image", 80)
    lonely = a_labels[0]
    image, i_labels = image[i_labels != lonely], i_labels[i_labels != lonely]
    np.save(tmp_path / "audio.npy", audio)
    np.save(tmp_path / "image.npy", image)

    def labels_set(name, audio_labels, image_labels, **extra):
        return {"name": name, "ground_truth": "labels", **extra, "data": {
            "audio": {"embeddings": {"toy/clap": str(tmp_path / "audio.npy")},
                      "labels": audio_labels},
            "image": {"embeddings": {"toy/clip": str(tmp_path / "image.npy")},
                      "labels": image_labels}}}

    names = (_save(tmp_path, "a.txt", [f"class {c:02d}" for c in a_labels]),
             _save(tmp_path, "i.txt", [f"class {c:02d}" for c in i_labels]))
    ints = (_save(tmp_path, "a.npy", a_labels), _save(tmp_path, "i.npy", i_labels))
    metrics, output = _evaluate(run, tmp_path, [
        labels_set("names", *names), labels_set("ints", *ints),
        labels_set("miss", *names, unmatched_queries="miss")])
    a = model.project("toy/clap", "audio", audio).numpy()
    i = model.project("toy/clip", "image", image).numpy()
    scores, positive = a @ i.T, a_labels[:, None] == i_labels[None, :]
    keep = positive.any(1)
    for k in (1, 5, 10):
        skip = peers.clip_benchmark_recall(scores[keep], positive[keep], k)
        assert metrics["retrieval"]["names/audio->image"][f"R@{k}"] == pytest.approx(skip)
        assert metrics["retrieval"]["ints/audio->image"][f"R@{k}"] == pytest.approx(skip)
        assert metrics["retrieval"]["miss/audio->image"][f"R@{k}"] == pytest.approx(
            peers.clip_benchmark_recall(scores, positive, k))
    assert metrics["retrieval"]["names/audio->image"]["queries_without_match"] == int(
        (~keep).sum())
    assert metrics["vocabulary"]["names"]["unmatched_examples"] == {
        "audio": [f"class {lonely:02d}"]}
    assert f"class {lonely:02d}" in output


# -- checked before encoding; models of different coverage; degenerate rows; names --------
def _official(tmp_path: Path, exmcr_release):
    return import_official(tmp_path / "official", ex_clap=exmcr_release(tmp_path / "h.pt", 1))


def test_mistakes_are_refused_before_any_encoding(trained, tmp_path):
    """6 images against 1 caption, 16 labels for 15 captions, a CSV as text inputs: one
    message each naming set, modality and file, exit 1, nothing encoded."""
    _, run, _ = trained
    images = tmp_path / "images"
    images.mkdir()
    for i in range(6):
        (images / f"{i}.png").write_bytes(b"x")
    (tmp_path / "one.txt").write_text("a dog\n")
    (tmp_path / "captions.txt").write_text("".join(f"c{i}\n" for i in range(15)))
    (tmp_path / "ids.txt").write_text("".join(f"{i}\n" for i in range(16)))
    (tmp_path / "test.csv").write_text("audiocap_id,youtube_id,start_time,caption\n1,a,0,x\n")
    audio = {"dataset": "toy/world", "params": {"split": "eval", "count": 15}}
    sets = [{"name": "pairs6", "data": {"image": {"inputs": str(images)},
                                        "text": {"inputs": str(tmp_path / "one.txt")}}},
            {"name": "ids", "ground_truth": "items", "data": {
                "audio": audio, "text": {"inputs": str(tmp_path / "captions.txt"),
                                         "labels": str(tmp_path / "ids.txt")}}},
            {"name": "table", "data": {"audio": audio,
                                       "text": {"inputs": str(tmp_path / "test.csv")}}}]
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump({"evaluation": sets}))
    cache = Path(os.environ["MCRX_CACHE_DIR"])
    before = sorted(cache.rglob("manifest.json"))
    result = CliRunner().invoke(app, ["evaluate", str(run / "model"), str(path), "--out",
                                      str(tmp_path / "ev"), "--no-progress"])
    output = " ".join(result.output.split())
    assert result.exit_code == 1, output
    assert "set 'pairs6'" in output and "image 6, text 1" in output and "one.txt" in output
    assert "set 'ids'" in output and "ids.txt holds 16 labels for 15 items of text" in output
    assert "set 'table'" in output and "mcrx/audiocaps" in output and "test.csv" in output
    assert "evaluate run" not in output and "Traceback" not in output
    assert sorted(cache.rglob("manifest.json")) == before  # nothing encoded
    # mcrx validate says the same of the file alone
    validated = CliRunner().invoke(app, ["validate", str(path)])
    assert validated.exit_code == 1 and "image 6, text 1" in " ".join(validated.output.split())


def test_models_of_different_modalities_side_by_side(trained, tmp_path, exmcr_release):
    """The official heads embed no point clouds: scored on audio–image, '—' elsewhere,
    the reason in metrics.json; a set no model given can score is refused up front."""
    _, run, _ = trained
    official = _official(tmp_path, exmcr_release)
    model = mcrx.load(run / "model")
    g = torch.Generator().manual_seed(0)
    data = {}
    for modality, space in (("image", "toy/clip"), ("audio", "toy/clap"),
                            ("pointcloud", "toy/ulip")):
        rows, _ = _toy_rows(model, space, modality, 120)
        embeddings = {space: _save(tmp_path, f"{modality}.npy", rows)}
        if modality in official.modalities:
            real = official.space_of(modality)
            embeddings[real] = _save(tmp_path, f"{modality}-real.npy",
                                     torch.randn(120, 512, generator=g).numpy())
        data[modality] = {"embeddings": embeddings}
    sets = [{"name": "three", "data": data},
            {"name": "clouds", "data": {m: data[m] for m in ("audio", "pointcloud")}}]
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump({"evaluation": sets}))
    result = CliRunner().invoke(app, ["evaluate", str(run / "model"), str(tmp_path / "official"),
                                      str(path), "--out", str(tmp_path / "ev"), "--json",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout[result.stdout.index("{"):])
    mine, theirs = document["models"]["run"], document["models"]["official"]
    assert "three/audio->pointcloud" in mine["retrieval"]
    assert set(theirs["retrieval"]) == {"three/audio->image", "three/image->audio"}
    assert theirs["not_covered"]["three"]["modalities"] == ["pointcloud"]
    assert "pointcloud" in theirs["not_covered"]["clouds"]["reason"]
    assert mine["not_covered"] == {}
    report = (tmp_path / "ev" / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| three/audio->pointcloud"))
    assert row.count("| — ") >= 4
    assert "official: set 'clouds': not scored" in report
    # only the official heads: nothing can score 'clouds'
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "official"), str(path),
                                      "--out", str(tmp_path / "ev2"), "--no-progress"])
    output = " ".join(result.output.split())
    assert result.exit_code == 1 and "set 'clouds': no model given can score it" in output


def test_degenerate_embeddings_are_flagged_in_a_real_process(trained, tmp_path):
    """Every audio row one vector (a collapsed encoder or model): a warning on the console,
    a marked row in report.md, `degenerate` in metrics.json; the same model named twice
    gets two labels and two sets of figures."""
    _, run, _ = trained
    model = mcrx.load(run / "model")
    image, _ = _toy_rows(model, "toy/clip", "image", 80)
    audio, _ = _toy_rows(model, "toy/clap", "audio", 80)
    # nearly one vector (an exactly constant file is refused on reading)
    collapsed = np.repeat(audio[:1], 80, axis=0) + 0.002 * np.random.default_rng(0).standard_normal(
        (80, audio.shape[1]))
    sets = [{"name": "flat", "data": {
        "image": {"embeddings": {"toy/clip": _save(tmp_path, "image.npy", image)}},
        "audio": {"embeddings": {"toy/clap": _save(tmp_path, "audio.npy", collapsed)}}}}]
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump({"evaluation": sets}))
    result = subprocess.run(
        [str(Path(sys.executable).with_name("mcrx")), "evaluate", str(run / "model"),
         str(run / "model"), str(path), "--out", str(tmp_path / "ev"), "--no-progress"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    console = " ".join(result.stderr.split())
    assert "warning" in console and "the audio embeddings are degenerate" in console
    assert "mean pairwise cosine" in console
    document = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert list(document["models"]) == ["run", "run #2"]
    flagged = document["models"]["run"]["degenerate"]["flat"]["audio"]
    assert flagged["mean_cosine"] > 0.99 and flagged["rows"] == 80
    assert "image" not in document["models"]["run"]["degenerate"]["flat"]
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "| audio->image ⚠ degenerate run: audio, run #2: audio |" in report
    assert "## Needs attention" in report
    files = list(document["figures"].values())
    assert len(files) == len(set(files))
    assert any("run-2-" in f for f in files) and any("/run-gap" in f for f in files)
