"""The HTTP front end of `logclass serve`: the LogClassifier contract as proto3 JSON, CSV uploads,
health, OpenAPI docs and the web console, on the same engine, limits and security as gRPC."""

from logclass.errors import LogclassError


class HttpServeError(LogclassError):
    """The HTTP front end cannot start as configured; the message names the setting to fix."""
