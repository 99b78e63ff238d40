"""The Fluentd plugins (plugins/fluentd: the filter and the output): their Ruby tests, the gem, and a
real Fluentd end to end.

The Ruby tests need Debian's ruby, ruby-grpc, ruby-grpc-tools and ruby-test-unit (`make ruby-deps`).
Without them these tests skip and say why, except under REQUIRE_RUBY_TESTS=1 (`make test`
installs them first), where a missing piece is a failure. The adapter tests and the end-to-end
test also need a Fluentd source tree (FLUENTD_LIB; see plugins/fluentd/README.md) and skip
without one: Fluentd is not packaged for Debian bookworm.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, wait_until

PLUGIN = ROOT / "plugins" / "fluentd"
# The test cases that need a Fluentd tree (FLUENTD_LIB), as test-unit's --testcase regexp.
ADAPTER_TESTS = r"/\A(FilterLogclassTest|OutLogclassTest)\z/"
_SUMMARY = re.compile(r"(\d+) tests, (\d+) assertions, (\d+) failures, (\d+) errors, (\d+) pendings, (\d+) omissions")


def _ruby_missing() -> str | None:
    ruby = shutil.which("ruby")
    if ruby is None:
        return "ruby is not installed (make ruby-deps: apt-get install ruby ruby-grpc ruby-grpc-tools ruby-test-unit)"
    check = subprocess.run(
        [ruby, "-e", 'require "grpc"; require "google/protobuf"; require "test/unit/version"'],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["?"])[-1]
        return f"Ruby lacks grpc, google-protobuf or test-unit ({last}): make ruby-deps"
    if shutil.which("grpc_tools_ruby_protoc") is None:
        return "grpc_tools_ruby_protoc is missing (Debian ruby-grpc-tools): make ruby-deps"
    return None


@pytest.fixture(scope="module")
def ruby() -> str:
    reason = _ruby_missing()
    if reason is not None:
        if os.environ.get("REQUIRE_RUBY_TESTS") == "1":
            pytest.fail(f"{reason} (REQUIRE_RUBY_TESTS=1: make test installs them, so these tests must run)")
        pytest.skip(reason)
    return str(shutil.which("ruby"))


def _fluentd_lib() -> Path | None:
    value = os.environ.get("FLUENTD_LIB")
    return Path(value) if value else None


def _run_ruby_tests(ruby: str, *selection: str) -> tuple[int, int]:
    """Runs plugins/fluentd/test/run.rb; returns (tests run, omitted). Fails with the output on any failure."""
    env = {**os.environ, "SIDECAR_PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}
    # Its own session: on a timeout the whole tree goes, the sidecars the Ruby tests started included.
    proc = subprocess.Popen(
        [ruby, "-Ilib", "-Itest", "test/run.rb", *selection],
        cwd=PLUGIN,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"the Ruby tests ran past 900 s:\n{stdout}{stderr}")
    output = stdout + stderr
    summary = _SUMMARY.search(output)
    # test-unit exits 0 and prints nothing for some bad selections: no summary is a failure too.
    assert proc.returncode == 0 and summary is not None, output
    tests, _, failures, errors, _, omissions = map(int, summary.groups())
    assert failures == errors == 0 and tests > omissions, output
    return tests, omissions


def test_ruby_core_suite(ruby: str) -> None:
    """Batching, merge, fail-open, circuit breaker, TLS/token, stubs: against real sidecars."""
    tests, omissions = _run_ruby_tests(ruby, f"--ignore-testcase={ADAPTER_TESTS}")
    assert tests >= 60 and omissions == 0


def test_fluentd_adapter_with_fluentds_test_driver(ruby: str) -> None:
    lib = _fluentd_lib()
    if lib is None:
        pytest.skip(
            "no Fluentd source tree: set FLUENTD_LIB=/path/to/fluentd/lib (v1.16-1.18) to run the adapter "
            "tests (Fluent::Test::Driver::Filter and ::Output); see plugins/fluentd/README.md"
        )
    tests, omissions = _run_ruby_tests(ruby, f"--testcase={ADAPTER_TESTS}")
    assert tests >= 23 and omissions == 0


def test_gem_builds_with_every_library_file(ruby: str, tmp_path: Path) -> None:
    gem = tmp_path / "fluent-plugin-logclass.gem"
    result = subprocess.run(
        ["gem", "build", "fluent-plugin-logclass.gemspec", "--output", str(gem)],
        cwd=PLUGIN,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with tarfile.open(gem) as outer:
        data = outer.extractfile("data.tar.gz")
        assert data is not None
        with tarfile.open(fileobj=data, mode="r:gz") as inner:
            packed = set(inner.getnames())
    expected = {str(p.relative_to(PLUGIN)) for p in (PLUGIN / "lib").rglob("*.rb")}
    assert expected <= packed, expected - packed
    assert {
        "README.md",
        "lib/fluent/plugin/filter_logclass.rb",
        "lib/fluent/plugin/out_logclass.rb",
        "lib/logclass/api/classifier_pb.rb",
    } <= packed
    assert not any(name.startswith("test/") for name in packed)


# --- A real Fluentd, fed by Python's fluent-logger ---------------------------------------------


def _fluentd_missing(ruby: str) -> str | None:
    lib = _fluentd_lib()
    if lib is None or not (lib.parent / "bin" / "fluentd").is_file():
        return "no Fluentd source tree: set FLUENTD_LIB=/path/to/fluentd/lib (v1.16-1.18; bin/fluentd next to it)"
    check = subprocess.run(
        [
            ruby,
            "-e",
            'require "serverengine"; exit(Gem::Version.new(ServerEngine::VERSION) >= Gem::Version.new("2.3.2"))',
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check.returncode != 0:
        return "Fluentd needs serverengine >= 2.3.2 (Debian has 2.2.2): put its lib on RUBYLIB"
    return None


def _fluentd_command(ruby: str, *args: str) -> list[str]:
    lib = _fluentd_lib()
    assert lib is not None
    return [ruby, str(lib.parent / "bin" / "fluentd"), *args, "-p", str(PLUGIN / "lib" / "fluent" / "plugin")]


def _dry_run(ruby: str, tmp_path: Path, conf_text: str) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "fluent.conf"
    conf.write_text(conf_text)
    return subprocess.run(
        _fluentd_command(ruby, "--dry-run", "-c", str(conf)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _readme_block(after: str) -> str:
    """The first ``` block of plugins/fluentd/README.md after the line `after`."""
    readme = (PLUGIN / "README.md").read_text()
    return readme.split(after + "\n")[1].split("```")[1]


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("## A complete `fluent.conf`", ['source_key "service"']),
        (
            "### `fluent.conf` with the output",
            ['add_tag_prefix "classified"', "hold_timeout 30s", "<match classified.**>"],
        ),
    ],
    ids=["filter", "output"],
)
def test_readme_fluent_conf_passes_fluentds_dry_run(
    ruby: str, tmp_path: Path, heading: str, expected: list[str]
) -> None:
    reason = _fluentd_missing(ruby)
    if reason is not None:
        pytest.skip(reason)
    result = _dry_run(ruby, tmp_path, _readme_block(heading))
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "finished dry run mode" in output, output
    assert "@type logclass" in output, output
    for text in expected:
        assert text in output, output


