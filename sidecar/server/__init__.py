"""The gRPC classification sidecar: service, cross-request batcher, process lifecycle."""


class ServeError(RuntimeError):
    """The server cannot start as configured; the message names the setting to fix."""
