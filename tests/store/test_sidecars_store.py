"""Real sidecars (`logclass serve` processes) on one real redis-server: a new template decided by
one is answered by the other from the store, without asking its own model. (The three-sidecar
cluster tests, claims under a kill, and corrections come with the rest of issue 30.)"""

from __future__ import annotations

import signal
import subprocess

import grpc
import redis

from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from tests.conftest import free_port, scrape, start_server
from tests.store.redis_server import RedisServer

# A new template the embedding head decides with confidence (so it is shared).
LINE = pb.LogRecord(
    source="ModernCRM", message="Suspicious login burst: 40 failed attempts for account 8812 from 10.0.0.9", id="1"
)


def _sidecar(store_url: str) -> tuple[str, int, subprocess.Popen[str]]:
    address, metrics = f"127.0.0.1:{free_port()}", free_port()
    env = {
        "LOGCLASS_LLM__BACKEND": "none",
        "LOGCLASS_STORE__URL": store_url,
        "LOGCLASS_STORE__TIMEOUT_MS": "2000",
        "LOGCLASS_SERVER__METRICS_LISTEN": f"127.0.0.1:{metrics}",
        "LOGCLASS_SERVER__HTTP_LISTEN": "null",
    }
    return address, metrics, start_server(address, env)


def _classify(address: str) -> pb.ClassifyResult:
    with grpc.insecure_channel(address) as channel:
        request = pb.ClassifyRequest(records=[LINE], wait_for_all=True)
        return pb_grpc.LogClassifierStub(channel).Classify(request, timeout=60).results[0]


def _embedded(metrics: int) -> float:
    return scrape(metrics).get('logclass_tier_records_total{tier="embedding"}', 0.0)


def test_a_decision_made_by_one_sidecar_is_answered_by_another_from_the_store(redis_server: RedisServer) -> None:
    sidecars = [_sidecar(redis_server.url) for _ in range(2)]
    try:
        (first_address, first_metrics, _), (second_address, second_metrics, _) = sidecars
        decided = _classify(first_address)
        assert decided.tier == "embedding" and _embedded(first_metrics) == 1
        probe = redis.Redis.from_url(redis_server.url)
        assert len(list(probe.scan_iter("logclass:decision:*"))) == 1
        probe.close()
        answered = _classify(second_address)
        assert (answered.label, answered.tier) == (decided.label, decided.tier)
        assert _embedded(second_metrics) == 0  # its own model was not asked
        second = scrape(second_metrics)
        assert second['logclass_store_lookups_total{result="hit"}'] == 1
        assert second["logclass_store_failures_total"] == 0 and second["logclass_store_circuit_open"] == 0
        assert scrape(first_metrics)['logclass_store_claims_total{outcome="won"}'] == 1
    finally:
        for _, _, proc in sidecars:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
