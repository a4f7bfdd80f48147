"""The papers' benchmarks read from their downloaded layouts, registered as datasets of the
built-in plugin (``mcrx/esc50``, ``mcrx/audiocaps``, ``mcrx/clotho``,
``mcrx/wavcaps-retrieval``, ``mcrx/coco``, ``mcrx/flickr30k``, ``mcrx/modelnet40``,
``mcrx/objaverse-lvis``). One module per family; each reads its files only when asked for
items, and imports without torch. ``evals/*.yaml`` evaluates unified models on them."""