def test_fluentd_refuses_an_output_that_catches_its_own_records(ruby: str, tmp_path: Path) -> None:
    """<match **> re-emitting as classified.* loops, unless an earlier <match> takes classified.** first."""
    reason = _fluentd_missing(ruby)
    if reason is not None:
        pytest.skip(reason)
    output = """
<match **>
  @type logclass
  add_tag_prefix classified
  <buffer>
    @type memory
  </buffer>
</match>
"""
    looping = _dry_run(ruby, tmp_path, output)
    text = looping.stdout + looping.stderr
    assert looping.returncode != 0, text
    assert "<match **> would catch its own records again" in text, text
    assert "re-emitted as classified." in text, text

    safe = _dry_run(ruby, tmp_path, "<match classified.**>\n  @type null\n</match>\n" + output)
    text = safe.stdout + safe.stderr
    assert safe.returncode == 0 and "finished dry run mode" in text, text


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float, log: Path) -> None:
    wait_until(predicate, timeout, lambda: f"timed out waiting for {what}; fluentd log:\n{log.read_text()}", 0.2)


def _output(out_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for path in sorted(out_dir.glob("*.log")) for line in path.read_text().splitlines()]


def _needs_real_fluentd(ruby: str) -> None:
    reason = _fluentd_missing(ruby)
    if reason is not None:
        pytest.skip(reason)
    try:
        import fluent.sender  # noqa: F401
    except ImportError:
        pytest.skip("Python's fluent-logger is not installed (pip install fluent-logger)")


