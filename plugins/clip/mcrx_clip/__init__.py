"""mcrx plugin ``clip``: open_clip image–text spaces as ``clip/<architecture>``.

The hook module (:mod:`mcrx_clip.plugin`) and the params (:mod:`mcrx_clip.params`) import
without torch or open_clip; :mod:`mcrx_clip.space` holds the heavy part and is imported
only when a space is built."""

__version__ = "0.1.0"
