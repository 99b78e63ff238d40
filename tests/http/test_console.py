"""The web console: POST /v1/report and the static page in-process, then the page in headless
Chromium against a real `logclass serve` (bearer auth on), as a user would use it."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from logclass import config
from logclass.core.bundle import ModelBundle
from logclass.http.console import CONTENT_SECURITY_POLICY, console_router
from logclass.jobs.csv_classify import classify_csv
from logclass.jobs.report import ReportOptions, build_report, report_content
from tests.conftest import ROOT, SEED_TEST_CSV, MemoEncoder, free_port, offline_engine, start_server, wait_until
from tests.report.chromium import Chromium, Tab, artifacts_dir, require_chromium

CONSOLE_DIR = ROOT / "sidecar" / "logclass" / "http" / "console"
SAMPLE_CHARTS = {"labels", "labels_by_source", "tiers", "confidence"}
CLASSIFIED_COLUMNS = ["source", "log_message", "target_label", "tier", "confidence", "error"]
# Markup that would run, or fetch, if the console put a log line into the page as HTML.
HOSTILE = '<img src="/x.png" onerror="window.pwned=1"><script>window.pwned=1</script><b>bold</b>'
TOKEN = "console-test-token-0123456789"


@pytest.fixture(scope="module")
def classified_sample(
    tmp_path_factory: pytest.TempPathFactory, cfg: config.Settings, bundle: ModelBundle, encoder: MemoEncoder
) -> Path:
    """The 10-row seed sample classified by the real router (no LLM), as POST /classify returns it."""
    out = tmp_path_factory.mktemp("classified") / "sample_out.csv"
    router = offline_engine(cfg, bundle=bundle, encoder=encoder)
    try:
        classify_csv(SEED_TEST_CSV, out, router, progress=False)
    finally:
        router.close()
    return out


@pytest.fixture(scope="module")
def client(cfg: config.Settings) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(console_router(cfg))
    with TestClient(app) as c:
        yield c


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.size


def test_report_content_draws_the_report_without_writing(
    classified_sample: Path, cfg: config.Settings, tmp_path: Path
) -> None:
    content = report_content(classified_sample, cfg, ReportOptions(progress=False))
    assert content.rows == 10
    assert list(content.charts) == ["labels", "labels_by_source", "tiers", "confidence"]
    with classified_sample.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    labels, sources = {r["target_label"] for r in rows}, {r["source"] for r in rows}
    assert [(c.value, c.caption) for c in content.cards[:3]] == [
        ("10", "records"),
        (str(len(labels)), "labels"),
        (str(len(sources)), "sources"),
    ]
    assert content.calibration is None  # no gold column
    for chart in content.charts.values():
        assert chart.title and chart.alt
        width, height = _png_size(chart.png)
        assert width > 400 and height > 150
    # One code path: the files `logclass report --png` writes are these charts, byte for byte.
    result = build_report(classified_sample, None, tmp_path, cfg, ReportOptions(progress=False))
    assert {p.stem: p.read_bytes() for p in result.pngs} == {n: c.png for n, c in content.charts.items()}


def test_post_report_returns_cards_and_charts(
    client: TestClient, classified_sample: Path, cfg: config.Settings
) -> None:
    response = client.post("/v1/report", files={"file": ("sample.csv", classified_sample.read_bytes(), "text/csv")})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = report_content(classified_sample, cfg, ReportOptions(progress=False))
    assert body["rows"] == 10
    assert body["cards"] == [{"value": c.value, "label": c.caption} for c in expected.cards]
    assert [c["name"] for c in body["charts"]] == list(expected.charts)
    for chart in body["charts"]:
        assert base64.b64decode(chart["png"]) == expected.charts[chart["name"]].png
        assert chart["alt"] == expected.charts[chart["name"]].alt


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the uploaded file 'in.csv' is empty"),
        (b"source,log_message\nA,hello\n", "missing column(s) ['target_label']"),
        (b"source,log_message,target_label,tier\n", "has a header but no rows"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "missing column(s)"),
        (b"\xff\xfe\x00l\x00o\x00g", "missing column(s) ['log_message', 'target_label']"),
    ],
)
def test_post_report_refuses_what_is_not_a_classified_csv(client: TestClient, content: bytes, message: str) -> None:
    response = client.post("/v1/report", files={"file": ("in.csv", content, "text/csv")})
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == 3 and body["details"] == []
    assert message in body["message"]
    # The server's temporary path is nobody's business; the caller knows the file by its name.
    assert "logclass-report-" not in body["message"] and "/tmp" not in body["message"]


def test_post_report_without_a_file_names_the_field(client: TestClient) -> None:
    response = client.post("/v1/report", data={"other": "x"})
    assert response.status_code == 400
    assert response.json() == {
        "code": 3,
        "message": "no file: send the classified CSV as multipart/form-data field `file`",
        "details": [],
    }


def test_post_report_without_matplotlib_is_501_with_the_fix(tmp_path: Path) -> None:
    """matplotlib really absent from the process (its import fails), as on a host without the
    report extra."""
    script = """