def _start_fluentd(ruby: str, workdir: Path, conf_text: str, name: str) -> tuple[subprocess.Popen[bytes], Path]:
    """A real fluentd (supervisor and worker) in its own session, once its worker runs; and its log."""
    conf, log = workdir / f"{name}.conf", workdir / f"{name}.log"
    conf.write_text(conf_text)
    with log.open("w") as sink:
        proc = subprocess.Popen(
            _fluentd_command(ruby, "-c", str(conf)),
            cwd=workdir,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for(lambda: "fluentd worker is now running" in log.read_text(), "fluentd to start", 120, log)
    except BaseException:
        _stop_fluentd(proc, signal.SIGKILL)
        raise
    return proc, log


def _stop_fluentd(proc: subprocess.Popen[bytes], how: signal.Signals = signal.SIGTERM) -> None:
    """SIGTERM: graceful, buffers flushed as configured; SIGKILL: a crash, the whole session at once."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, how)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def fluentd(ruby: str, tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[str], Path, Path]]:
    """A sidecar, then fluentd: in_forward -> filter logclass -> out_file; yields (forward port,
    sidecar process, out dir, log). The sidecar is up first: a filter that starts before it
    retries the channel with backoff, and records sent in that window would fall back."""
    from tests.conftest import start_server

    _needs_real_fluentd(ruby)
    sidecar = f"127.0.0.1:{free_port()}"
    port, out_dir = free_port(), tmp_path / "out"
    conf = f"""
<source>
  @type forward
  bind 127.0.0.1
  port {port}
</source>
<filter app.**>
  @type logclass
  endpoint {sidecar}
  source_key service
  timeout 2s
  circuit_failures 2
  circuit_cooldown 30s
</filter>
<match app.**>
  @type file
  path {out_dir}/labelled
  append true
  <format>
    @type json
  </format>
  <buffer>
    @type memory
    flush_mode interval
    flush_interval 0.5s
  </buffer>
</match>
"""
    server = start_server(sidecar, {"LOGCLASS_SERVER__METRICS_LISTEN": "null"})
    try:
        proc, log = _start_fluentd(ruby, tmp_path, conf, "fluentd")
        try:
            yield port, server, out_dir, log
        finally:
            _stop_fluentd(proc)  # graceful: flushes out_file's buffer
    finally:
        server.kill()
        server.wait(timeout=30)


def test_real_fluentd_end_to_end(fluentd: tuple[int, subprocess.Popen[str], Path, Path]) -> None:
    """Records sent with fluent-logger come out of out_file labelled; with the sidecar killed, still all out."""
    from fluent import sender

    from tests.conftest import SEED_ROWS

    port, server, out_dir, log = fluentd
    emitter = sender.FluentSender("app", host="127.0.0.1", port=port)
    for i, (source, message, _) in enumerate(SEED_ROWS):
        assert emitter.emit("seed", {"phase": "up", "seq": i, "service": source, "message": message})
    _wait_for(lambda: len(_output(out_dir)) >= len(SEED_ROWS), "the labelled records", 60, log)
    up = _output(out_dir)
    assert [r["seq"] for r in up] == list(range(len(SEED_ROWS)))
    assert [r["log_label"] for r in up] == [label for _, _, label in SEED_ROWS]
    assert all("log_label_fallback" not in r for r in up)
    server.kill()
    server.wait(timeout=30)

    for i, (source, message, _) in enumerate(SEED_ROWS):
        assert emitter.emit("seed", {"phase": "down", "seq": i, "service": source, "message": message})
    emitter.close()
    total = 2 * len(SEED_ROWS)
    _wait_for(lambda: len(_output(out_dir)) >= total, "the records sent while the sidecar is down", 60, log)
    down = [r for r in _output(out_dir) if r["phase"] == "down"]
    assert [r["seq"] for r in down] == list(range(len(SEED_ROWS))), "none lost, in order"
    assert {r["log_label"] for r in down} == {"Unclassified"}  # the sidecar's label, learnt at start-up
    assert {r["log_label_fallback"] for r in down} <= {"unavailable", "circuit_open"}
    assert "circuit_open" in {r["log_label_fallback"] for r in down}
    assert "Classify to 127.0.0.1" in log.read_text() and "failed (unavailable" in log.read_text()


def test_real_fluentd_output_keeps_a_held_chunk_across_a_crash(ruby: str, tmp_path: Path) -> None:
    """in_forward -> output logclass (file buffer) -> classified.** -> out_file. Fluentd SIGKILLed while
    the output holds a chunk (the sidecar is stopped, so its call hangs): nothing of that chunk is out;
    restarted, the chunk is found in the buffer and its records come out with their real labels."""
    from fluent import sender

    from tests.conftest import SEED_ROWS, start_server

    _needs_real_fluentd(ruby)
    sidecar = f"127.0.0.1:{free_port()}"
    port, out_dir, buffer_dir = free_port(), tmp_path / "out", tmp_path / "buffer"
    conf = f"""
<source>
  @type forward
  bind 127.0.0.1
  port {port}
</source>
<match classified.**>
  @type file
  path {out_dir}/labelled
  append true
  <format>
    @type json
  </format>
  <buffer>
    @type memory
    flush_mode interval
    flush_interval 0.5s
  </buffer>
</match>
<match app.**>
  @type logclass
  endpoint {sidecar}
  source_key service
  add_tag_prefix classified
  hold_timeout 120s
  <buffer>
    path {buffer_dir}
    flush_interval 0.5s
  </buffer>
</match>
"""
    server = start_server(sidecar, {"LOGCLASS_SERVER__METRICS_LISTEN": "null"})
    proc = None
    try:
        proc, log = _start_fluentd(ruby, tmp_path, conf, "before")
        emitter = sender.FluentSender("app", host="127.0.0.1", port=port)
        for i, (source, message, _) in enumerate(SEED_ROWS):
            assert emitter.emit("seed", {"phase": "up", "seq": i, "service": source, "message": message})
        _wait_for(lambda: len(_output(out_dir)) >= len(SEED_ROWS), "the labelled records", 60, log)
        up = _output(out_dir)
        assert [r["seq"] for r in up] == list(range(len(SEED_ROWS)))
        assert [r["log_label"] for r in up] == [label for _, _, label in SEED_ROWS]

        server.send_signal(signal.SIGSTOP)  # hung: the next Classify call waits for its deadline
        for i, (source, message, _) in enumerate(SEED_ROWS):
            assert emitter.emit("seed", {"phase": "held", "seq": i, "service": source, "message": message})
        emitter.close()
        # The chunk is taken for writing (Fluentd renames it from buffer.b* to buffer.q*), then held.
        _wait_for(lambda: any(buffer_dir.glob("buffer.q*.log")), "the chunk to be written", 30, log)
        time.sleep(2)
        _stop_fluentd(proc, signal.SIGKILL)
        assert [r for r in _output(out_dir) if r["phase"] == "held"] == [], "nothing of the held chunk is out"
        assert any(buffer_dir.glob("buffer.q*.log")), "the chunk is still in the buffer"

        server.send_signal(signal.SIGCONT)
        proc, log = _start_fluentd(ruby, tmp_path, conf, "after")
        _wait_for(lambda: len(_output(out_dir)) >= 2 * len(SEED_ROWS), "the held records after the restart", 60, log)
        held = [r for r in _output(out_dir) if r["phase"] == "held"]
        assert [r["seq"] for r in held] == list(range(len(SEED_ROWS)))
        assert [r["log_label"] for r in held] == [label for _, _, label in SEED_ROWS], "labelled, not fallen back"
        assert all("log_label_fallback" not in r for r in held)
        _wait_for(lambda: not any(buffer_dir.glob("buffer.*.log")), "the chunk to be committed", 30, log)
    finally:
        if proc is not None:
            _stop_fluentd(proc)
        server.send_signal(signal.SIGCONT)
        server.kill()
        server.wait(timeout=30)
