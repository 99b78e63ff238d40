"""The gRPC sidecar as clients see it: a real `logclass serve` process on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from proto.generate import generate, made_by
from tests.conftest import BUNDLE_FILES, ROOT, SEED_ROWS, SERVING, free_port, metrics_text, scrape, start_server

METRICS_PORT = 0  # set by the fixture


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    global METRICS_PORT
    METRICS_PORT = free_port()
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = {
        "LOGCLASS_SERVER__LOG_FORMAT": "json",
        "LOGCLASS_SERVER__MAX_RECORDS_PER_REQUEST": "100",
        "LOGCLASS_SERVER__METRICS_LISTEN": f"127.0.0.1:{METRICS_PORT}",
    }
    proc = start_server(address, env)
    try:
        yield address, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err
            lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
            assert any("serving model default@" in line["message"] for line in lines), err


def _request(rows: list[tuple[str, str, str]]) -> pb.ClassifyRequest:
    return pb.ClassifyRequest(
        records=[pb.LogRecord(source=s, message=m, id=str(i)) for i, (s, m, _) in enumerate(rows)], request_id="r1"
    )


def test_round_trip_in_order(server: tuple[str, subprocess.Popen[str]]) -> None:
    with grpc.insecure_channel(server[0]) as channel:
        response = pb_grpc.LogClassifierStub(channel).Classify(_request(SEED_ROWS), timeout=30)
    assert response.request_id == "r1"
    assert [r.id for r in response.results] == [str(i) for i in range(len(SEED_ROWS))]
    assert [r.label for r in response.results] == [label for _, _, label in SEED_ROWS]
    assert all(r.model_version.startswith("default@") and len(r.template_id) == 16 for r in response.results)
    assert response.results[1].tier == "regex" and response.results[1].detail == "user-session"


def test_bad_records_do_not_fail_the_batch(server: tuple[str, subprocess.Popen[str]]) -> None:
    request = pb.ClassifyRequest(
        records=[
            pb.LogRecord(source="a", message=""),
            pb.LogRecord(source="a", message_bytes=b"caf\xe9 not utf-8"),
            pb.LogRecord(source="a", message="x" * 70_000),
            pb.LogRecord(source="a", message_bytes=b"Backup completed successfully."),
            pb.LogRecord(source="a" * 1025, message="Backup completed successfully."),
        ]
    )
    with grpc.insecure_channel(server[0]) as channel:
        results = pb_grpc.LogClassifierStub(channel).Classify(request, timeout=30).results
    assert [r.error for r in results] == [
        pb.EMPTY_MESSAGE,
        pb.INVALID_UTF8,
        pb.MESSAGE_TOO_LONG,
        pb.ERROR_CODE_UNSPECIFIED,
        pb.SOURCE_TOO_LONG,
    ]
    assert results[0].label == "Unclassified" and results[0].tier == "none"
    assert results[3].label == "System Notification"


def test_oversize_request_is_invalid_argument(server: tuple[str, subprocess.Popen[str]]) -> None:
    rows = [("a", f"Backup completed successfully. {i}", "") for i in range(101)]
    with grpc.insecure_channel(server[0]) as channel, pytest.raises(grpc.RpcError) as err:
        pb_grpc.LogClassifierStub(channel).Classify(_request(rows), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limit is 100" in (err.value.details() or "")


def test_stream_and_model_info(server: tuple[str, subprocess.Popen[str]]) -> None:
    with grpc.insecure_channel(server[0]) as channel:
        stub = pb_grpc.LogClassifierStub(channel)
        requests = [
            pb.ClassifyRequest(records=[pb.LogRecord(source=s, message=m)], request_id=str(i))
            for i, (s, m, _) in enumerate(SEED_ROWS)
        ]
        responses = list(stub.ClassifyStream(iter(requests), timeout=30))
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    assert [r.request_id for r in responses] == [str(i) for i in range(len(SEED_ROWS))]
    assert [r.results[0].label for r in responses] == [label for _, _, label in SEED_ROWS]
    assert info.tiers == ["regex", "memory", "embedding"] and info.fallback_label == "Unclassified"
    assert "Security Alert" in info.labels and info.max_records_per_request == 100
    assert set(info.bundle_files_sha256) == BUNDLE_FILES


def test_concurrent_callers_match_sequential_and_are_batched(server: tuple[str, subprocess.Popen[str]]) -> None:
    messages = [(f"svc{i % 3}", f"Disk usage at {i} percent on node {i % 7}") for i in range(60)]

    async def main() -> tuple[list[str], list[str]]:
        async with grpc.aio.insecure_channel(server[0]) as channel:
            stub = pb_grpc.LogClassifierStub(channel)
            # wait_for_all: the comparison is about labels, not about the inline budget.
            calls = [
                stub.Classify(
                    pb.ClassifyRequest(records=[pb.LogRecord(source=s, message=m)], wait_for_all=True), timeout=30
                )
                for s, m in messages
            ]
            concurrent = [r.results[0].label for r in await asyncio.gather(*calls)]
            sequential = []
            for s, m in messages:
                response = await stub.Classify(
                    pb.ClassifyRequest(records=[pb.LogRecord(source=s, message=m)]), timeout=30
                )
                sequential.append(response.results[0].label)
            return concurrent, sequential

    concurrent, sequential = asyncio.run(main())
    assert concurrent == sequential
    # The embedding lane merged concurrent requests: some batch held more than one template.
    metrics = scrape(METRICS_PORT)
    single = metrics['logclass_batch_records_bucket{lane="embedding",le="1.0"}']
    assert metrics['logclass_batch_records_count{lane="embedding"}'] > single, metrics


def test_metrics_are_exported(server: tuple[str, subprocess.Popen[str]]) -> None:
    with grpc.insecure_channel(server[0]) as channel:
        stub = pb_grpc.LogClassifierStub(channel)
        stub.Classify(_request(SEED_ROWS), timeout=30)
        before = scrape(METRICS_PORT)
        # The same rows again: every one needing a model decision is now an exact-cache hit.
        stub.Classify(_request(SEED_ROWS), timeout=30)
    metrics = scrape(METRICS_PORT)
    exact = 'logclass_cache_hits_total{cache="exact"}'
    assert metrics[exact] - before.get(exact, 0.0) >= 3
    assert metrics["logclass_cache_misses_total"] == before["logclass_cache_misses_total"] >= 1
    assert metrics['logclass_records_total{label="User Action",tier="regex"}'] >= 1
    assert metrics['logclass_request_seconds_count{method="Classify"}'] >= 1
    assert metrics['logclass_tier_records_total{tier="embedding"}'] >= 1
    assert 'logclass_lane_queue_templates{lane="embedding"}' in metrics and "logclass_cache_hit_ratio" in metrics


def test_stubs_are_fresh(tmp_path: Path) -> None:
    """The committed stubs equal what their own generator writes today. Another grpcio-tools
    writes its version into them, so the check needs that version installed, and says which."""
    committed = made_by()
    installed = metadata.version("grpcio-tools")
    assert installed == committed.grpc, (
        f"the stubs were generated by {committed}, this environment has grpcio-tools {installed}: "
        f"install grpcio-tools=={committed.grpc} (the locked version: `make install`) to compare them"
    )
    generate(tmp_path)
    produced_files = sorted([*tmp_path.rglob("*_pb2*.py*"), *tmp_path.rglob("*_docs.json")])
    assert any(p.name == "classifier_docs.json" for p in produced_files)
    for produced in produced_files:
        committed = ROOT / "sidecar" / "logclass" / "api" / produced.relative_to(tmp_path)
        assert committed.read_text() == produced.read_text(), f"{committed} is stale: run `make proto`"


def test_sigterm_drains_in_flight_requests() -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    proc = start_server(address)

    async def main() -> list[int]:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.LogClassifierStub(channel)
            # Novel messages so the embedding tier has real work in flight when SIGTERM lands.
            calls = [
                stub.Classify(
                    pb.ClassifyRequest(
                        records=[pb.LogRecord(source="s", message=f"Novel event kind {i} {w}") for w in range(40)]
                    ),
                    timeout=60,
                )
                for i in range(10)
            ]
            tasks = [asyncio.ensure_future(c) for c in calls]
            await asyncio.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.1)
            try:  # draining: no longer SERVING (or already refusing new calls)
                check = health_pb2.HealthCheckRequest(service="")
                status = (await health_pb2_grpc.HealthStub(channel).Check(check, timeout=2)).status
                assert status != SERVING
            except grpc.aio.AioRpcError:
                pass
            responses = await asyncio.gather(*tasks)
            return [len(r.results) for r in responses]

    sizes = asyncio.run(main())
    assert sizes == [40] * 10
    assert proc.wait(timeout=60) == 0


def test_sync_and_async_clients(server: tuple[str, subprocess.Popen[str]]) -> None:
    from logclass.client import AsyncClassifierClient, ClassifierClient, records_from

    records = records_from((s, m) for s, m, _ in SEED_ROWS) * 30  # 150 records: two requests of 100
    with ClassifierClient(server[0], batch_size=100) as client:
        decisions = client.classify(records)
        assert client.model_info().fallback_label == "Unclassified"
    assert [d.label for d in decisions] == [label for _, _, label in SEED_ROWS] * 30

    async def main() -> list[str]:
        async with AsyncClassifierClient(server[0], batch_size=7) as client:
            return [d.label for d in await client.classify(records)]

    assert asyncio.run(main()) == [d.label for d in decisions]


def test_unavailable_server_fails_after_retries() -> None:
    from logclass.client import ClassifierClient, records_from

    client = ClassifierClient(f"127.0.0.1:{free_port()}", timeout=0.5, retries=2, backoff=0.01)
    with client, pytest.raises(grpc.RpcError) as err:
        client.classify(records_from([("a", "b")]))
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_classify_csv_through_the_server(server: tuple[str, subprocess.Popen[str]], tmp_path: Path) -> None:
    from tests.conftest import SEED_TEST_CSV, run_cli

    out = tmp_path / "out.csv"
    result = run_cli("classify", str(SEED_TEST_CSV), "-o", str(out), "--server", server[0], "--no-progress")
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 11 and ",User Action,regex," in lines[2]


NODE_CLIENT = ROOT / "tests" / "interop" / "node"


def test_node_grpc_js_client_interoperates(server: tuple[str, subprocess.Popen[str]]) -> None:
    """An independent client: grpc-js in Node.js, proto loaded at run time."""
    import json
    import shutil

    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js is not installed here (the independent grpc-js client needs node and npm)")
    if not (NODE_CLIENT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_CLIENT, check=True, timeout=300
        )
    records = [{"source": s, "message": m, "id": f"n{i}"} for i, (s, m, _) in enumerate(SEED_ROWS)]
    result = subprocess.run(
        [node, "client.js", server[0], json.dumps(records)],
        cwd=NODE_CLIENT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    results = out["response"]["results"]
    assert [r["id"] for r in results] == [f"n{i}" for i in range(len(SEED_ROWS))]
    assert [r["label"] for r in results] == [label for _, _, label in SEED_ROWS]
    assert results[1]["error"] == "ERROR_CODE_UNSPECIFIED" and out["response"]["request_id"] == "node-1"
    assert out["info"]["fallback_label"] == "Unclassified"


def test_a_full_lane_is_resource_exhausted_and_a_short_deadline_gets_pending() -> None:
    address, metrics_port = f"127.0.0.1:{free_port()}", free_port()
    proc = start_server(
        address,
        {
            "LOGCLASS_SERVER__LANES__EMBEDDING__MAX_QUEUE": "150",
            "LOGCLASS_SERVER__METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
            # A 300 ms deadline leaves a 20 ms budget: less than any batch of the long lines
            # below takes to encode, however fast the machine, so the late record must be pending.
            "LOGCLASS_SERVER__DEADLINE_MARGIN_MS": "280",
        },
    )

    def novel(tag: str, n: int = 100) -> pb.ClassifyRequest:
        # Unseen templates of about 100 tokens each: seconds of embedding-lane work per request.
        words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
        filler = " ".join(f"{w} subsystem reported oddity in module {w}" for w in words)
        return pb.ClassifyRequest(
            records=[
                pb.LogRecord(source=tag, message=f"{tag} {words[i % 10]} {words[i // 10]} {filler}") for i in range(n)
            ],
            wait_for_all=True,
        )

    async def main() -> tuple[list[object], object]:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.LogClassifierStub(channel)
            busy = [asyncio.ensure_future(stub.Classify(novel(f"q{i}"), timeout=60)) for i in range(4)]
            await asyncio.sleep(0.05)
            # A new template with a 300 ms deadline behind seconds of work: answered in time,
            # as pending (the budget ends the server's 280 ms margin before the deadline).
            late = asyncio.ensure_future(stub.Classify(novel("late", 1), timeout=0.3))
            results = await asyncio.gather(*busy, return_exceptions=True)
            late_result = (await asyncio.gather(late, return_exceptions=True))[0]
            return list(results), late_result

    try:
        results, late = asyncio.run(main())
        exhausted = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        served = [r for r in results if not isinstance(r, BaseException)]
        assert exhausted and all(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for e in exhausted)
        assert all("the embedding lane is full" in (e.details() or "") for e in exhausted)
        assert served and all(len(r.results) == 100 for r in served)  # type: ignore[attr-defined]
        assert all(x.tier != "pending" for r in served for x in r.results)  # type: ignore[attr-defined]
        assert not isinstance(late, BaseException), late
        assert [x.tier for x in late.results] == ["pending"]  # type: ignore[attr-defined]
        text = metrics_text(metrics_port)
        assert 'logclass_errors_total{kind="resource_exhausted"}' in text
        assert f'logclass_lane_rejected_requests_total{{lane="embedding"}} {len(exhausted)}.0' in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_health_is_not_serving_while_models_load(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    # An empty encoder cache: loading includes exporting the encoder to ONNX (seconds), a
    # first start as on a fresh node, so the loading phase is long enough to be seen.
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "LOGCLASS_SERVER__METRICS_LISTEN": "null",
        "LOGCLASS_EMBEDDING__CACHE_DIR": str(tmp_path / "encoders"),
    }
    http = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "logclass.cli", "serve", "--listen", address, "--http-listen", http[7:]],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[int] = []
    ready_seen: list[int] = []  # /readyz status codes, each change once
    unavailable = 0
    try:
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            classifier = pb_grpc.LogClassifierStub(channel)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and SERVING not in seen:
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
                except grpc.RpcError:
                    time.sleep(0.05)  # not listening yet
                    continue
                if not seen or seen[-1] != status:
                    seen.append(status)
                try:
                    ready = httpx.get(f"{http}/readyz", timeout=2).status_code
                except httpx.ConnectError:
                    continue  # HTTP starts listening just after gRPC
                if not ready_seen or ready_seen[-1] != ready:
                    ready_seen.append(ready)
                if status != SERVING:
                    # The service answers, but with UNAVAILABLE until the models are warm.
                    try:
                        classifier.GetModelInfo(pb.GetModelInfoRequest(), timeout=2)
                    except grpc.RpcError as exc:
                        assert exc.code() == grpc.StatusCode.UNAVAILABLE
                        unavailable += 1
                    else:
                        # Answered: only right if the models became warm since the health check.
                        now = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
                        assert now == SERVING, "GetModelInfo answered while health said NOT_SERVING"
                time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert seen == [health_pb2.HealthCheckResponse.NOT_SERVING, SERVING]
    # HTTP listens as early as gRPC and turns ready with it (the last poll sees both SERVING).
    assert ready_seen == [503, 200]
    assert unavailable >= 1, "no call was refused while the models loaded"
    assert proc.stderr is not None and "to ONNX (int8)" in proc.stderr.read()
