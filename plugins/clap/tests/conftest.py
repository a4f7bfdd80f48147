"""Shared by the clap plugin's tests: a roberta-base-format tokenizer folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _release_format():
    # loaded by path: the ulip plugin's tests have a module of the same name
    path = Path(__file__).with_name("release_format.py")
    spec = importlib.util.spec_from_file_location("clap_release_format", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A roberta-base-format tokenizer folder (``release_format.write_roberta_tokenizer``)."""
    return _release_format().write_roberta_tokenizer(tmp_path_factory.mktemp("roberta-tokenizer"))
