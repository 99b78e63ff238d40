"""`logclass serve` and `logclass relay`: one engine, the front ends the config asks for.

The front ends (gRPC, HTTP, the Forward relay) never import each other: this module, above them,
loads the engine once and hands it to each (gRPC and HTTP through one ClassifierService, so they
answer alike). Order of events: listen first (probes see NOT_SERVING while the models load),
load and warm the engine, attach it, serve until SIGTERM/SIGINT, drain the front ends, then let
the templates in flight land before the process goes.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from logclass.config.settings import Settings
from logclass.engine.engine import Engine
from logclass.engine.metrics import Metrics, serve_metrics
from logclass.engine.pipeline import load_engine, open_learnt
from logclass.http import front as http_front
from logclass.logs import setup_logging
from logclass.relay import settings as relay_settings_mod
from logclass.relay.app import Relay
from logclass.server.app import GrpcFrontEnd, how_to_call
from logclass.service.admin import AdminService
from logclass.service.classifier import ClassifierService, build_model_info
from logclass.tiers.embedding import EmbeddingTier

log = logging.getLogger("logclass.server")


def _describe(engine: Engine, settings: Settings) -> str:
    server = settings.server
    return (
        f"serving model {engine.model_version}; tiers {engine.tiers_enabled}; fallback {engine.fallback_label!r}; "
        f"inline budget {server.inline_budget_ms} ms; embedding batches ≤ {server.batch.max_batch_ms} ms "
        f"/ {server.batch.max_records} templates; cache {settings.templates.cache_size} templates"
    )


async def serve(settings: Settings, *, grpc: bool = True, ready: asyncio.Event | None = None) -> None:
    """``grpc`` False: the relay alone (`logclass relay`), with or without classification."""
    relay_on = settings.relay.enabled or not grpc
    # Checked before the models load, so a relay misconfiguration fails at once.
    relay_settings = relay_settings_mod.resolve(settings) if relay_on else None
    if relay_settings is not None:
        relay_settings_mod.check_runnable(relay_settings)
    metrics = Metrics()
    service = ClassifierService(settings.server, metrics)
    admin = AdminService(service)
    front = GrpcFrontEnd(settings, service, admin) if grpc else None
    http = http_front.HttpFrontEnd(settings, service, metrics) if grpc and settings.server.http_listen else None
    if front is not None:
        await front.start()
    if http is not None:
        await http.start()
    metrics_listen = settings.server.metrics_listen if grpc else settings.relay.metrics_listen
    if metrics_listen:
        serve_metrics(metrics, metrics_listen, "server.metrics_listen" if grpc else "relay.metrics_listen")
    fronts = "; ".join(f.describe() for f in (front, http) if f is not None) or "relay only"
    log.info("%s; metrics %s; loading models", fronts, metrics_listen or "off")

    relay_classifies = relay_settings is not None and settings.relay.classify
    classifies = front is not None or relay_classifies
    # Owned here, not by the engine: it outlives an engine swap and is closed after the last one.
    learnt = open_learnt(settings) if classifies else None
    engine, bundle = await load_engine(settings, metrics, learnt) if classifies else (None, None)
    if engine is not None:
        log.info("%s", _describe(engine, settings))
    relay = None
    if relay_settings is not None:
        classify = metrics.counting(engine) if engine is not None and relay_classifies else None
        relay = Relay(relay_settings, classify, metrics.registry)
        await relay.start()
    # SERVING last: once probes see it, every front end of this process takes traffic.
    if front is not None and engine is not None:
        embedding = engine.tier("embedding")
        device = embedding.device if isinstance(embedding, EmbeddingTier) else ""
        files = dict(bundle.manifest["files"]) if bundle is not None else {}
        service.attach(engine, build_model_info(engine, settings, files, device))
        await front.serving()
    if front is not None:
        calls = [how_to_call(settings.server), http_front.how_to_call(settings)]
        log.info("ready; try:\n%s", "\n".join(c for c in calls if c))
    if ready is not None:
        ready.set()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    grace = settings.server.grace_seconds
    log.info("draining: NOT_SERVING, up to %ss for in-flight requests", grace)
    service.drain()
    # The front ends drain together, before the engine they classify through closes.
    await asyncio.gather(
        *([front.stop(grace)] if front else []), *([http.stop()] if http else []), *([relay.stop()] if relay else [])
    )
    if engine is not None:
        await engine.close()
    if learnt is not None:
        learnt.close()
    log.info("stopped")


def run(settings: Settings, *, grpc: bool = True) -> int:
    setup_logging(settings.server.log_format)
    asyncio.run(serve(settings, grpc=grpc))
    return 0
