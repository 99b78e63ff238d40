from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sidecar.core.bundle import (
    CLASSIFIER,
    MANIFEST,
    BundleError,
    LinearHead,
    ModelBundle,
    load_bundle,
    write_bundle,
)


def _copy(bundle: ModelBundle, tmp_path: Path) -> Path:
    target = tmp_path / "b"
    shutil.copytree(bundle.path, target)
    return target


def test_shipped_bundle_manifest(bundle: ModelBundle) -> None:
    m = bundle.manifest
    assert m["format_version"] == 1
    assert m["embedding"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert m["embedding"]["dimension"] == 384
    assert len(m["training"]["data_sha256"]) == 64
    assert set(m["files"]) == {"classifier.npz", "training_rows.npy"}
    assert "macro_f1" in m["metrics"]["holdout"] and "created_at" in m
    assert bundle.version.startswith("default@")
    assert set(bundle.labels) == {
        "Critical Error",
        "Error",
        "HTTP Status",
        "Resource Usage",
        "Security Alert",
    }


def test_tampered_classifier_is_refused(bundle: ModelBundle, tmp_path: Path) -> None:
    path = _copy(bundle, tmp_path)
    with np.load(path / CLASSIFIER) as arrays:
        coef, intercept = arrays["coef"] * 1.01, arrays["intercept"]
    np.savez(path / CLASSIFIER, coef=coef, intercept=intercept)
    with pytest.raises(BundleError, match=r"classifier.npz does not match its SHA-256"):
        load_bundle(path)


def test_pickled_arrays_are_never_loaded(bundle: ModelBundle, tmp_path: Path) -> None:
    # Even with a matching hash, object arrays (pickles) are rejected by allow_pickle=False.
    path = _copy(bundle, tmp_path)
    np.savez(path / CLASSIFIER, coef=np.array([{"x": 1}], dtype=object), intercept=np.zeros(1))
    manifest = json.loads((path / MANIFEST).read_text())
    import hashlib

    manifest["files"][CLASSIFIER] = hashlib.sha256((path / CLASSIFIER).read_bytes()).hexdigest()
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="not a classifier array file"):
        load_bundle(path)


def test_missing_and_escaping_files(bundle: ModelBundle, tmp_path: Path) -> None:
    path = _copy(bundle, tmp_path)
    (path / "training_rows.npy").unlink()
    with pytest.raises(BundleError, match="listed in the manifest but missing"):
        load_bundle(path)
    path2 = tmp_path / "c"
    shutil.copytree(bundle.path, path2)
    manifest = json.loads((path2 / MANIFEST).read_text())
    manifest["files"]["../../etc/passwd"] = "0" * 64
    (path2 / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="outside the bundle"):
        load_bundle(path2)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="logclass train"):
        load_bundle(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="cannot read the manifest"):
        load_bundle(tmp_path / "empty")
    (tmp_path / "v9").mkdir()
    (tmp_path / "v9" / MANIFEST).write_text('{"format_version": 9}')
    with pytest.raises(BundleError, match="format 9 is not supported"):
        load_bundle(tmp_path / "v9")


def test_round_trip_and_binary_head(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    coef, intercept = rng.normal(size=(1, 4)).astype(np.float32), np.zeros(1, np.float32)
    bundle = write_bundle(
        tmp_path / "two",
        name="two",
        labels=["a", "b"],
        coef=coef,
        intercept=intercept,
        training_rows=np.array([1, 2], dtype=np.uint64),
        manifest_extra={"embedding": {"dimension": 4}},
    )
    x = rng.normal(size=(3, 4)).astype(np.float32)
    proba = bundle.head.predict_proba(x)
    assert proba.shape == (3, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert bundle.training_rows().tolist() == [1, 2]
    with pytest.raises(BundleError, match="shapes do not fit"):
        LinearHead(("a", "b", "c"), coef, intercept)
