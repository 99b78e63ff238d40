"""The HTTP API of a real `logclass serve` on 127.0.0.1: CSV uploads, proto3 JSON, limits, the
OpenAPI document, and that HTTP and gRPC answer as one contract."""

from __future__ import annotations

import base64
import csv
import io
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import jsonschema
import pytest
from google.protobuf import json_format
from openapi_spec_validator import validate

from logclass.api.logclass.v1 import classifier_pb2 as pb
from logclass.api.logclass.v1 import classifier_pb2_grpc as pb_grpc
from tests.conftest import SEED_TEST_CSV, free_port, run_cli, scrape, start_server

MAX_RECORDS = 50
MAX_UPLOAD = 65536
MAX_REQUEST = 262144
MAX_MESSAGE = 2048


class Sidecar:
    def __init__(self, grpc_address: str, http: str, metrics_port: int) -> None:
        self.grpc_address = grpc_address
        self.http = httpx.Client(base_url=http, timeout=60)
        self.metrics_port = metrics_port

    def classify_grpc(self, request: pb.ClassifyRequest) -> pb.ClassifyResponse:
        with grpc.insecure_channel(self.grpc_address) as channel:
            return pb_grpc.LogClassifierStub(channel).Classify(request, timeout=30)

    def upload(self, content: bytes, name: str = "logs.csv", **params: Any) -> httpx.Response:
        return self.http.post("/classify", files={"file": (name, content, "text/csv")}, params=params)


@pytest.fixture(scope="module")
def sidecar() -> Iterator[Sidecar]:
    address, http_port, metrics_port = f"127.0.0.1:{free_port()}", free_port(), free_port()
    env = {
        "LOGCLASS_SERVER__METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
        "LOGCLASS_SERVER__MAX_RECORDS_PER_REQUEST": str(MAX_RECORDS),
        "LOGCLASS_SERVER__MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "LOGCLASS_SERVER__MAX_REQUEST_BYTES": str(MAX_REQUEST),
        "LOGCLASS_LIMITS__MAX_MESSAGE_BYTES": str(MAX_MESSAGE),
    }
    proc = start_server(address, env, flags=["--http-listen", f"127.0.0.1:{http_port}"])
    try:
        yield Sidecar(address, f"http://127.0.0.1:{http_port}", metrics_port)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def _status(response: httpx.Response, http_status: int, code: int, *fragments: str) -> str:
    assert response.status_code == http_status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "details"} and body["code"] == code, body
    for fragment in fragments:
        assert fragment in body["message"], body["message"]
    return str(body["message"])


def _rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8", "surrogateescape"), newline="")))


def test_csv_upload_answers_what_logclass_classify_writes(sidecar: Sidecar, tmp_path: Path) -> None:
    response = sidecar.upload(SEED_TEST_CSV.read_bytes(), name="seed_test.csv")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["x-logclass-rows"] == "10"
    assert 'filename="seed_test.classified.csv"' in response.headers["content-disposition"]
    out = tmp_path / "cli.csv"
    cli = run_cli("classify", str(SEED_TEST_CSV), "-o", str(out), "--no-progress")
    assert cli.returncode == 0, cli.stderr
    assert response.content == out.read_bytes()
    rows = _rows(response.content)
    assert len(rows) == 10 and rows[1]["target_label"] == "User Action" and rows[1]["tier"] == "regex"


def test_bad_rows_are_flagged_and_kept(sidecar: Sidecar) -> None:
    hostile = '<script>alert(1)</script><img src="http://example.invalid/x.png">'
    lines = [
        b"source,log_message,target_label",
        b'billing,"User 12345 logged in.",gold',
        b"crm,User 77 logged in.",
        b"crm,Backup completed, all files, no errors,gold",
        b'crm,"",gold',
        b"crm,caf\xe9 \xff not utf-8,gold",
        f'web,"{hostile.replace(chr(34), chr(34) * 2)}",gold'.encode(),
        b"",
        b"billing,User 999 logged in.,gold",
    ]
    response = sidecar.upload(b"\n".join(lines) + b"\n", template_id="true")
    assert response.status_code == 200, response.text
    rows = _rows(response.content)
    header = response.content.split(b"\r\n", 1)[0].decode()
    # The input's own target_label is kept, renamed; the blank line is skipped like the CLI does.
    assert header == "source,log_message,input_target_label,target_label,tier,confidence,error,template_id"
    assert len(rows) == 7
    ok, short, long, empty, binary, html, last = rows
    assert (
        ok["target_label"] == "User Action" and ok["error"] == "" and re.fullmatch(r"[0-9a-f]{16}", ok["template_id"])
    )
    assert short["error"] == "malformed_row" and short["target_label"] == "User Action"
    assert long["error"] == "malformed_row" and long["input_target_label"] == "all files,no errors,gold"
    assert empty["error"] == "empty_message" and empty["tier"] == "none"
    assert binary["error"] == "invalid_utf8"
    # Undecodable bytes go back out exactly as they came in.
    assert b"caf\xe9 \xff not utf-8" in response.content
    assert html["log_message"] == hostile and html["error"] == ""
    assert last["template_id"] == ok["template_id"], "same template, same id"


