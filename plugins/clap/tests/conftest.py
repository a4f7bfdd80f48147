"""Shared by the clap plugin's tests: a roberta-base-format tokenizer folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE (GPT-2/roberta): printable Latin-1
    bytes stand for themselves, the others map to code points from 256 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    shifted = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(shifted)) for b in range(256)]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A roberta-base-format tokenizer folder: <s>=0 <pad>=1 </s>=2 <unk>=3, the byte
    symbols, pair merges up to 50,264 entries, <mask> last."""
    folder = tmp_path_factory.mktemp("roberta-tokenizer")
    symbols = _byte_symbols()
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for symbol in symbols:
        vocab[symbol] = len(vocab)
    merges = []
    for first in symbols:
        for second in symbols:
            if len(vocab) == 50264:
                break
            vocab[first + second] = len(vocab)
            merges.append(f"{first} {second}")
    vocab["<mask>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder
