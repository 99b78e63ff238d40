"""logclass sidecar: the classifier pipeline (tiers, template cache, router) and its front ends."""

__version__ = "0.1.0"
