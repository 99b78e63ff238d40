"""The gRPC front end: the LogClassifier service, health, security."""


class ServeError(RuntimeError):
    """The server cannot start as configured; the message names the setting to fix."""
