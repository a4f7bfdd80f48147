"""``python -m mcrx`` is the ``mcrx`` command."""

from mcrx.cli import main

main()
