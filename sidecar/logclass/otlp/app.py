"""The OTLP front end as one of `serve`'s (and `relay`'s) front ends: the OTLP/gRPC and OTLP/HTTP
receivers (``otlp.grpc_listen``, ``otlp.http_listen``), the tagger on the process's runtime, and
the durable buffer (``otlp.buffer``) with its delivery loop to ``otlp.upstream.endpoint``.

Built before the models load, so a misconfiguration (no upstream, a buffer folder another
process holds) fails at once; the receivers listen once the runtime has its engine (until then
senders' connections are refused and they retry), as the Forward relay does.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from prometheus_client import CollectorRegistry

from logclass.config.settings import OtlpSettings, Settings
from logclass.engine.runtime import Runtime, SwapStep
from logclass.errors import LogclassError
from logclass.otlp.buffered import BufferSink
from logclass.otlp.exporter import OtlpExporter
from logclass.otlp.metrics import OtlpMetrics
from logclass.otlp.receiver import OtlpGrpcReceiver, OtlpHttpReceiver
from logclass.otlp.tagger import Tagger

log = logging.getLogger("logclass.otlp")


class OtlpConfigError(LogclassError):
    """The ``otlp`` settings cannot run (``otlp.enabled`` without an upstream, no receiver)."""


def check_runnable(settings: OtlpSettings) -> None:
    if settings.upstream.endpoint is None:
        raise OtlpConfigError(
            "otlp.enabled is true but otlp.upstream.endpoint is null: set it to the OTLP receiver the tagged "
            "logs go to (e.g. http://otel-collector:4317), or set otlp.enabled to false"
        )
    if not settings.grpc_listen and not settings.http_listen:
        raise OtlpConfigError("otlp.enabled is true but otlp.grpc_listen and otlp.http_listen are both null")


class OtlpFrontEnd:
    """``FrontEnd``: receivers + tagger + ``BufferSink`` on the process's runtime and registry."""

    def __init__(self, settings: Settings, runtime: Runtime, registry: CollectorRegistry) -> None:
        section = settings.otlp
        check_runnable(section)
        self.settings = section
        self.grace_s = settings.server.grace_seconds
        self.metrics = OtlpMetrics(registry)
        self.tagger = Tagger.of_runtime(section, runtime)
        self.exporter = OtlpExporter(section.upstream)
        self.sink = BufferSink(section.buffer, self.exporter, metrics=self.metrics)
        self.grpc = (
            OtlpGrpcReceiver(section, self.tagger, self.sink, metrics=self.metrics) if section.grpc_listen else None
        )
        self.http = (
            OtlpHttpReceiver(section, self.tagger, self.sink, grace_s=self.grace_s, metrics=self.metrics)
            if section.http_listen
            else None
        )
        self._opened = False
        self._serving = False

    def receivers(self) -> list[OtlpGrpcReceiver | OtlpHttpReceiver]:
        return [r for r in (self.grpc, self.http) if r is not None]

    def describe(self) -> str:
        return (
            f"{', '.join(r.describe() for r in self.receivers())}, exporting to {self.settings.upstream.endpoint} "
            f"(otlp.upstream.protocol {self.settings.upstream.protocol}; buffer {self.sink.store.path})"
        )

    def how_to_call(self) -> str:
        if self.http is None:
            return ""
        return f"  OTLP/HTTP: point an OpenTelemetry exporter (otlphttp) at http://{self.http.address} (POST /v1/logs)"

    async def start(self) -> None:
        """Locks and recovers the buffer folder (a second process on it fails here, at once)."""
        await asyncio.get_running_loop().run_in_executor(None, self.sink.open)
        self._opened = True

    async def serving(self) -> None:
        self.sink.start()
        for receiver in self.receivers():
            await receiver.start()
        self._serving = True
        log.info(
            "otlp listening: %s; exporting to %s; buffer %s (limit %s bytes)",
            ", ".join(f"{r.describe()} port {r.port}" for r in self.receivers()),
            self.settings.upstream.endpoint,
            self.sink.store.path,
            self.settings.buffer.max_bytes,
        )

    def on_swap(self, settings: Settings) -> SwapStep | None:
        """A reload's attribute names, source keys and opt-out apply from the next request on; the
        listen addresses, limits, upstream and buffer need a restart."""
        return functools.partial(self.tagger.retarget, settings.otlp)

    async def stop(self, grace_s: float) -> None:
        """Receivers stop accepting (requests in progress get ``grace_s``), then the delivery loop
        stops; the chunks not exported stay on disk for the next start."""
        if self._serving:
            await asyncio.gather(*(r.stop(grace_s) for r in self.receivers()))
            await self.sink.stop()
        elif self._opened:
            await self.sink.store.close()
        await self.exporter.close()
        log.info(
            "otlp stopped; %s requests (%s bytes) stay buffered",
            self.sink.store.queued_chunks,
            self.sink.store.used_bytes,
        )
