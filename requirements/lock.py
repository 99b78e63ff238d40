"""Regenerates the dependency locks in requirements/ with pip-tools' ``pip-compile``: ``make lock``.

A build-time tool of the repository, like ``proto/generate.py``; nothing here is installed.

- ``project.txt`` locks what ``make install`` puts in ``.venv``: ``pyproject.toml`` with the extras
  ``dev``, ``qwen`` and ``report``, plus ``project.in`` (the CPU torch build and pip itself).
- ``vllm.txt`` locks the vLLM server's venv (``deploy/vllm/install-cpu.sh``) from ``vllm.in``.

Both are used as pip *constraints* (``pip install -c``): they fix every version without
turning the library's own metadata into pins, which stays a set of compatible ranges.

Each lock records the SHA-256 of its inputs (the requirement tables of ``pyproject.toml``, the
``.in`` files, the compile options), so ``--check``, ``make lint`` and ``tests/test_lock.py`` tell
when an input changed and the lock was not regenerated. pip-compile keeps the versions a lock
already has where they still fit (``--upgrade`` moves everything to the newest that fits).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "requirements"
# pip and setuptools are locked too (``--allow-unsafe``): the installer and the build backend of
# the editable install are part of the tested set.
COMPILE_OPTIONS = (
    "--quiet",
    "--allow-unsafe",
    "--strip-extras",
    "--no-emit-index-url",
    "--no-emit-find-links",
    "--newline=LF",
)
DIGEST_LINE = re.compile(r"^# inputs-sha256: ([0-9a-f]{64})\b", re.MULTILINE)
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", re.MULTILINE)
# The project itself: a self-referencing extra (``qwen`` needs ``logclass[llamacpp]``) makes
# pip-compile write it as ``logclass @ file:///...``, a machine's path, which pip refuses in
# constraints. Its own requirements are in the lock already.
SELF_LINE = re.compile(r"^logclass @ file:.*\n(?:    #.*\n)*", re.MULTILINE)
# A local build label (``torch==2.13.0+cpu``) would refuse the image's CUDA variant of the same
# release; the public version admits both, and pip prefers the local CPU build where it lies.
LOCAL_LABEL = re.compile(r"^(torch==[^+\s]+)\+\S+", re.MULTILINE)


class LockError(Exception):
    """A lock cannot be made or read; the message names the fix."""


@dataclass(frozen=True)
class Lock:
    """One lock file and what it is compiled from."""

    output: Path
    sources: tuple[Path, ...]
    extras: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return os.path.relpath(self.output, ROOT)


PROJECT = Lock(HERE / "project.txt", (ROOT / "pyproject.toml", HERE / "project.in"), ("dev", "qwen", "report"))
VLLM = Lock(HERE / "vllm.txt", (HERE / "vllm.in",))
LOCKS = (PROJECT, VLLM)


def _requirement_tables(pyproject: Path) -> dict[str, object]:
    """What in ``pyproject.toml`` decides the lock: not the tool settings, which change often."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    project = data.get("project", {})
    return {
        "build-system.requires": data.get("build-system", {}).get("requires", []),
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
    }


def inputs_digest(lock: Lock) -> str:
    """SHA-256 of everything the lock is compiled from."""
    parts: dict[str, object] = {"options": [*COMPILE_OPTIONS, *(f"--extra={e}" for e in lock.extras)]}
    for source in lock.sources:
        key = source.name
        if source.suffix == ".toml":
            parts[key] = _requirement_tables(source)
        else:
            parts[key] = source.read_text(encoding="utf-8")
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def recorded_digest(lock: Lock) -> str | None:
    """The digest written into the lock when it was made; None if it has none or is missing."""
    if not lock.output.exists():
        return None
    match = DIGEST_LINE.search(lock.output.read_text(encoding="utf-8"))
    return match.group(1) if match else None


def pins(lock: Lock) -> dict[str, str]:
    """``{normalised name: version}`` of every package the lock fixes."""
    if not lock.output.exists():
        raise LockError(f"{lock.name} is missing: run `make lock`")
    text = lock.output.read_text(encoding="utf-8")
    return {normalise(name): version for name, version in PIN.findall(text)}


