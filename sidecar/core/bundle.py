"""Model bundles: a linear head over sentence embeddings, its manifest and file hashes.

A bundle is a directory::

    manifest.json      labels, thresholds, embedding model, training data hash, metrics,
                       and the SHA-256 of every other file
    classifier.npz     coef (n_labels x dim, or 1 x dim for two labels) and intercept, float32
    training_rows.npy  64-bit hashes of the rows the head was fitted on (evaluate --holdout)

Arrays are stored as plain ``.npz`` read with ``allow_pickle=False``: nothing executable is ever
loaded, and every file is checked against the manifest before it is read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CLASSIFIER = "classifier.npz"
TRAINING_ROWS = "training_rows.npy"


class BundleError(RuntimeError):
    pass


def sha256_file(path: Path, on_block: Callable[[int], object] | None = None) -> str:
    """``on_block`` gets each block's size, for a progress bar on large files."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
            if on_block is not None:
                on_block(len(block))
    return digest.hexdigest()


@dataclass(frozen=True)
class LinearHead:
    """Multinomial (or binary) logistic regression evaluated with numpy."""

    labels: tuple[str, ...]
    coef: np.ndarray  # (n_labels, dim) or (1, dim) when there are two labels
    intercept: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.labels)
        rows = 1 if n == 2 else n
        if n < 2 or self.coef.ndim != 2 or self.coef.shape[0] != rows or self.intercept.shape != (rows,):
            raise BundleError(
                f"classifier shapes do not fit {n} labels: coef {self.coef.shape}, intercept {self.intercept.shape}"
            )

    @property
    def dimension(self) -> int:
        return int(self.coef.shape[1])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        scores = x @ self.coef.T + self.intercept
        if len(self.labels) == 2:
            p1 = 1.0 / (1.0 + np.exp(-scores[:, 0]))
            return np.stack([1.0 - p1, p1], axis=1)
        scores -= scores.max(axis=1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=1, keepdims=True)
        return np.asarray(scores)


@dataclass(frozen=True)
class ModelBundle:
    path: Path
    manifest: dict[str, Any]
    head: LinearHead
    version: str

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.name))

    @property
    def labels(self) -> list[str]:
        return list(self.head.labels)

    def training_rows(self) -> np.ndarray:
        """Hashes of the training rows (verified at load like every listed file)."""
        if TRAINING_ROWS not in self.manifest["files"]:
            raise BundleError(f"{self.path}: this bundle does not record its training rows; retrain it")
        return np.asarray(np.load(self.path / TRAINING_ROWS, allow_pickle=False), dtype=np.uint64)


def _read_manifest(path: Path) -> tuple[dict[str, Any], bytes]:
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise BundleError(f"model bundle {path} does not exist; train one with `logclass train DATA.csv --out {path}`")
    try:
        raw = manifest_path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{manifest_path}: cannot read the manifest ({exc.strerror}); is {path} a bundle?") from exc
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} must hold a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{manifest_path}: bundle format {version!r} is not supported (expected {FORMAT_VERSION}); "
            "retrain with this version of logclass"
        )
    return manifest, raw


def _verify_files(path: Path, manifest: Mapping[str, Any]) -> None:
    files = manifest.get("files")
    if not isinstance(files, dict) or CLASSIFIER not in files:
        raise BundleError(f"{path / MANIFEST}: 'files' must list {CLASSIFIER} with its SHA-256")
    for name, expected in files.items():
        target = (path / name).resolve()
        if path.resolve() not in target.parents:
            raise BundleError(f"{path / MANIFEST}: file entry {name!r} points outside the bundle")
        if not target.is_file():
            raise BundleError(f"{path}: {name} is listed in the manifest but missing")
        actual = sha256_file(target)
        if actual != expected:
            raise BundleError(
                f"{path}: {name} does not match its SHA-256 in the manifest (expected {expected[:12]}…, "
                f"found {actual[:12]}…); the bundle was modified or damaged: retrain or restore it"
            )


def load_bundle(path: str | Path) -> ModelBundle:
    path = Path(path)
    manifest, raw = _read_manifest(path)
    _verify_files(path, manifest)
    labels = manifest.get("labels")
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise BundleError(f"{path / MANIFEST}: 'labels' must be a list of strings")
    try:
        with np.load(path / CLASSIFIER, allow_pickle=False) as arrays:
            coef = np.asarray(arrays["coef"], dtype=np.float32)
            intercept = np.asarray(arrays["intercept"], dtype=np.float32)
    except (KeyError, ValueError, OSError) as exc:
        raise BundleError(f"{path / CLASSIFIER}: not a classifier array file ({exc})") from exc
    head = LinearHead(tuple(labels), coef, intercept)
    expected_dim = manifest.get("embedding", {}).get("dimension")
    if expected_dim is not None and expected_dim != head.dimension:
        raise BundleError(f"{path}: manifest says dimension {expected_dim}, classifier has {head.dimension}")
    version = f"{manifest.get('name', path.name)}@{hashlib.sha256(raw).hexdigest()[:12]}"
    return ModelBundle(path=path, manifest=manifest, head=head, version=version)


def write_bundle(
    path: str | Path,
    *,
    name: str,
    labels: Sequence[str],
    coef: np.ndarray,
    intercept: np.ndarray,
    training_rows: np.ndarray,
    manifest_extra: Mapping[str, Any],
) -> ModelBundle:
    """Write arrays, then the manifest with their hashes; the manifest is written last so that an
    interrupted write leaves no bundle that loads."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MANIFEST).unlink(missing_ok=True)
    np.savez(path / CLASSIFIER, coef=np.asarray(coef, np.float32), intercept=np.asarray(intercept, np.float32))
    np.save(path / TRAINING_ROWS, np.asarray(training_rows, dtype=np.uint64))
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "labels": list(labels),
        **manifest_extra,
        "files": {name: sha256_file(path / name) for name in (CLASSIFIER, TRAINING_ROWS)},
    }
    tmp = path / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path / MANIFEST)
    return load_bundle(path)
