"""`logclass serve` and `logclass relay`: one runtime, the front ends the config asks for.

The front ends (gRPC, HTTP, the Forward relay, OTLP) never import each other: this module, above them,
builds the configured ones and runs each through the ``FrontEnd`` protocol on one ``Runtime``
(the engine, swappable). Order of events: listen first (probes see NOT_SERVING while the models
load), load and warm the engine, attach it to the runtime, let every front end serve until
SIGTERM/SIGINT, drain them, then let the templates in flight land before the process goes. In
between, SIGHUP (and the file watch, ``server.reload.watch_interval_s``) hot-reloads the runtime
through one ``logclass.reload`` Reloader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from logclass.config import redacted_url
from logclass.config.settings import Settings
from logclass.core.allocator import fix_mmap_threshold
from logclass.engine.engine import Engine
from logclass.engine.lesson_sync import start_lesson_sync
from logclass.engine.metrics import Metrics, serve_metrics
from logclass.engine.pipeline import load_engine, open_learnt
from logclass.engine.runtime import FrontEnd, Runtime
from logclass.http.front import HttpFrontEnd
from logclass.logs import setup_logging
from logclass.otlp.app import OtlpConfigError, OtlpFrontEnd
from logclass.relay.app import RelayFrontEnd
from logclass.reload.reloader import Reloader, ReloadRefused
from logclass.reload.watch import FileWatch
from logclass.secrets import load_token, metrics_tls
from logclass.server.app import GrpcFrontEnd
from logclass.service.admin import AdminService
from logclass.service.classifier import ClassifierService
from logclass.store.open import open_store
from logclass.tiers import registry

log = logging.getLogger("logclass.server")


def _describe(engine: Engine, settings: Settings) -> str:
    server = settings.server
    return (
        f"serving model {engine.model_version}; tiers {engine.tiers_enabled}; fallback {engine.fallback_label!r}; "
        f"inline budget {server.inline_budget_ms} ms; embedding batches ≤ {server.batch.max_batch_ms} ms "
        f"/ {server.batch.max_records} templates; cache {settings.templates.cache_size} templates"
    )


def front_ends(settings: Settings, runtime: Runtime, admin: AdminService, *, grpc: bool) -> list[FrontEnd]:
    """The front ends ``settings`` turn on. ``grpc`` False: the relay alone (`logclass relay`),
    which classifies only when ``relay.classify`` says so."""
    service = admin.service
    found: list[FrontEnd] = []
    if grpc:
        found.append(GrpcFrontEnd(settings, service, admin))
        if settings.server.http_listen:
            found.append(HttpFrontEnd(settings, service))
    if settings.relay.enabled or not grpc:
        # Built (and checked) before the models load, so a relay misconfiguration fails at once.
        classify = runtime.classify if settings.relay.classify else None
        found.append(RelayFrontEnd(settings, classify, runtime.metrics.registry, route_of=runtime.first_tier))
    if settings.otlp.enabled:
        if not grpc and not settings.relay.classify:
            raise OtlpConfigError(
                "otlp.enabled needs an engine to classify with: under `logclass relay` set relay.classify true "
                "(or run `logclass serve`)"
            )
        found.append(OtlpFrontEnd(settings, runtime, runtime.metrics.registry))
    return found


def _serve_metrics(settings: Settings, metrics: Metrics, *, grpc: bool) -> str | None:
    listen = settings.server.metrics_listen if grpc else settings.relay.metrics_listen
    if listen:
        serve_metrics(
            metrics,
            listen,
            "server.metrics_listen" if grpc else "relay.metrics_listen",
            token=load_token(settings.server.metrics_auth, "server.metrics_auth"),
            tls=metrics_tls(settings.server),
        )
    return listen


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
    classifies = grpc or settings.relay.classify
    if classifies:  # before anything listens: a wrong router.tiers fails at once
        registry.check_router(settings.router.tiers, settings.router.source_routes)
    runtime = Runtime(settings, Metrics())
    admin = AdminService(ClassifierService(runtime))
    fronts = front_ends(settings, runtime, admin, grpc=grpc)
    loop = asyncio.get_running_loop()
    # Until the engine is loaded a SIGHUP has nothing to reload; without a handler it would end the process.
    loop.add_signal_handler(signal.SIGHUP, lambda: log.warning("SIGHUP ignored: the models are still loading"))
    for front in fronts:
        runtime.add_front_end(front)
        await front.start()
    metrics_listen = _serve_metrics(settings, runtime.metrics, grpc=grpc)
    log.info("%s; metrics %s; loading models", "; ".join(f.describe() for f in fronts), metrics_listen or "off")

    # Owned here, not by the engine: it outlives an engine swap and is closed after the last one.
    learnt = open_learnt(settings) if classifies else None
    # Like the learnt memory, the store's connections outlive engine swaps.
    store = open_store(settings.store) if classifies else None
    if store is not None:
        runtime.metrics.watch_store(store)
        log.info("shared store %s (key prefix %r)", redacted_url(settings.store.url or ""), settings.store.key_prefix)
    if classifies:
        engine, bundle = await load_engine(settings, runtime.metrics, learnt, store=store)
        log.info("%s", _describe(engine, settings))
        runtime.attach(engine, bundle)
        # From here the runtime owns the engine: a local reference would keep the first engine
        # (its models) alive after a reload retired it.
        del engine, bundle
    sync = start_lesson_sync(settings, learnt, store, runtime.lessons_changed)
    # SERVING last: once probes see it, every front end of this process takes traffic. Reversed,
    # so the relay and OTLP (which only listen from here) are up before gRPC health, first in
    # the list, says SERVING (a client waiting on it found the relay port closed under load).
    for front in reversed(fronts):
        await front.serving()
    calls = [c for c in (f.how_to_call() for f in fronts) if c]
    if calls:
        log.info("ready; try:\n%s", "\n".join(calls))
    if ready is not None:
        ready.set()

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Reloads in progress (SIGHUP's, the watch): cancelled at shutdown, so none swaps an engine in
    # after the serving one was closed (a cancelled reload swaps nothing: it is still building).
    reloading: set[asyncio.Task[object]] = set()
    if runtime.engine is not None:
        reloader = Reloader(runtime, load_settings=load_settings, learnt=learnt, store=store)
        admin.reloader = _start_reloads(reloader, config_path, reloading).reload
    else:
        loop.add_signal_handler(signal.SIGHUP, lambda: log.warning("SIGHUP ignored: no engine here to reload"))
    await stop.wait()
    grace = settings.server.grace_seconds
    log.info("draining: NOT_SERVING, up to %ss for in-flight requests", grace)
    runtime.drain()
    for task in reloading:
        task.cancel()
    # The front ends drain together, before the engine they classify through closes.
    await asyncio.gather(*(front.stop(grace) for front in fronts))
    await runtime.close()  # the engine serving now, after any reloads
    if sync is not None:
        await sync.close()
    if learnt is not None:
        learnt.close()
    if store is not None:
        await store.close()
    log.info("stopped")


def _start_reloads(reloader: Reloader, config_path: Path | None, tasks: set[asyncio.Task[object]]) -> Reloader:
    """``reloader`` on SIGHUP and (``server.reload.watch_interval_s`` > 0) the file watch."""
    loop = asyncio.get_running_loop()
    _on_sighup(loop, reloader, tasks)
    interval = reloader.settings.server.reload.watch_interval_s
    if interval > 0:
        extra = [config_path] if config_path is not None else []
        watch = FileWatch(lambda: [*extra, *reloader.watched_files()], reloader.reload, interval)
        tasks.add(loop.create_task(watch.run()))
        log.info("reload watch: polling %s every %s s", [*extra, *reloader.watched_files()], interval)
    return reloader


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
