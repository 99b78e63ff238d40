"""Regenerates the Python gRPC stubs in sidecar/logclass/api/ from proto/ with grpcio-tools: ``make proto``,
and ``*_docs.json``, the proto's comments by full name, which document the HTTP API.

A build-time tool of the repository, not part of the installed package: the stubs it writes are.
protoc writes absolute imports (``from logclass.v1 import ...``); they are rewritten to live
under ``logclass.api`` so the stubs import without touching ``sys.path``.

The output depends on the generator's version (the stubs embed it), so only the locked
grpcio-tools (requirements/project.txt) may write them; the stubs say which one did (``made_by``).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "sidecar" / "logclass" / "api"
PROTOS = ["logclass/v1/classifier.proto", "logclass/v1/admin.proto"]
_IMPORT = re.compile(r"^from logclass\.v1 import ", re.MULTILINE)
LOCK = ROOT / "requirements" / "project.txt"
_GRPC_VERSION = re.compile(r"^GRPC_GENERATED_VERSION = '([^']+)'", re.MULTILINE)
_PROTOBUF_VERSION = re.compile(r"^# Protobuf Python Version: (\S+)", re.MULTILINE)


class GeneratorVersionError(RuntimeError):
    """The installed grpcio-tools is not the locked one; the message says which to install."""


@dataclass(frozen=True)
class MadeBy:
    """The generator versions the stubs embed: grpcio-tools, and the protobuf gencode of its protoc."""

    grpc: str
    protobuf: str

    def __str__(self) -> str:
        return f"grpcio-tools {self.grpc} (protobuf gencode {self.protobuf})"


def made_by(out_dir: Path = OUT_DIR) -> MadeBy:
    """Which generator wrote the stubs under ``out_dir``; every stub must name the same one."""
    grpc = {m for f in out_dir.rglob("*_pb2_grpc.py") for m in _GRPC_VERSION.findall(f.read_text())}
    protobuf = {m for f in out_dir.rglob("*_pb2.py") for m in _PROTOBUF_VERSION.findall(f.read_text())}
    if len(grpc) != 1 or len(protobuf) != 1:
        raise GeneratorVersionError(f"stubs under {out_dir} name generators {grpc or '-'} / {protobuf or '-'}")
    return MadeBy(grpc.pop(), protobuf.pop())


def locked_generator() -> str:
    """The grpcio-tools version of the lock, the one `make proto` must run."""
    match = re.search(r"^grpcio-tools==(\S+)", LOCK.read_text(encoding="utf-8"), re.MULTILINE)
    if not match:
        raise GeneratorVersionError(f"{LOCK} pins no grpcio-tools: run `make lock`")
    return match.group(1)


def check_generator(wanted: str) -> None:
    installed = metadata.version("grpcio-tools")
    if installed != wanted:
        raise GeneratorVersionError(
            f"grpcio-tools {installed} is installed, but the stubs are made with {wanted}: "
            f"`pip install grpcio-tools=={wanted}` (`make install` installs the locked set)"
        )


# Paths into a FileDescriptorProto (descriptor.proto's field numbers): message_type, field,
# enum_type, value. Their leading comments become the HTTP API's OpenAPI descriptions.
_MESSAGE, _FIELD, _ENUM, _VALUE = 4, 2, 5, 2


def _comments(descriptor_set: Path, proto: str) -> dict[str, str]:
    """``{full name: leading comment}`` of every message, field, enum and enum value of ``proto``."""
    from google.protobuf import descriptor_pb2

    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    out: dict[str, str] = {}
    for file in (f for f in files.file if f.name == proto):
        names: dict[tuple[int, ...], str] = {}
        for i, message in enumerate(file.message_type):
            names[(_MESSAGE, i)] = f"{file.package}.{message.name}"
            for j, field in enumerate(message.field):
                names[(_MESSAGE, i, _FIELD, j)] = f"{file.package}.{message.name}.{field.name}"
        for i, enum in enumerate(file.enum_type):
            names[(_ENUM, i)] = f"{file.package}.{enum.name}"
            for j, value in enumerate(enum.value):
                names[(_ENUM, i, _VALUE, j)] = f"{file.package}.{enum.name}.{value.name}"
        for location in file.source_code_info.location:
            name = names.get(tuple(location.path))
            text = " ".join(line.strip() for line in location.leading_comments.splitlines() if line.strip())
            if name and text:
                out[name] = text
    return out


def generate(out_dir: Path = OUT_DIR) -> list[Path]:
    check_generator(locked_generator())
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        descriptor_set = Path(tmp) / "descriptors.pb"
        args = ["protoc", f"-I{PROTO_DIR}", f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}"]
        args += ["--include_source_info", f"--descriptor_set_out={descriptor_set}"]
        if protoc.main([*args, *PROTOS]) != 0:
            raise RuntimeError("protoc failed; see the message above")
        for proto in PROTOS:
            docs = Path(tmp) / proto.replace(".proto", "_docs.json")
            docs.write_text(json.dumps(_comments(descriptor_set, proto), indent=1, sort_keys=True) + "\n")
        written = []
        for produced in sorted([*Path(tmp).rglob("*.py*"), *Path(tmp).rglob("*_docs.json")]):
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
