"""The fingerprint of a unified model folder: what a collection pins, so that vectors of two
models never meet in one index (their spaces are unrelated even at equal dimension)."""

from __future__ import annotations

from pathlib import Path

from mcrx.errors import McrxError
from mcrx.store.fingerprint import file_sha256, fingerprint_of

MANIFEST = "manifest.json"


def model_fingerprint(path: str | Path) -> str:
    """A short hash of the model's manifest and the bytes of its connector weights.

    The manifest names the spaces and their params (which weights each encoder loads), the
    connector files hold the trained projections: together they decide every vector the
    model produces. Re-training writes new weights, so a new fingerprint."""
    from mcrx.store.artifact import read_manifest

    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise McrxError(f"{path} is not a unified model (no {MANIFEST}); give the model folder "
                        "that `mcrx extend` wrote (OUT/model)")
    manifest = read_manifest(path)  # validated: every reader of a model goes through it
    # metrics and versions describe the run, not the vectors: leave them out so the same
    # weights re-evaluated keep their fingerprint
    essential = {k: v for k, v in manifest.items() if k not in ("metrics", "versions")}
    weights = []
    for leaf in manifest["leaves"]:
        file = path / leaf["file"]
        if not file.is_file():
            raise McrxError(f"{path}: the connector file {leaf['file']} is missing")
        try:
            weights.append((leaf["file"], file_sha256(file)))
        except OSError as exc:
            raise McrxError(f"{file}: cannot read it ({exc.strerror or exc})") from None
    return fingerprint_of("mcrx-model", essential, weights)
