"""Values and primitives the tiers and the engine share: records and decisions, template masking,
caches, model bundles. Nothing here imports a tier, the engine or a front end."""
