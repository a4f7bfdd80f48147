"""mcrx-toy: an offline synthetic world with ground truth (image, text, audio, pointcloud)
and three small contrastive spaces trained on it (toy/clip, toy/clap, toy/ulip), registered
with mcrx through the ``mcrx`` entry-point group. Heavy modules load on first use."""

__version__ = "0.1.0"
