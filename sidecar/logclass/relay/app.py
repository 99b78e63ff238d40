"""The Forward-protocol front end: one relay (server, tagger, disk buffer, forwarder).

`logclass relay` runs it alone; inside `logclass serve` (``relay.enabled: true``) it runs beside
gRPC on the same runtime and metrics registry (see ``logclass.serve``), as a ``RelayFrontEnd``.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from prometheus_client import CollectorRegistry

from logclass.config.settings import Settings
from logclass.engine.runtime import Classify, SwapStep
from logclass.errors import LogclassError
from logclass.relay import RelayError
from logclass.relay import settings as settings_mod
from logclass.relay.buffer import DiskBuffer
from logclass.relay.forwarder import Forwarder
from logclass.relay.hold import Holder, RouteOf
from logclass.relay.metrics import RelayMetrics
from logclass.relay.server import ForwardServer
from logclass.relay.settings import RelaySettings
from logclass.relay.tagger import Tagger

log = logging.getLogger("logclass.relay")


class Relay:
    def __init__(
        self,
        settings: RelaySettings,
        classify: Classify | None,
        registry: CollectorRegistry,
        route_of: RouteOf | None = None,
    ) -> None:
        """``classify``: the engine, counted; None forwards records untouched. ``route_of``: the
        tier a source is routed to first (the hold keeps the LLM's sources longer)."""
        settings_mod.check_runnable(settings)
        self.settings = settings
        self.metrics = RelayMetrics(registry)
        self.buffer = DiskBuffer(
            settings.buffer_path,
            settings.section.buffer.max_bytes,
            settings.section.forward.max_chunk_bytes,
            settings.section.forward.compress == "gzip",
        )
        self.tagger = Tagger(settings, classify if settings.section.classify else None, self.metrics)
        self.holder = Holder(self.buffer, self.tagger, self.metrics, route_of)
        self.server = ForwardServer(settings, self.tagger, self.buffer, self.metrics, self.holder)
        self.forwarder = Forwarder(self.buffer, settings, self.metrics)

    async def start(self) -> None:
        recovered = await asyncio.get_running_loop().run_in_executor(None, self.buffer.open)
        self.buffer.start()
        self.holder.start()
        self.metrics.buffer_chunks.set_function(lambda: self.buffer.queued_chunks)
        self.metrics.buffer_bytes.set_function(lambda: self.buffer.used_bytes)
        self.metrics.buffer_limit_bytes.set(self.settings.section.buffer.max_bytes)
        self.forwarder.start()
        await self.server.start()
        s = self.settings
        log.info(
            "relay listening on %s (forward protocol; tls %s, handshake %s, classify %s, message key %r, "
            "source keys %s, %s opt-out conditions); "
            "forwarding to %s; buffer %s (limit %s bytes, %s chunks / %s records recovered)",
            s.listen,
            "on" if s.tls else "off",
            ("users" if s.users else "shared key") if s.shared_key else "off",
            "on" if s.section.classify else "off",
            s.message_key.spec,
            [k.spec for k in s.source_keys],
            len(s.opt_out),
            ", ".join(u.name for u in s.upstreams),
            s.buffer_path,
            s.section.buffer.max_bytes,
            len(recovered),
            sum(f.records for f in recovered),
        )

    async def stop(self) -> None:
        """Stops taking requests (those in progress are queued and acked within the grace period),
        writes what is queued, then stops forwarding; unacked chunks stay on disk for the next start."""
        grace = self.settings.grace_s
        await self.server.stop(grace)
        await self.holder.stop()
        await self.buffer.flush()
        await self.forwarder.stop(grace)
        await self.buffer.close()
        log.info("relay stopped; %s chunks (%s bytes) stay queued", self.buffer.queued_chunks, self.buffer.used_bytes)


class RelayFrontEnd:
    """The relay as one of `serve`'s front ends: it starts once the runtime has its engine (until
    then Fluent Bit keeps its records and retries), and takes a reload's tagging settings."""

    def __init__(
        self,
        settings: Settings,
        classify: Classify | None,
        registry: CollectorRegistry,
        route_of: RouteOf | None = None,
    ) -> None:
        """``classify``: the runtime's (None: records are forwarded untouched)."""
        self.relay = Relay(settings_mod.resolve(settings), classify, registry, route_of)

    def describe(self) -> str:
        return f"Forward relay on {self.relay.settings.listen}"

    def how_to_call(self) -> str:
        return ""

    async def start(self) -> None:
        """Listening waits for ``serving``: a relay that took records before the models loaded
        would forward them all with the fallback label."""

    async def serving(self) -> None:
        await self.relay.start()

    def on_swap(self, settings: Settings) -> SwapStep | None:
        try:
            tagging = settings_mod.resolve(settings)
        except LogclassError as exc:
            raise RelayError(f"the relay settings do not resolve: {exc}") from exc
        return functools.partial(self.relay.tagger.retarget, tagging)

    async def stop(self, grace_s: float) -> None:
        """``grace_s`` is relay.grace_s, which the relay's own settings carry."""
        await self.relay.stop()
