"""The gRPC front end: the LogClassifier service, health, security."""

from logclass.errors import LogclassError


class ServeError(LogclassError):
    """The server cannot start as configured; the message names the setting to fix."""