def test_the_csv_answer_writes_a_formula_after_a_quote(sidecar: Sidecar) -> None:
    """What the console offers for download: a log line a spreadsheet would run stays text."""
    response = sidecar.upload(b"source,log_message\nModernCRM,=cmd|' /C calc'!A0\n")
    assert response.status_code == 200, response.text
    (row,) = list(csv.DictReader(io.StringIO(response.text)))
    assert row["log_message"] == "'=cmd|' /C calc'!A0"


def test_without_a_token_a_page_of_another_site_cannot_call_it(sidecar: Sidecar) -> None:
    """A multipart POST is a simple cross-origin request any web page may send to 127.0.0.1, and
    DNS rebinding reaches the loopback listener under the attacker's own name."""
    csv_file = {"file": ("a.csv", b"source,log_message\na,User 1 logged in\n", "text/csv")}
    here = sidecar.http.base_url.netloc.decode()
    refused = [
        sidecar.http.post("/classify", files=csv_file, headers={"Origin": "https://evil.example"}),
        sidecar.http.post("/classify", files=csv_file, headers={"Sec-Fetch-Site": "cross-site"}),
        sidecar.http.post("/v1/classify", json={"records": []}, headers={"Origin": "http://localhost:1"}),
        sidecar.http.get("/v1/model", headers={"Host": "rebound.evil.example"}),
    ]
    for response in refused:
        _status(response, 403, 7, "without server.auth")
    # The console's own calls (same origin), and clients that are not browsers, go through.
    same = {"Origin": f"http://{here}", "Sec-Fetch-Site": "same-origin"}
    assert sidecar.http.post("/classify", files=csv_file, headers=same).status_code == 200
    assert sidecar.http.get("/v1/model", headers={"Host": f"localhost:{here.rpartition(':')[2]}"}).status_code == 200
    assert sidecar.upload(b"source,log_message\na,b\n").status_code == 200


