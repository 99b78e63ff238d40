"""The bundle manifest as typed values: it reads and writes back byte for byte (its hash is the
bundle's version), and a malformed one is refused with the key at fault."""

from __future__ import annotations

import copy
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from logclass.core.bundle import MANIFEST, BundleError, load_bundle
from logclass.core.head import softmax_scores
from logclass.core.manifest import Manifest
from logclass.engine.pipeline import DEFAULT_BUNDLE

ORIGIN = "b/manifest.json"


def _default() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(DEFAULT_BUNDLE) / MANIFEST).read_text(encoding="utf-8"))
    return data


def test_the_shipped_manifest_writes_back_byte_for_byte() -> None:
    raw = (Path(DEFAULT_BUNDLE) / MANIFEST).read_text(encoding="utf-8")
    manifest = Manifest.from_dict(json.loads(raw), ORIGIN)
    assert json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n" == raw
    assert manifest.training is not None and manifest.training.classifier.C == 10.0
    assert manifest.profile.memory.min_purity == 0.9 and manifest.features.word_ngrams == (1, 2)


def test_keys_format_2_gained_later_may_be_absent() -> None:
    # A bundle that predates training.folds, rule_min_precision and ood.fixed (the shipped one
    # is distilled, which records them), embedding.backend, embedding.precision and metrics.
    old = _default()
    del old["embedding"]["backend"], old["embedding"]["precision"], old["metrics"]
    for key in ("folds", "rule_min_precision"):
        old["training"].pop(key, None)
    old["training"]["ood"].pop("fixed", None)
    manifest = Manifest.from_dict(copy.deepcopy(old), ORIGIN)
    assert manifest.training is not None and manifest.training.folds is None and manifest.training.ood.fixed is None
    assert manifest.embedding is not None and manifest.embedding.backend is None and manifest.metrics is None
    assert manifest.to_dict() == old  # absent stays absent, never null
    new = _default()
    new["training"].update(folds=5, rule_min_precision=0.9)
    new["training"]["ood"]["fixed"] = False
    manifest = Manifest.from_dict(copy.deepcopy(new), ORIGIN)
    assert manifest.training is not None and (manifest.training.folds, manifest.training.ood.fixed) == (5, False)
    assert manifest.to_dict() == new


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda m: m["classifier"].update(labels="Error"),
            "b/manifest.json: 'classifier.labels' must be a list of strings, not a string",
        ),
        (
            lambda m: m["profile"].pop("min_confidence"),
            "b/manifest.json: 'profile.min_confidence' must be a number from 0 to 1; it is missing",
        ),
        (lambda m: m.update(tiers=["regex"]), "b/manifest.json: has unknown keys ['tiers']; allowed: ['classifier',"),
        (
            lambda m: m["files"].update({"memory.json": "not a hash"}),
            "'files.memory\\.json' must be a string matching ^[0-9a-f]{64}$, not 'not a hash'",
        ),
        (lambda m: m["features"].update(kind="words"), '\'features.kind\' must be one of "embedding", "lexical"'),
        (lambda m: m.update(format_version=3), "bundle format 3 is not supported (expected 2); retrain"),
        (
            lambda m: m["label_set"].update(examples=[{"source": "s", "message": "m", "label": "Nope"}]),
            "label_set is malformed (examples use labels not in the label set: ['Nope'])",
        ),
    ],
)
def test_a_malformed_manifest_names_the_key(change: Any, message: str) -> None:
    data = _default()
    change(data)
    with pytest.raises(BundleError) as err:
        Manifest.from_dict(data, ORIGIN)
    assert message.replace("\\.", ".") in str(err.value)


def test_not_an_object() -> None:
    with pytest.raises(BundleError, match="must hold a JSON object"):
        Manifest.from_dict([1, 2], ORIGIN)


def test_load_bundle_refuses_a_malformed_manifest(tmp_path: Path) -> None:
    target = tmp_path / "b"
    shutil.copytree(DEFAULT_BUNDLE, target)
    data = _default()
    data["profile"]["memory"]["min_rows"] = 0
    (target / MANIFEST).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(
        BundleError, match=r"manifest\.json: 'profile\.memory\.min_rows' must be an integer of at least"
    ):
        load_bundle(target)
    (target / MANIFEST).write_text("{not json", encoding="utf-8")
    with pytest.raises(BundleError, match=r"bundle manifest .* is not valid JSON"):
        load_bundle(target)


def test_binary_probabilities_do_not_overflow() -> None:
    scores = np.array([[-1000.0], [0.0], [1000.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # np.exp(1000) warned "overflow encountered in exp"
        proba = softmax_scores(scores, 2)
    np.testing.assert_allclose(proba, [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
