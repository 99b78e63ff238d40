"""Model bundles shipped with logclass: ``default`` is the one the sidecar starts on.

``logclass train`` makes others; ``model.bundle`` in the config chooses one.
"""
