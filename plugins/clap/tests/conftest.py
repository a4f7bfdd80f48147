"""Shared by the clap plugin's tests: a roberta-base-format tokenizer folder."""

from __future__ import annotations

from pathlib import Path

import clap_release_format
import pytest


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A roberta-base-format tokenizer folder (``clap_release_format.write_roberta_tokenizer``)."""
    return clap_release_format.write_roberta_tokenizer(
        tmp_path_factory.mktemp("roberta-tokenizer"))
