"""The Forward-protocol relay: Fluent Bit and Fluentd send records over the Forward protocol, the
relay classifies them through the same pipeline as the gRPC sidecar, queues them durably on disk
and forwards them to the next hop, at least once.

    sender ─► server (decode, ack after durable enqueue) ─► tagger (the engine)
          ─► buffer (one fsync'd file per group of chunks) ─► forwarder (PackedForward + ack) ─► upstream
"""

from logclass.errors import LogclassError


class RelayError(LogclassError):
    """The relay cannot start as configured; the message names the setting to fix."""
