"""Use a unified model: embed files and texts, keep them in collections (faiss + SQLite),
search them with query arithmetic, from the terminal (``mcrx embed/index/search``) or a
web page (``mcrx serve``).

    from mcrx.search import Collection
    photos = Collection("photos.mcrx", model="runs/demo/model")
    photos.index(["pictures/"])
    photos.search('"2:dog barking" + cat.png - indoors', n=5, modalities=["audio"])

faiss is imported when an index is first built or read, so importing this package is cheap.
"""

from mcrx.search.collection import Collection, Hit, IndexReport, Item
from mcrx.search.fingerprint import model_fingerprint
from mcrx.search.query import Term, parse_query

__all__ = ["Collection", "Hit", "IndexReport", "Item", "Term", "model_fingerprint",
           "parse_query"]
