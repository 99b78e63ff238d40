"""The Admin service on a real `logclass serve`: its own token, Reload over RPC, and Feedback
(human corrections) deciding the next record of the template at once and surviving a restart."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from logclass.api.logclass.v1 import admin_pb2 as admin_pb
from logclass.api.logclass.v1 import admin_pb2_grpc as admin_grpc
from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from tests.conftest import free_port, start_server

ADMIN = "admin-secret-0123456789"
SHIPPER = "shipper-secret-0123456789"
RULES = """rules:
  - name: disk-full
    pattern: 'no space left on device'
    label: Error
"""
RULES_V2 = (
    RULES
    + """  - name: oom-kill
    pattern: 'out of memory: killed process'
    label: Critical Error
"""
)
# Not in the seed's training data: without a correction the memory tier does not know it.
NOVEL = "flux capacitor {n} recalibrated by the overnight job"


def _auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


class Server:
    def __init__(self, tmp: Path, *, admin: bool = True, learnt: Path | None = None) -> None:
        self.rules = tmp / "rules.yaml"
        if not self.rules.exists():
            self.rules.write_text(RULES)
        self.address = f"127.0.0.1:{free_port()}"
        env = {
            # The memory tier and the rules: no encoder to load, so the server starts in seconds.
            "LOGCLASS_ROUTER__TIERS": "[regex, memory]",
            "LOGCLASS_REGEX__RULES_FILE": str(self.rules),
            "LOGCLASS_SERVER__AUTH__TOKEN": SHIPPER,
            # Two servers at once in one test: the default metrics port would clash.
            "LOGCLASS_SERVER__METRICS_LISTEN": "null",
        }
        if admin:
            env["LOGCLASS_SERVER__ADMIN_AUTH__TOKEN"] = ADMIN
        if learnt is not None:
            env["LOGCLASS_MEMORY__LEARNT_FILE"] = str(learnt)
        self.proc = start_server(self.address, env)
        self.channel = grpc.insecure_channel(self.address)
        self.admin = admin_grpc.AdminStub(self.channel)
        self.classifier = pb_grpc.LogClassifierStub(self.channel)

    def classify(self, *messages: str, source: str = "ops") -> list[pb.ClassifyResult]:
        request = pb.ClassifyRequest(records=[pb.LogRecord(source=source, message=m) for m in messages])
        return list(self.classifier.Classify(request, timeout=10, metadata=_auth(SHIPPER)).results)

    def feedback(self, message: str, label: str, token: str = ADMIN) -> admin_pb.FeedbackResponse:
        correction = admin_pb.Correction(record=pb.LogRecord(source="ops", message=message, id="c1"), label=label)
        request = admin_pb.FeedbackRequest(corrections=[correction])
        return self.admin.Feedback(request, timeout=10, metadata=_auth(token))

    def close(self) -> str:
        self.channel.close()
        return _stop(self.proc)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path, learnt=tmp_path / "learnt.jsonl")
    yield s
    s.close()


def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code()  # type: ignore[no-any-return]


def test_admin_service_needs_its_own_token_and_is_absent_without_one(server: Server, tmp_path: Path) -> None:
    reload = admin_pb.ReloadRequest()
    assert _code(lambda: server.admin.Reload(reload, timeout=10)) == grpc.StatusCode.UNAUTHENTICATED
    # The shippers' token classifies but does not administer, and the admin token does not classify.
    assert _code(lambda: server.admin.Reload(reload, timeout=10, metadata=_auth(SHIPPER))) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    request = pb.ClassifyRequest(records=[pb.LogRecord(source="ops", message="x")])
    assert _code(lambda: server.classifier.Classify(request, timeout=10, metadata=_auth(ADMIN))) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    assert server.admin.Reload(reload, timeout=30, metadata=_auth(ADMIN)).changed == []
    bad = admin_pb.ReloadRequest(parts=["everything"])
    assert _code(lambda: server.admin.Reload(bad, timeout=10, metadata=_auth(ADMIN))) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )

    plain = Server(_fresh(tmp_path, "plain"), admin=False)
    try:
        assert _code(lambda: plain.admin.Reload(reload, timeout=10, metadata=_auth(ADMIN))) == (
            grpc.StatusCode.UNIMPLEMENTED
        )
    finally:
        plain.close()


def _fresh(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return folder


def test_reload_rpc_swaps_rules_and_refuses_a_bad_file(server: Server) -> None:
    oom = "Out of memory: Killed process 7 (java)"
    assert server.classify(oom)[0].tier != "regex"
    server.rules.write_text(RULES_V2)
    response = server.admin.Reload(admin_pb.ReloadRequest(parts=["rules"]), timeout=30, metadata=_auth(ADMIN))
    assert list(response.changed) == ["rules"] and len(response.rules_sha256) == 64
    [result] = server.classify(oom)
    assert (result.tier, result.label) == ("regex", "Critical Error")

    server.rules.write_text(RULES_V2 + "  - name: broken\n    pattern: '(unclosed'\n    label: Error\n")
    with pytest.raises(grpc.RpcError) as info:
        server.admin.Reload(admin_pb.ReloadRequest(parts=["rules"]), timeout=30, metadata=_auth(ADMIN))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "broken" in (info.value.details() or "")
    assert server.classify("Out of memory: Killed process 8 (db)")[0].tier == "regex"


def test_feedback_decides_the_next_record_of_the_template_and_survives_a_restart(tmp_path: Path) -> None:
    learnt = tmp_path / "learnt.jsonl"
    server = Server(tmp_path, learnt=learnt)
    try:
        before = server.classify(NOVEL.format(n=1))[0]
        assert before.tier != "memory"
        # An unknown label is refused whole, naming the labels; nothing is learnt.
        assert _code(lambda: server.feedback(NOVEL.format(n=1), "Flux Event")) == grpc.StatusCode.INVALID_ARGUMENT
        assert _code(lambda: server.feedback(NOVEL.format(n=1), "System Notification", SHIPPER)) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        assert server.classify(NOVEL.format(n=1))[0].tier == before.tier

        [now] = server.feedback(NOVEL.format(n=1), "System Notification").results
        assert (now.id, now.label, now.tier) == ("c1", "System Notification", "memory")
        # Another record of the same template, never seen: decided by the memory at once.
        [next_one] = server.classify(NOVEL.format(n=2))
        assert (next_one.label, next_one.tier) == ("System Notification", "memory")
        # A record a rule decides keeps the rule's answer, and the response says so.
        [ruled] = server.feedback("write /x: no space left on device", "User Action").results
        assert (ruled.label, ruled.tier) == ("Error", "regex")
    finally:
        server.close()
    lines = [json.loads(line) for line in learnt.read_text().splitlines()]
    assert any(e["label"] == "System Notification" and e["origin"] == "feedback" for e in lines)

    restarted = Server(tmp_path, learnt=learnt)
    try:
        [again] = restarted.classify(NOVEL.format(n=3))
        assert (again.label, again.tier) == ("System Notification", "memory")
    finally:
        restarted.close()


def test_lessons_are_listed_and_a_dropped_one_is_gone_here_and_after_a_restart(tmp_path: Path) -> None:
    learnt = tmp_path / "learnt.jsonl"
    server = Server(tmp_path, learnt=learnt)
    try:
        server.feedback(NOVEL.format(n=1), "System Notification")
        per_source = admin_pb.Correction(
            record=pb.LogRecord(source="billing", message="Quota of tenant 7 exceeded by 12%"),
            label="Error",
            this_source_only=True,
        )
        server.admin.Feedback(admin_pb.FeedbackRequest(corrections=[per_source]), timeout=10, metadata=_auth(ADMIN))
        listing = server.admin.ListLessons(admin_pb.ListLessonsRequest(), timeout=10, metadata=_auth(ADMIN))
        assert listing.total == 2 and [x.key.scope for x in listing.lessons] == ["billing", ""]  # newest first
        assert {(x.origin, x.label) for x in listing.lessons} == {
            ("feedback", "Error"),
            ("feedback", "System Notification"),
        }
        only = admin_pb.ListLessonsRequest(scope="billing", limit=5)
        assert [x.label for x in server.admin.ListLessons(only, timeout=10, metadata=_auth(ADMIN)).lessons] == ["Error"]
        # A page is bounded: a lesson holds a whole log line.
        with pytest.raises(grpc.RpcError) as refused:
            server.admin.ListLessons(admin_pb.ListLessonsRequest(limit=1001), timeout=10, metadata=_auth(ADMIN))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at most 1000 lessons a call" in str(refused.value.details())
        assert (
            _code(
                lambda: server.admin.ListLessons(
                    admin_pb.ListLessonsRequest(origin="x"), timeout=10, metadata=_auth(ADMIN)
                )
            )
            == grpc.StatusCode.INVALID_ARGUMENT
        )
        assert _code(
            lambda: server.admin.ListLessons(admin_pb.ListLessonsRequest(), timeout=10, metadata=_auth(SHIPPER))
        ) == (grpc.StatusCode.UNAUTHENTICATED)
        # The per-source correction answers billing alone.
        assert [r.label for r in server.classify("Quota of tenant 9 exceeded by 3%", source="billing")] == ["Error"]
        assert server.classify("Quota of tenant 9 exceeded by 3%", source="crm")[0].tier != "memory"

        drop = admin_pb.DropLessonsRequest(keys=[listing.lessons[1].key])
        dropped = server.admin.DropLessons(drop, timeout=10, metadata=_auth(ADMIN)).dropped
        assert [x.label for x in dropped] == ["System Notification"]
        assert server.classify(NOVEL.format(n=2))[0].tier != "memory", "dropped: decided by the tiers again"
    finally:
        server.close()
    restarted = Server(tmp_path, learnt=learnt)
    try:
        assert restarted.classify(NOVEL.format(n=3))[0].tier != "memory"
        assert [r.label for r in restarted.classify("Quota of tenant 1 exceeded by 1%", source="billing")] == ["Error"]
    finally:
        restarted.close()