import sys
sys.modules["matplotlib"] = None  # `import matplotlib` now raises ImportError
from fastapi import FastAPI
from fastapi.testclient import TestClient
from logclass import config
from logclass.http.console import console_router
app = FastAPI()
app.include_router(console_router(config.load()))
csv = b"source,log_message,target_label,tier,confidence,error\\nA,hi,X,regex,1.0,\\n"
r = TestClient(app).post("/v1/report", files={"file": ("a.csv", csv, "text/csv")})
print(r.status_code, r.text)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    status, _, text = done.stdout.strip().partition(" ")
    assert status == "501"
    body = json.loads(text)
    assert body["code"] == 12
    assert "pip install 'logclass[report]'" in body["message"]


def test_page_and_files_are_served_with_types_cache_and_csp(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    csp = page.headers["content-security-policy"]
    assert csp == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in csp and "img-src 'self' data: blob:" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "http" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    # Unchanged: revalidated by ETag, not sent again.
    again = client.get("/", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    for name, kind in [("console.js", "text/javascript"), ("console.css", "text/css"), ("icon.svg", "image/svg+xml")]:
        asset = client.get(f"/console/{name}")
        assert asset.status_code == 200
        assert asset.headers["content-type"].split(";")[0] == kind
        assert asset.content == (CONSOLE_DIR / name).read_bytes()
    missing = client.get("/console/nope.js")
    assert missing.status_code == 404
    assert missing.json()["code"] == 5
    assert client.get("/console/..%2Fconsole.py").status_code == 404


def test_openapi_has_the_report_call_and_not_the_page(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) == {"/v1/report"}
    call = schema["paths"]["/v1/report"]["post"]
    assert call["summary"] == "Charts and cards of a classified CSV"
    assert "POST /classify" in call["description"]
    assert {"200", "400", "501"} <= set(call["responses"])


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.script_text = ""
        self.in_script = False
        self.handlers: list[str] = []
        self.urls: list[str] = []
        self.styles: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.handlers += [f"{tag} {name}" for name in found if name.startswith("on")]
        self.urls += [value for name, value in attrs if name in ("src", "href", "action") and value]
        if "style" in found or tag == "style":
            self.styles.append(tag)
        if tag == "script":
            self.scripts.append(found)
            self.in_script = True

    def handle_endtag(self, tag: str) -> None:
        self.in_script = self.in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self.in_script:
            self.script_text += data.strip()


def test_page_has_no_inline_code_and_no_external_assets() -> None:
    """What the CSP would block anyway, checked at the source so it never ships."""
    markup = _Markup()
    markup.feed((CONSOLE_DIR / "index.html").read_text(encoding="utf-8"))
    assert markup.scripts == [{"type": "module", "src": "console/console.js"}]
    assert markup.script_text == "" and markup.handlers == [] and markup.styles == []
    # Relative to the page: no scheme, no other host, and a proxy's path prefix is kept.
    assert all(not re.match(r"[a-z][a-z0-9+.-]*:|/", url) for url in markup.urls), markup.urls
    script = (CONSOLE_DIR / "console.js").read_text(encoding="utf-8")
    # Data reaches the page as text only.
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", script)
    assert not re.search(r"url\(|@import|https?://", (CONSOLE_DIR / "console.css").read_text(encoding="utf-8"))


# ---- In a browser, against a real server ------------------------------------------------------


@dataclass(frozen=True)
class Sidecar:
    base: str

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.base + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)

    def classify_csv(self, data: bytes) -> str:
        response = httpx.post(
            self.base + "/classify?template_id=true",
            files={"file": ("in.csv", data, "text/csv")},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        return response.text


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def sidecar() -> Iterator[Sidecar]:
    """`logclass serve` with gRPC and HTTP on 127.0.0.1 and a bearer token required."""
    grpc_address, http_address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {"LOGCLASS_SERVER__AUTH__TOKEN": TOKEN, "LOGCLASS_SERVER__METRICS_LISTEN": "null"}
    proc = start_server(grpc_address, env, flags=["--http-listen", http_address])
    base = f"http://{http_address}"
    try:
        wait_until(lambda: _ready(base), timeout=60, message=f"{base}/readyz never answered 200")
        yield Sidecar(base)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert TOKEN not in err


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chromium]:
    binary = require_chromium()
    chromium = Chromium(binary, tmp_path / "profile", tmp_path / "chromium.log")
    try:
        yield chromium
    finally:
        chromium.close()


def _table(tab: Tab, selector: str) -> list[list[str]]:
    rows = f"[...document.querySelectorAll({json.dumps(selector + ' tbody tr')})]"
    return list(tab.evaluate(f"{rows}.map(r => [...r.cells].map(c => c.textContent))"))


def _unexpected(errors: list[str], expected: list[tuple[str, str]]) -> list[str]:
    """The errors left once the HTTP statuses the test caused on purpose are taken out: Chromium
    logs every 4xx response, even one the page handles."""
    return [e for e in errors if not any(f"status of {status}" in e and path in e for status, path in expected)]


def _only_local(requests: list[str], base: str) -> list[str]:
    return [url for url in requests if not url.startswith((base + "/", "data:image/png;base64,", "blob:" + base))]


def _sample_with_hostile_line(tmp_path: Path) -> Path:
    path = tmp_path / "sample.csv"
    hostile = HOSTILE.replace('"', '""')
    path.write_text(
        SEED_TEST_CSV.read_text(encoding="utf-8") + f'ModernCRM,"{hostile}"\n' + 'LegacyCRM,"two\nlines, one field"\n',
        encoding="utf-8",
    )
    return path


def test_console_classifies_reports_and_watches(sidecar: Sidecar, browser: Chromium, tmp_path: Path) -> None:
    tab = Tab(browser)
    tab.navigate(sidecar.base + "/")

    # A token is required: the page asks for one, refuses a wrong one, then works with the right one.
    tab.wait_for("!document.getElementById('auth-form').hidden")
    tab.fill("#token", "wrong")
    tab.click("#token-submit")
    tab.wait_for("document.getElementById('auth-message').textContent.includes('refused')")
    tab.wait_for("!document.getElementById('auth-form').hidden")
    tab.fill("#token", TOKEN)
    tab.click("#token-submit")
    model = sidecar.get("/v1/model").json()
    tab.wait_for(f"document.getElementById('model-version').textContent === {json.dumps(model['modelVersion'])}")
    assert tab.evaluate("sessionStorage.getItem('logclass.console.token')") == TOKEN
    chips = tab.evaluate("[...document.querySelectorAll('#model-labels .chip')].map(c => c.textContent)")
    assert chips == model["labels"]
    assert tab.evaluate("document.getElementById('auth-form').hidden")

    # An input the API refuses: its message is shown in the page, and nothing else breaks.
    bad = tmp_path / "bad.csv"
    bad.write_text("host,text\na,b\n", encoding="utf-8")
    tab.set_files("#csv-file", [bad])
    tab.click("#classify-csv")
    shown = tab.wait_for("!document.getElementById('error').hidden && document.getElementById('error').textContent")
    assert "log_message" in shown and "(code 3)" in shown

    # The seed sample plus a hostile line and a quoted multi-line field, through the file input.
    sample = _sample_with_hostile_line(tmp_path)
    expected = list(csv.reader(io.StringIO(sidecar.classify_csv(sample.read_bytes()))))
    tab.set_files("#csv-file", [sample])
    tab.click("#classify-csv")
    tab.wait_for("document.querySelectorAll('#results tbody tr').length === 12")
    tab.wait_for(
        "(imgs => imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0))"
        "([...document.querySelectorAll('#charts img')])"
    )
    assert tab.evaluate("document.getElementById('error').hidden")
    header, rows = expected[0], expected[1:]
    assert header == [*CLASSIFIED_COLUMNS[:2], *CLASSIFIED_COLUMNS[2:], "template_id"]
    shown_rows = _table(tab, "#results")
    at = {name: header.index(name) for name in header}
    order = ["source", "log_message", "target_label", "tier", "confidence", "template_id", "error"]
    assert shown_rows == [[r[at[name]] for name in order] for r in rows]
    by_message = {r[1]: r[2] for r in shown_rows}
    assert by_message["User 12345 logged in."] == "User Action"
    assert by_message["IP 192.168.133.114 blocked due to potential attack"] == "Security Alert"
    assert "two\nlines, one field" in by_message

    # The hostile line is text in a cell: no element made of it, no script run.
    assert HOSTILE in by_message
    assert tab.evaluate("document.querySelectorAll('#results img, #results script, #results b').length") == 0
    assert tab.evaluate("typeof window.pwned") == "undefined"

    # The report's cards and charts, as `logclass report` draws them.
    cards = tab.evaluate(
        "[...document.querySelectorAll('#cards .card')].map(c => [...c.children].map(e => e.textContent))"
    )
    assert cards[0] == ["12", "records"]
    images = tab.evaluate(
        "[...document.querySelectorAll('#charts figure')].map(f => ({id: f.id, alt: f.querySelector('img').alt,"
        " width: f.querySelector('img').naturalWidth, height: f.querySelector('img').naturalHeight}))"
    )
    assert {i["id"] for i in images} == {f"chart-{name}" for name in SAMPLE_CHARTS}
    for image in images:
        assert image["alt"] and image["width"] > 400 and image["height"] > 150, image

    # Download CSV is the whole result, as the server sent it.
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    tab.allow_downloads(downloads)
    tab.click("#download")
    target = downloads / "sample.classified.csv"
    wait_until(target.exists, timeout=30, message=f"no download in {downloads}: {list(downloads.iterdir())}")
    assert list(csv.reader(io.StringIO(target.read_text(encoding="utf-8")))) == expected

    (artifacts_dir() / "console.png").write_bytes(tab.screenshot())

    # Two pasted lines, from another source.
    tab.fill("#lines", "User 12345 logged in.\nIP 192.168.133.114 blocked due to potential attack\n")
    tab.fill("#source", "billing")
    tab.click("#classify-lines")
    tab.wait_for("document.querySelectorAll('#results tbody tr').length === 2")
    pasted = _table(tab, "#results")
    assert [r[:4] for r in pasted] == [
        ["billing", "User 12345 logged in.", "User Action", pasted[0][3]],
        ["billing", "IP 192.168.133.114 blocked due to potential attack", "Security Alert", pasted[1][3]],
    ]
    assert all(r[3] and r[5] and r[6] == "" for r in pasted)
    assert tab.evaluate("document.getElementById('report-panel').hidden")

    # The live view settles on the server's counters once nothing more is classified; the
    # interval after that has no records and no cache lookups.
    stats = sidecar.get("/v1/stats").json()
    totals: dict[str, float] = {}
    for record in stats["records"]:
        totals[record["tier"]] = totals.get(record["tier"], 0) + record["count"]
    hits, misses = stats["cache"]["exact"] + stats["cache"]["template"], stats["cache"]["miss"]

    def idle() -> bool:
        shown = {r[0]: (r[1], float(r[3].replace(",", ""))) for r in _table(tab, "#live-tiers")}
        recent = tab.evaluate("document.getElementById('cache-recent').textContent")
        return shown == {tier: ("0.00", n) for tier, n in totals.items()} and recent == "no lookups"

    wait_until(idle, timeout=30, message=lambda: f"live view: {_table(tab, '#live-tiers')}", interval=0.2)
    assert sidecar.get("/v1/stats").json()["records"] == stats["records"]  # nothing ran meanwhile
    lifetime = tab.evaluate("document.getElementById('cache-lifetime').textContent")
    assert lifetime == f"{100 * hits / (hits + misses):.1f}%"
    assert {r[0] for r in _table(tab, "#live-lanes")} == {lane["lane"] for lane in stats["lanes"]}
    sparklines = tab.evaluate("document.querySelectorAll('#live-tiers svg polyline').length")
    assert sparklines == len(totals)
    (artifacts_dir() / "console-pasted.png").write_bytes(tab.screenshot())

    expected_statuses = [("401", "/v1/model"), ("401", "/v1/stats"), ("400", "/classify")]
    assert _unexpected(tab.errors(), expected_statuses) == []
    assert _only_local(tab.requests(), sidecar.base) == []
    assert tab.evaluate("typeof window.pwned") == "undefined"


def test_live_rates_are_counter_deltas_per_second(sidecar: Sidecar, browser: Chromium) -> None:
    """The live view's arithmetic on two made-up /v1/stats answers: rates from counter deltas
    over the server's own uptime, and a restart (counters back at zero) starts over."""
    before = {
        "uptimeSeconds": 10.0,
        "records": [{"tier": "regex", "label": "A", "count": 5}, {"tier": "embedding", "label": "A", "count": 1}],
        "cache": {"exact": 2, "template": 1, "miss": 3},
    }
    after = {
        "uptimeSeconds": 12.0,
        "records": [
            {"tier": "regex", "label": "A", "count": 9},
            {"tier": "regex", "label": "B", "count": 2},
            {"tier": "embedding", "label": "A", "count": 1},
            {"tier": "llm", "label": "B", "count": 4},
        ],
        "cache": {"exact": 6, "template": 1, "miss": 4},
    }
    restarted = {"uptimeSeconds": 1.0, "records": [], "cache": {"exact": 0, "template": 0, "miss": 0}}
    tab = Tab(browser)
    tab.navigate(sidecar.base + "/")
    rates = (
        "import('/console/console.js').then(m => (r => r && ({tiers: Object.fromEntries(r.tiers),"
        " labels: Object.fromEntries(r.labels), hits: r.hits, misses: r.misses}))"
        "(m.rates(m.sample({0}), m.sample({1}))))"
    )
    assert tab.evaluate(rates.replace("{0}", json.dumps(before)).replace("{1}", json.dumps(after))) == {
        "tiers": {"regex": 3.0, "embedding": 0.0, "llm": 2.0},
        "labels": {"A": 2.0, "B": 3.0},
        "hits": 4,
        "misses": 1,
    }
    assert tab.evaluate(rates.replace("{0}", json.dumps(after)).replace("{1}", json.dumps(restarted))) is None


def test_csv_parser_reads_what_python_writes(sidecar: Sidecar, browser: Chromium) -> None:
    rows = [
        ["source", "log_message", "target_label"],
        ["a", 'say "hi", then\r\nleave', ""],
        ["", "trailing, comma,", '"'],
        ["  spaced  ", "ünïcödé ✓", "x\ny"],
    ]
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    tab = Tab(browser)
    tab.navigate(sidecar.base + "/")
    module = "import('/console/console.js')"
    assert tab.evaluate(f"{module}.then(m => m.parseCsv({json.dumps(out.getvalue())}))") == rows
    assert tab.evaluate(f"{module}.then(m => m.parseCsv('a,b\\n\\n1,2'))") == [["a", "b"], ["1", "2"]]
    written = tab.evaluate(f"{module}.then(m => m.toCsv({json.dumps(rows[0])}, {json.dumps(rows[1:])}))")
    assert list(csv.reader(io.StringIO(written))) == rows


def test_api_docs_render_without_external_requests(sidecar: Sidecar, browser: Chromium) -> None:
    tab = Tab(browser)
    tab.navigate(sidecar.base + "/docs")
    tab.wait_for("document.querySelectorAll('.swagger-ui .opblock').length > 0")
    paths = tab.evaluate("[...document.querySelectorAll('.swagger-ui .opblock-summary-path')].map(p => p.textContent)")
    assert "/v1/report" in [p.replace("\u200b", "") for p in paths]
    (artifacts_dir() / "docs.png").write_bytes(tab.screenshot())
    assert tab.errors() == []
    assert _only_local(tab.requests(), sidecar.base) == []
