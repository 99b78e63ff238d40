"""`python benchmarks/cli_split.py ARGS` runs `logclass ARGS` as `python -m logclass.cli ARGS` does,
and prints on stderr, as one ``SPLIT {json}`` line, when its phases ended (wall-clock seconds
since the epoch): interpreter ready, imports done, model load (``build_engine``: bundle, encoder,
probe) started and ended, work done. bench_encoder.py passes the time it spawned the process in
``BENCH_SPAWNED_AT`` and times the exit, so the whole process is split without a profiler's cost.
"""

from __future__ import annotations

import time

READY = time.time()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

# Run as a script, the folder of this file is on sys.path, not the project root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import logclass.cli  # noqa: E402
from logclass.engine import pipeline  # noqa: E402

IMPORTED = time.time()
stamps: dict[str, float] = {"spawned": float(os.environ.get("BENCH_SPAWNED_AT", READY)), "ready": READY}
stamps["imported"] = IMPORTED
_build_engine = pipeline.build_engine


def _timed_build_engine(*args: Any, **kwargs: Any) -> Any:
    stamps["load_start"] = time.time()
    engine = _build_engine(*args, **kwargs)
    stamps["load_end"] = time.time()
    return engine


# The CLI imports build_engine from the module when it runs a command, so it gets this one.
pipeline.build_engine = _timed_build_engine


def main() -> int:
    code = logclass.cli.main(sys.argv[1:])
    stamps["done"] = time.time()
    print("SPLIT " + json.dumps(stamps), file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