def normalise(name: str) -> str:
    """PEP 503's normal form, the one ``pip freeze`` and the lock both reduce to."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(python: str = sys.executable) -> dict[str, str]:
    """``{normalised name: version}`` of every distribution in the environment of ``python``."""
    code = "import importlib.metadata as m, json; print(json.dumps([[d.name, d.version] for d in m.distributions()]))"
    # -I: not the working directory, where an in-tree build's logclass.egg-info would count too.
    result = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, check=True)
    found: dict[str, str] = {}
    for name, version in json.loads(result.stdout):
        found.setdefault(normalise(name), version)
    return found


def mismatches(found: dict[str, str], locked: dict[str, str]) -> list[str]:
    """How an environment differs from a lock: the same as a non-empty ``pip freeze`` diff. The
    lock names public releases; a build may carry a local label (torch's ``+cpu``)."""
    wrong = [f"{n} {v} (locked {locked[n]})" for n, v in found.items() if n in locked and v.split("+")[0] != locked[n]]
    missing = [f"{n} missing (locked {v})" for n, v in locked.items() if n not in found]
    extra = [f"{n} {v} (not in the lock)" for n, v in found.items() if n not in locked]
    return sorted(wrong + missing + extra)


def stale(lock: Lock) -> str | None:
    """Why ``lock`` no longer matches its inputs, or None when it does."""
    recorded = recorded_digest(lock)
    if recorded is None:
        return f"{lock.name} is missing or has no inputs digest: run `make lock`"
    if recorded != inputs_digest(lock):
        sources = ", ".join(os.path.relpath(source, ROOT) for source in lock.sources)
        return f"{lock.name} is stale: its inputs ({sources}) changed since it was made; run `make lock`"
    return None


def _stamp(text: str, digest: str) -> str:
    """The lock as pip-compile wrote it, made portable, with the inputs' digest under the header."""
    text = SELF_LINE.sub("", text)
    text = LOCAL_LABEL.sub(r"\1", text)
    text = DIGEST_LINE.sub("", text)
    lines = text.splitlines(keepends=True)
    header = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    note = [f"# inputs-sha256: {digest} (requirements/lock.py: `make lock` rewrites this file)\n", "#\n"]
    return "".join([*lines[:header], *note, *lines[header:]])


def compile_lock(lock: Lock, upgrade: bool = False) -> None:
    """Runs pip-compile for ``lock`` (in this Python, whose pip configuration it uses)."""
    command = [sys.executable, "-m", "piptools", "compile", *COMPILE_OPTIONS]
    command += [f"--extra={extra}" for extra in lock.extras]
    command += ["--upgrade"] if upgrade else []
    command += [f"--output-file={lock.output.relative_to(ROOT)}"]
    command += [str(source.relative_to(ROOT)) for source in lock.sources]
    print(f"lock: {lock.name} from {', '.join(command[-len(lock.sources) :])} ...", flush=True)
    env = {**os.environ, "CUSTOM_COMPILE_COMMAND": "make lock"}
    # Reading the project's metadata builds it in the tree; that leftover is not the lock's.
    egg_info = ROOT / "logclass.egg-info"
    leftover = not egg_info.exists()
    try:
        subprocess.run(command, cwd=ROOT, env=env, check=True)
    except FileNotFoundError as error:
        raise LockError(f"{error}: run `make install` first (pip-tools is in the dev extra)") from error
    except subprocess.CalledProcessError as error:
        raise LockError(f"pip-compile failed for {lock.name} (exit {error.returncode}); see above") from error
    finally:
        if leftover:
            shutil.rmtree(egg_info, ignore_errors=True)
    lock.output.write_text(_stamp(lock.output.read_text(encoding="utf-8"), inputs_digest(lock)), encoding="utf-8")
    print(f"lock: {lock.name}: {len(pins(lock))} packages", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only say whether every lock matches its inputs")
    parser.add_argument("--upgrade", action="store_true", help="move every pin to the newest release that fits")
    args = parser.parse_args(argv)
    if args.check:
        problems = [reason for reason in map(stale, LOCKS) if reason]
        for reason in problems:
            print(reason, file=sys.stderr)
        if not problems:
            print(f"lock: {', '.join(lock.name for lock in LOCKS)} match their inputs")
        return 1 if problems else 0
    try:
        for lock in LOCKS:
            compile_lock(lock, upgrade=args.upgrade)
    except LockError as error:
        print(f"lock: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
