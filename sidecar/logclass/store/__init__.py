"""The store the sidecars of one deployment share (Valkey or Redis), behind one small interface:
shared decisions, one decider per new template (claims with a lease), and later lessons. With
``store.url`` null there is no store at all and each process decides alone."""
