"""mcrx-toy: an offline synthetic world with ground truth (image, text, audio, pointcloud,
and the modality this plugin adds: tactile) and four small contrastive spaces trained on it
(toy/clip, toy/clap, toy/ulip, toy/haptic), registered
with mcrx through the ``mcrx`` entry-point group. Heavy modules load on first use."""

__version__ = "0.1.0"
