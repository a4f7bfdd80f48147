"""mcrx plugin ``clap``: LAION CLAP audio–text spaces as ``clap/<model>``.

The hook module (:mod:`mcrx_clap.plugin`) and the params (:mod:`mcrx_clap.params`) import
without torch or laion_clap; :mod:`mcrx_clap.space` holds the heavy part and is imported
only when a space is built. Nothing here is named like the top-level modules laion_clap
puts on ``sys.path`` (``training``, ``evaluate``, ``clap_module``, ``hook``)."""

__version__ = "0.1.0"
