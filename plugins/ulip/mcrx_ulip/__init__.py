"""mcrx plugin ``ulip``: ULIP-2's PointBERT space (point clouds, images, text; 512-d),
reimplemented in pure PyTorch so it runs on CPU and GPU without CUDA extensions.

The hook module :mod:`mcrx_ulip.plugin` imports without torch; the model lives in
:mod:`mcrx_ulip.space`, :mod:`mcrx_ulip.model`, :mod:`mcrx_ulip.pointbert` and
:mod:`mcrx_ulip.text`; file readers in :mod:`mcrx_ulip.pointclouds`.
"""

__version__ = "0.1.0"
