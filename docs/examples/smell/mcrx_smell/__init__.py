"""mcrx-smell: the example plugin of CONTRIBUTING.md (a new modality and a space)."""

__version__ = "0.1.0"
