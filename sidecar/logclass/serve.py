"""`logclass serve` and `logclass relay`: one engine, the front ends the config asks for.

The front ends (gRPC, HTTP, the Forward relay) never import each other: this module, above them,
loads the engine once and hands it to each (gRPC and HTTP through one ClassifierService, so they
answer alike). Order of events: listen first (probes see NOT_SERVING while the models load),
load and warm the engine, attach it, serve until SIGTERM/SIGINT, drain the front ends, then let
the templates in flight land before the process goes. In between, SIGHUP (and the file watch,
``server.reload.watch_interval_s``) hot-reloads through one ``logclass.reload`` Reloader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from logclass.config.settings import Settings
from logclass.core.allocator import fix_mmap_threshold
from logclass.engine.engine import Engine
from logclass.engine.metrics import Metrics, serve_metrics
from logclass.engine.pipeline import load_engine, open_learnt
from logclass.http import front as http_front
from logclass.logs import setup_logging
from logclass.relay import settings as relay_settings_mod
from logclass.relay.app import Relay
from logclass.reload.reloader import Reloader, ReloadRefused, SwitchClassify, model_info_of
from logclass.reload.watch import FileWatch
from logclass.secrets import load_token, metrics_tls
from logclass.server.app import GrpcFrontEnd, how_to_call
from logclass.service.admin import AdminService
from logclass.service.classifier import ClassifierService

log = logging.getLogger("logclass.server")


def _describe(engine: Engine, settings: Settings) -> str:
    server = settings.server
    return (
        f"serving model {engine.model_version}; tiers {engine.tiers_enabled}; fallback {engine.fallback_label!r}; "
        f"inline budget {server.inline_budget_ms} ms; embedding batches ≤ {server.batch.max_batch_ms} ms "
        f"/ {server.batch.max_records} templates; cache {settings.templates.cache_size} templates"
    )


async def serve(
    settings: Settings,
    *,
    grpc: bool = True,
    ready: asyncio.Event | None = None,
    load_settings: Callable[[], Settings] | None = None,
    config_path: Path | None = None,
) -> None:
    """``grpc`` False: the relay alone (`logclass relay`), with or without classification.
    ``load_settings``: ``settings`` read again (file + env + flags), for a hot reload of the
    config; ``config_path``: the file the watch polls. The Admin service's Reload calls the
    same ``Reloader`` as SIGHUP and the watch."""
    relay_on = settings.relay.enabled or not grpc
    # Checked before the models load, so a relay misconfiguration fails at once.
    relay_settings = relay_settings_mod.resolve(settings) if relay_on else None
    if relay_settings is not None:
        relay_settings_mod.check_runnable(relay_settings)
    metrics = Metrics()
    service = ClassifierService(settings.server, metrics)
    loop = asyncio.get_running_loop()
    # Until the engine is loaded a SIGHUP has nothing to reload; without a handler it would end the process.
    loop.add_signal_handler(signal.SIGHUP, lambda: log.warning("SIGHUP ignored: the models are still loading"))
    admin = AdminService(service)
    front = GrpcFrontEnd(settings, service, admin) if grpc else None
    http = http_front.HttpFrontEnd(settings, service, metrics) if grpc and settings.server.http_listen else None
    if front is not None:
        await front.start()
    if http is not None:
        await http.start()
    metrics_listen = settings.server.metrics_listen if grpc else settings.relay.metrics_listen
    if metrics_listen:
        serve_metrics(
            metrics,
            metrics_listen,
            "server.metrics_listen" if grpc else "relay.metrics_listen",
            token=load_token(settings.server.metrics_auth, "server.metrics_auth"),
            tls=metrics_tls(settings.server),
        )
    fronts = "; ".join(f.describe() for f in (front, http) if f is not None) or "relay only"
    log.info("%s; metrics %s; loading models", fronts, metrics_listen or "off")

    relay_classifies = relay_settings is not None and settings.relay.classify
    classifies = front is not None or relay_classifies
    # Owned here, not by the engine: it outlives an engine swap and is closed after the last one.
    learnt = open_learnt(settings) if classifies else None
    engine, bundle = await load_engine(settings, metrics, learnt) if classifies else (None, None)
    if engine is not None:
        log.info("%s", _describe(engine, settings))
    if engine is not None:
        metrics.watch_engine(engine)
    relay = None
    relay_classify = SwitchClassify(metrics.counting(engine)) if engine is not None and relay_classifies else None
    if relay_settings is not None:
        relay = Relay(relay_settings, relay_classify, metrics.registry)
        await relay.start()
    # SERVING last: once probes see it, every front end of this process takes traffic.
    if front is not None and engine is not None:
        service.attach(engine, model_info_of(engine, settings, bundle))
        await front.serving()
    if front is not None:
        calls = [how_to_call(settings.server), http_front.how_to_call(settings)]
        log.info("ready; try:\n%s", "\n".join(c for c in calls if c))
    if ready is not None:
        ready.set()

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Reloads in progress (SIGHUP's, the watch): cancelled at shutdown, so none swaps an engine in
    # after the serving one was closed (a cancelled reload swaps nothing: it is still building).
    reloading: set[asyncio.Task[object]] = set()
    reloader: Reloader | None = None
    if engine is not None:
        reloader = Reloader(
            settings=settings,
            engine=engine,
            bundle=bundle,
            metrics=metrics,
            service=service if front is not None else None,
            relay=relay,
            relay_classify=relay_classify,
            load_settings=load_settings,
            learnt=learnt,
        )
        # From here the reloader owns the running set: a local reference would keep the first
        # engine (its models) alive after a reload retired it.
        engine = bundle = None
        admin.reloader = reloader.reload
        _on_sighup(loop, reloader, reloading)
        interval = settings.server.reload.watch_interval_s
        if interval > 0:
            extra = [config_path] if config_path is not None else []
            watch = FileWatch(lambda: [*extra, *reloader.watched_files()], reloader.reload, interval)
            reloading.add(loop.create_task(watch.run()))
            log.info("reload watch: polling %s every %s s", [*extra, *reloader.watched_files()], interval)
    else:
        loop.add_signal_handler(signal.SIGHUP, lambda: log.warning("SIGHUP ignored: no engine here to reload"))
    await stop.wait()
    grace = settings.server.grace_seconds
    log.info("draining: NOT_SERVING, up to %ss for in-flight requests", grace)
    service.drain()
    for task in reloading:
        task.cancel()
    # The front ends drain together, before the engine they classify through closes.
    await asyncio.gather(
        *([front.stop(grace)] if front else []), *([http.stop()] if http else []), *([relay.stop()] if relay else [])
    )
    if reloader is not None:
        await reloader.engine.close()  # the engine serving now, after any reloads
    if learnt is not None:
        learnt.close()
    log.info("stopped")


def _on_sighup(loop: asyncio.AbstractEventLoop, reloader: Reloader, tasks: set[asyncio.Task[object]]) -> None:
    """Each SIGHUP: ``reload(())`` as a task, kept in ``tasks`` (not garbage-collected, and
    cancelled at shutdown); a refusal is logged and counted by the reloader."""

    async def reload() -> None:
        with contextlib.suppress(ReloadRefused):
            await reloader.reload(())

    def on_hup() -> None:
        task = loop.create_task(reload())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)


def run(
    settings: Settings,
    *,
    grpc: bool = True,
    load_settings: Callable[[], Settings] | None = None,
    config_path: Path | None = None,
) -> int:
    setup_logging(settings.server.log_format)
    fix_mmap_threshold()
    asyncio.run(serve(settings, grpc=grpc, load_settings=load_settings, config_path=config_path))
    return 0
