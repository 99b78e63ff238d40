"""The OpenTelemetry logs front end: OTLP requests (gRPC, or HTTP with protobuf or JSON) are
decoded within bounds, their LogRecords classified by the same pipeline as every front end, and
the decision written into each record's attributes.

    request bytes ─► codec (inflate, decode, check the bounds) ─► mapping (message, source,
    opt-out) ─► the engine ─► mapping.tag (attributes) ─► codec (encode) ─► downstream

Uses the published protos of the ``opentelemetry-proto`` package.
"""