def test_an_upload_row_is_bounded_before_the_parser_holds_it(sidecar: Sidecar) -> None:
    """A 50 MB field cost the CSV parser and Python some 250 MiB: a row longer than 16 x
    limits.max_message_bytes characters (32,768 here) is refused, on one line or quoted over many."""
    limit = 16 * MAX_MESSAGE
    one_line = b"source,log_message\na," + b"x" * (limit + 10) + b"\n"
    many_lines = b'source,log_message\na,"' + (b"y" * 100 + b"\n") * (limit // 100 + 10) + b'"\n'
    for data in (one_line, many_lines):
        _status(sidecar.upload(data), 400, 3, f"a row is longer than {limit:,} characters", "limits.max_message_bytes")
    # Many rows, each within the bound, are fine however long the file is, CR-only ends included.
    rows = b"".join(b"a,User %d logged in\n" % i for i in range(3000))
    assert len(rows) > limit and sidecar.upload(b"source,log_message\n" + rows).status_code == 200
    assert sidecar.upload(b"source,log_message\r" + rows.replace(b"\n", b"\r")).status_code == 200
    quoted = b"source,log_message\n" + b'a,"two\nlines, ""quoted"" once"\n' * 2000
    assert len(quoted) > limit and sidecar.upload(quoted).status_code == 200


def test_unusable_uploads_get_400_saying_why(sidecar: Sidecar) -> None:
    _status(sidecar.upload(b"source,msg\na,b\n"), 400, 3, "missing column(s) ['log_message']")
    _status(sidecar.upload(b""), 400, 3, "is empty")
    _status(sidecar.upload(b"source,log_message\na,b\n", encoding="no-such-codec"), 400, 3, "unknown encoding")
    for codec in ("zlib_codec", "base64_codec", "rot13"):  # codecs, but not of text: once a 500
        _status(sidecar.upload(b"source,log_message\na,b\n", encoding=codec), 400, 3, "not a text encoding")
    _status(sidecar.http.post("/classify", data={"x": "y"}), 400, 3, "file")
    # The server is unharmed.
    assert sidecar.upload(SEED_TEST_CSV.read_bytes()).status_code == 200


def test_json_classify_is_the_grpc_call_in_proto3_json(sidecar: Sidecar) -> None:
    body = {
        "requestId": "req-7",
        "waitForAll": True,
        "records": [
            {"id": "a", "source": "billing", "message": "User 12345 logged in."},
            {"id": "b", "source": "crm", "message": ""},
            {"id": "c", "source": "crm", "messageBytes": base64.b64encode(b"\xff\xfe bad").decode()},
            {"id": "d", "source": "crm", "message": "x" * (MAX_MESSAGE + 1)},
            {"id": "f", "source": "c" * 1025, "message": "User 12345 logged in."},
            {"id": "e", "source": "ModernHR", "message": "GET /v2/servers/detail HTTP/1.1 RCODE 200 len: 1583"},
        ],
    }
    response = sidecar.http.post("/v1/classify", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["requestId"] == "req-7"
    results = {r["id"]: r for r in answer["results"]}
    assert results["a"]["label"] == "User Action" and results["a"]["error"] == "ERROR_CODE_UNSPECIFIED"
    assert results["b"]["error"] == "EMPTY_MESSAGE"
    assert results["c"]["error"] == "INVALID_UTF8"
    assert results["d"]["error"] == "MESSAGE_TOO_LONG"
    assert results["f"]["error"] == "SOURCE_TOO_LONG"
    assert results["e"]["label"] == "HTTP Status" and results["e"]["tier"] == "embedding"
    # Every field, defaults included, in .proto order.
    assert list(results["b"]) == [f.json_name for f in pb.ClassifyResult.DESCRIPTOR.fields]
    # The same request over gRPC, printed by protobuf's own JSON mapping, is the same answer.
    request = json_format.ParseDict(body, pb.ClassifyRequest())
    expected = json_format.MessageToDict(sidecar.classify_grpc(request), always_print_fields_with_no_presence=True)
    assert answer == expected
    # Proto3 JSON parsers accept the original field names too.
    snake = {
        "request_id": "s",
        "wait_for_all": True,
        "records": [{"source": "billing", "message": "User 1 logged in."}],
    }
    assert sidecar.http.post("/v1/classify", json=snake).json()["requestId"] == "s"


def test_bad_json_requests_get_400_and_lose_nothing_else(sidecar: Sidecar) -> None:
    post = sidecar.http.post
    _status(post("/v1/classify", json={"records": [{"sorce": "x"}]}), 400, 3, "records.0.sorce")
    _status(post("/v1/classify", json={"records": "no"}), 400, 3, "records")
    _status(post("/v1/classify", json={"budgetMs": -1}), 400, 3, "budgetMs")
    _status(
        post("/v1/classify", content=b"{not json", headers={"content-type": "application/json"}),
        400,
        3,
        "not JSON",
    )
    _status(post("/v1/classify", json={"records": [{"messageBytes": "%%%"}]}), 400, 3, "messageBytes", "base64")
    too_many = {"records": [{"source": "s", "message": "m"}] * (MAX_RECORDS + 1)}
    _status(post("/v1/classify", json=too_many), 400, 3, f"the limit is {MAX_RECORDS}: split the batch")
    _status(sidecar.http.get("/v1/nothing-here"), 404, 5, "no such endpoint")
    _status(sidecar.http.get("/v1/classify"), 405, 12, "does not take GET")
    assert post("/v1/classify", json={"records": [{"source": "s", "message": "User 1 logged in."}]}).status_code == 200


def test_oversized_bodies_get_413_naming_the_limit(sidecar: Sidecar) -> None:
    big = b"source,log_message\n" + b"crm,User 12345 logged in.\n" * (MAX_UPLOAD // 20)
    _status(sidecar.upload(big), 413, 8, "server.max_upload_bytes", f"{MAX_UPLOAD:,} bytes")

    # No Content-Length (chunked): refused once the bytes received pass the limit.
    def chunks() -> Iterator[bytes]:
        boundary = b"--lc\r\n"
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="x.csv"\r\n\r\n'
        for _ in range(MAX_UPLOAD // 4096 + 2):
            yield b"crm,User 12345 logged in.\n" * 160
        yield b"\r\n--lc--\r\n"

    chunked = sidecar.http.post(
        "/classify", content=chunks(), headers={"content-type": "multipart/form-data; boundary=lc"}
    )
    assert "content-length" not in {k.lower() for k in chunked.request.headers}
    _status(chunked, 413, 8, "server.max_upload_bytes")
    json_body = {"records": [{"source": "s", "message": "m" * 1000}] * (MAX_REQUEST // 1000 + 1)}
    _status(sidecar.http.post("/v1/classify", json=json_body), 413, 8, "server.max_request_bytes")
    assert sidecar.upload(SEED_TEST_CSV.read_bytes()).status_code == 200


def test_model_info_and_health(sidecar: Sidecar) -> None:
    with grpc.insecure_channel(sidecar.grpc_address) as channel:
        info = pb_grpc.LogClassifierStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    model = sidecar.http.get("/v1/model")
    assert model.status_code == 200
    assert model.json() == json_format.MessageToDict(info, always_print_fields_with_no_presence=True)
    assert "Security Alert" in model.json()["labels"]
    for path in ("/healthz", "/readyz"):
        health = sidecar.http.get(path)
        assert health.status_code == 200 and health.json() == {"status": "SERVING"}


def _validator(spec: dict[str, Any], component: str) -> jsonschema.Draft202012Validator:
    # OpenAPI 3.1 schemas are JSON Schema 2020-12; refs resolve against the whole document.
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{component}", **spec})


def test_openapi_document_is_valid_and_follows_the_proto(sidecar: Sidecar) -> None:
    spec = sidecar.http.get("/openapi.json").json()
    validate(spec)
    assert {"/classify", "/v1/classify", "/v1/model", "/v1/stats", "/healthz", "/readyz"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    # Invalid input is a 400 with a Status body, as documented; FastAPI's own 422 is never sent.
    for path, operations in spec["paths"].items():
        for verb, operation in operations.items():
            assert "422" not in operation["responses"], (verb, path)
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")) and path not in ("/readyz",):
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Status"
                    }, (verb, path, status)
    assert "HTTPValidationError" not in schemas
    for message in (pb.ClassifyRequest, pb.LogRecord, pb.ClassifyResult, pb.ClassifyResponse, pb.ModelInfo):
        fields = {f.json_name for f in message.DESCRIPTOR.fields}
        assert set(schemas[message.DESCRIPTOR.name]["properties"]) == fields, message.DESCRIPTOR.name
    assert schemas["ClassifyResult"]["properties"]["error"]["enum"] == [v.name for v in pb.ErrorCode.DESCRIPTOR.values]
    # Real answers validate against the document.
    answer = sidecar.http.post(
        "/v1/classify", json={"records": [{"source": "s", "message": "User 1 logged in."}, {"message": ""}]}
    )
    _validator(spec, "ClassifyResponse").validate(answer.json())
    _validator(spec, "ModelInfo").validate(sidecar.http.get("/v1/model").json())
    _validator(spec, "Stats").validate(sidecar.http.get("/v1/stats").json())
    _validator(spec, "Status").validate(sidecar.http.post("/v1/classify", json={"x": 1}).json())
    with pytest.raises(jsonschema.ValidationError):
        _validator(spec, "ClassifyResponse").validate({"results": [{"error": "NOT_A_CODE"}]})


def test_docs_page_is_served_with_its_own_assets(sidecar: Sidecar) -> None:
    page = sidecar.http.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", page.text)
    assert urls, page.text
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), f"/docs loads {url} from elsewhere"
        assert sidecar.http.get(url).status_code == 200, url
    assert '"validatorUrl": null' in page.text, "Swagger UI's online validator badge would call out"


def test_stats_and_metrics_count_http_requests(sidecar: Sidecar) -> None:
    sidecar.http.post("/v1/classify", json={"records": [{"source": "billing", "message": "User 4 logged in."}]})
    sidecar.upload(b"source,log_message\n" + b"crm,x\n" * (MAX_UPLOAD // 5))
    stats = sidecar.http.get("/v1/stats").json()
    assert any(r["tier"] == "regex" and r["label"] == "User Action" and r["count"] >= 1 for r in stats["records"])
    assert stats["cache"]["exact"] + stats["cache"]["template"] + stats["cache"]["miss"] > 0
    assert {lane["lane"] for lane in stats["lanes"]} >= {"embedding"}
    metrics = scrape(sidecar.metrics_port)
    assert metrics['logclass_request_seconds_count{method="POST /v1/classify"}'] >= 1
    assert metrics['logclass_request_seconds_count{method="POST /classify"}'] >= 1
    assert metrics['logclass_http_responses_total{code="200",route="/v1/classify"}'] >= 1
    assert metrics['logclass_http_responses_total{code="413",route="/classify"}'] >= 1


def test_stopping_mid_upload_loses_nothing_already_answered(sidecar: Sidecar) -> None:
    # A caller that goes away mid-answer must not hurt the next one.
    many = b"source,log_message\n" + b"".join(b"crm,job %d finished in %d ms\n" % (i, i) for i in range(1500))
    with sidecar.http.stream("POST", "/classify", files={"file": ("m.csv", many, "text/csv")}) as response:
        assert response.status_code == 200
        next(response.iter_bytes())
    assert sidecar.upload(SEED_TEST_CSV.read_bytes()).status_code == 200
