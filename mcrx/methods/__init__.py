"""The papers' algorithms: memory retrieval (:mod:`.retrieval`), what both share
(:mod:`.common`: connector base and blocks, InfoNCE, the bridge-centric pool, the linear
baseline), and each paper top to bottom (:mod:`.exmcr`, :mod:`.cmcr`). Plugin authors
writing a connector or a method import from :mod:`.common`."""
