"""`logclass serve` with ``relay.enabled: true``: the full pipeline (regex and embedding tiers)
behind both gRPC and the relay, one engine, one cache, one set of lanes, one /metrics."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from fluent import sender as fluent_sender

from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from tests.conftest import SEED_ROWS, scrape, start_server
from tests.relay.conftest import report
from tests.relay.forward_peer import ForwardClient, Upstream, free_port


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[subprocess.Popen[str], int, int, int, Upstream]]:
    upstream = Upstream().start()
    relay_port, metrics_port, grpc_port = free_port(), free_port(), free_port()
    env = {
        "LOGCLASS_SERVER__LOG_FORMAT": "json",
        "LOGCLASS_SERVER__METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
        "LOGCLASS_RELAY__ENABLED": "true",
        "LOGCLASS_RELAY__LISTEN": f"127.0.0.1:{relay_port}",
        "LOGCLASS_RELAY__UPSTREAMS": f"[{{host: 127.0.0.1, port: {upstream.port}}}]",
        "LOGCLASS_RELAY__BUFFER__PATH": str(tmp_path_factory.mktemp("relay-buffer")),
        "LOGCLASS_RELAY__SOURCE_KEY": "source",
    }
    proc = start_server(f"127.0.0.1:{grpc_port}", env)
    try:
        yield proc, relay_port, metrics_port, grpc_port, upstream
    finally:
        upstream.stop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)


def test_relay_inside_serve_shares_the_pipeline_with_grpc(
    served: tuple[subprocess.Popen[str], int, int, int, Upstream], tmp_path: Path
) -> None:
    _, relay_port, metrics_port, grpc_port, upstream = served
    # A raw PackedForward chunk and fluent-logger records, both through the full pipeline.
    with ForwardClient(relay_port) as client:
        chunk = [{"log": m, "source": s, "seq": f"raw-{i}"} for i, (s, m, _) in enumerate(SEED_ROWS)]
        assert client.wait_ack(client.packed("k8s.app", chunk), timeout=60)
    logger = fluent_sender.FluentSender("fl", host="127.0.0.1", port=relay_port)
    for i, (s, m, _) in enumerate(SEED_ROWS):
        assert logger.emit("app", {"log": m, "source": s, "seq": f"fl-{i}"}), logger.last_error
    logger.close()
    sent = [f"raw-{i}" for i in range(len(SEED_ROWS))] + [f"fl-{i}" for i in range(len(SEED_ROWS))]
    assert upstream.wait_for_all(sent, timeout=60)
    report("serve + relay", sent, upstream.values())
    by_seq = {e.record["seq"]: e.record for e in upstream.events}
    for prefix in ("raw", "fl"):
        assert [by_seq[f"{prefix}-{i}"]["log_label"] for i in range(len(SEED_ROWS))] == [x for _, _, x in SEED_ROWS]
    assert {by_seq[f"raw-{i}"]["log_label_tier"] for i in range(len(SEED_ROWS))} == {"regex", "memory"}

    # gRPC asks for the same records: the relay already filled the shared exact cache.
    before = scrape(metrics_port)
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        request = pb.ClassifyRequest(records=[pb.LogRecord(source=s, message=m) for s, m, _ in SEED_ROWS])
        results = pb_grpc.LogClassifierStub(channel).Classify(request, timeout=30).results
    assert [r.label for r in results] == [x for _, _, x in SEED_ROWS]
    after = scrape(metrics_port)
    exact = 'logclass_cache_hits_total{cache="exact"}'
    assert after[exact] - before.get(exact, 0.0) == len(SEED_ROWS)
    assert after['logclass_relay_records_in_total{mode="packed_forward"}'] == len(SEED_ROWS)
    assert after['logclass_relay_records_in_total{mode="message"}'] == len(SEED_ROWS)
    assert after["logclass_relay_records_out_total"] >= 2 * len(SEED_ROWS)
    # Relay and gRPC records are counted by one engine: the two relay modes and the gRPC call.
    classified = sum(v for k, v in after.items() if k.startswith("logclass_records_total"))
    assert classified >= 3 * len(SEED_ROWS)
    assert after['logclass_lane_queue_templates{lane="embedding"}'] == 0


def test_serve_drains_the_relay_on_sigterm(served: tuple[subprocess.Popen[str], int, int, int, Upstream]) -> None:
    proc = served[0]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    messages = [json.loads(line)["message"] for line in err.splitlines() if line.startswith("{")]
    assert any(m.startswith("relay listening on") for m in messages), err
    assert any(m.startswith("relay stopped") for m in messages), err
