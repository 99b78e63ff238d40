"""The classification engine every front end shares: the fast lane (router), the model lanes,
the staged asynchronous core over them, and the metrics registry. Nothing here imports a front end."""
