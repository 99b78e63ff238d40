"""Regenerates the Python gRPC stubs in sidecar/api/ from proto/ with grpcio-tools: ``make proto``.

A build-time tool of the repository, not part of the installed package: the stubs it writes are.
protoc writes absolute imports (``from logclass.v1 import ...``); they are rewritten to live
under ``logclass.api`` so the stubs import without touching ``sys.path``.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "sidecar" / "api"
PROTOS = ["logclass/v1/classifier.proto"]
_IMPORT = re.compile(r"^from logclass\.v1 import ", re.MULTILINE)


def generate(out_dir: Path = OUT_DIR) -> list[Path]:
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-I{PROTO_DIR}", f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}"]
        if protoc.main([*args, *PROTOS]) != 0:
            raise RuntimeError("protoc failed; see the message above")
        written = []
        for produced in sorted(Path(tmp).rglob("*.py*")):
            relative = produced.relative_to(tmp)
            target = out_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            text = _IMPORT.sub("from logclass.api.logclass.v1 import ", produced.read_text())
            target.write_text(text)
            written.append(target)
        for package in {p.parent for p in written}:
            for folder in [package, *package.parents]:
                if folder == out_dir.parent:
                    break
                (folder / "__init__.py").touch()
    return written


if __name__ == "__main__":
    for path in generate():
        print(path.relative_to(ROOT))
    sys.exit(0)
