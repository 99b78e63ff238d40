"""Model bundles: a complete classifier as plain data, its manifest and file hashes.

A bundle is a directory::

    manifest.json      labels (the label set: descriptions, examples), the router profile (source
                       routes, thresholds), features, calibration, the masks its templates were
                       made with, training data hash, metrics, and the SHA-256 of every other file
    classifier.npz     coef (n_labels x dim, or 1 x dim for two labels) and intercept, float32
    prototypes.npz     one feature vector per training template and its label, for the
                       out-of-distribution check (dense ``vectors``, or CSR ``data/indices/indptr``)
    memory.json        every training template with its label counts (the memory tier)
    rules.yaml         the regex rules kept at training time (their labels are in the label set)
    training_rows.npy  64-bit hashes of the rows the bundle was fitted on (evaluate --holdout)
    encoder_probe.npz  some training templates (``texts``) and their embeddings (``vectors``) from the
                       encoder the bundle was trained with, to check the serving encoder against

Arrays are stored as plain ``.npz`` read with ``allow_pickle=False``: nothing executable is ever
loaded, and every file is checked against the manifest before it is read. The manifest's shape is
``core.manifest``'s, the hashing ``core.hashing``'s and the head's maths ``core.head``'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from logclass.core.files import json_of, read_bytes, read_json
from logclass.core.hashing import sha256_file, verify_files
from logclass.core.head import LinearHead, Matrix, Prototypes
from logclass.core.labelset import LabelSet
from logclass.core.manifest import FORMAT_VERSION as FORMAT_VERSION
from logclass.core.manifest import BundleError as BundleError
from logclass.core.manifest import (
    ClassifierInfo,
    EmbeddingInfo,
    FeatureSpec,
    Manifest,
    MetricsInfo,
    Profile,
    TemplatesInfo,
    TrainingInfo,
)
from logclass.core.masking import Mask
from logclass.core.rules_file import RulesFile

MANIFEST = "manifest.json"
CLASSIFIER = "classifier.npz"
PROTOTYPES = "prototypes.npz"
MEMORY = "memory.json"
RULES = "rules.yaml"
TRAINING_ROWS = "training_rows.npy"
ENCODER_PROBE = "encoder_probe.npz"
REQUIRED_FILES = (CLASSIFIER, PROTOTYPES, MEMORY)


@dataclass(frozen=True)
class ModelBundle:
    path: Path
    manifest: Manifest
    head: LinearHead
    prototypes: Prototypes
    version: str

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def features(self) -> FeatureSpec:
        return self.manifest.features

    @property
    def label_set(self) -> LabelSet:
        return self.manifest.label_set

    @property
    def profile(self) -> Profile:
        return self.manifest.profile

    @property
    def labels(self) -> list[str]:
        return list(self.label_set.labels)

    @property
    def masks(self) -> list[dict[str, str]]:
        """The masks the memory's templates were made with."""
        return [dataclasses.asdict(mask) for mask in self.manifest.templates.masks]

    def memory(self) -> dict[str, dict[str, int]]:
        """Template -> label counts of every training template (verified at load)."""
        # Unbounded: its hash was checked at load, and it grows with the training data.
        data: Any = read_json(self.path / MEMORY, "bundle memory", max_bytes=None, error=BundleError)
        return {str(t): {str(k): int(v) for k, v in counts.items()} for t, counts in data["templates"]}

    @property
    def rules_file(self) -> Path | None:
        return self.path / RULES if RULES in self.manifest.files else None

    @property
    def encoder_backend(self) -> str:
        """The encoder backend the head was trained on; bundles that predate the choice were all
        trained on sentence-transformers (torch)."""
        embedding = self.manifest.embedding
        return embedding.backend if embedding is not None and embedding.backend is not None else "torch"

    def encoder_probe(self) -> tuple[list[str], np.ndarray] | None:
        """Probe texts and the training encoder's embeddings of them (verified at load), if recorded."""
        if ENCODER_PROBE not in self.manifest.files:
            return None
        try:
            with np.load(self.path / ENCODER_PROBE, allow_pickle=False) as arrays:
                return [str(t) for t in arrays["texts"]], np.asarray(arrays["vectors"], dtype=np.float32)
        except (KeyError, ValueError, OSError) as exc:
            raise BundleError(f"{self.path / ENCODER_PROBE}: not an encoder probe file ({exc})") from exc

    def training_rows(self) -> np.ndarray:
        """Hashes of the training rows (verified at load like every listed file)."""
        if TRAINING_ROWS not in self.manifest.files:
            raise BundleError(f"{self.path}: this bundle does not record its training rows; retrain it")
        return np.asarray(np.load(self.path / TRAINING_ROWS, allow_pickle=False), dtype=np.uint64)


def _read_manifest(path: Path) -> tuple[Manifest, bytes]:
    """The manifest and its bytes (whose hash is the bundle's version)."""
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise BundleError(f"model bundle {path} does not exist; train one with `logclass train DATA.csv --out {path}`")
    raw = read_bytes(manifest_path, "bundle manifest", error=BundleError)
    data = json_of(raw, manifest_path, "bundle manifest", error=BundleError)
    return Manifest.from_dict(data, str(manifest_path)), raw


def _verify_files(path: Path, manifest: Manifest) -> None:
    if any(name not in manifest.files for name in REQUIRED_FILES):
        raise BundleError(f"{path / MANIFEST}: 'files' must list {', '.join(REQUIRED_FILES)} with their SHA-256")
    verify_files(path, manifest.files, path / MANIFEST, BundleError)


def _load_head(path: Path, manifest: Manifest) -> LinearHead:
    try:
        with np.load(path / CLASSIFIER, allow_pickle=False) as arrays:
            coef = np.asarray(arrays["coef"], dtype=np.float32)
            intercept = np.asarray(arrays["intercept"], dtype=np.float32)
    except (KeyError, ValueError, OSError) as exc:
        raise BundleError(f"{path / CLASSIFIER}: not a classifier array file ({exc})") from exc
    classifier = manifest.classifier
    return LinearHead(tuple(classifier.labels), coef, intercept, float(classifier.temperature))


def _load_prototypes(path: Path, head: LinearHead) -> Prototypes:
    try:
        with np.load(path / PROTOTYPES, allow_pickle=False) as arrays:
            if "vectors" in arrays:
                vectors: Matrix = np.asarray(arrays["vectors"], dtype=np.float32)
            else:
                shape = tuple(int(n) for n in arrays["shape"])
                vectors = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=shape)
            label_index = np.asarray(arrays["label_index"], dtype=np.int64)
            thresholds = np.asarray(arrays["thresholds"], dtype=np.float32)
    except (KeyError, ValueError, OSError) as exc:
        raise BundleError(f"{path / PROTOTYPES}: not a prototype array file ({exc})") from exc
    if vectors.shape[1] != head.dimension or thresholds.shape != (len(head.labels),):
        raise BundleError(
            f"{path / PROTOTYPES}: shapes do not fit the classifier ({vectors.shape}, {thresholds.shape})"
        )
    return Prototypes(vectors, label_index, thresholds)


def load_bundle(path: str | Path) -> ModelBundle:
    path = Path(path)
    manifest, raw = _read_manifest(path)
    _verify_files(path, manifest)
    head = _load_head(path, manifest)
    missing = sorted(set(head.labels) - set(manifest.label_set.labels))
    if missing:
        raise BundleError(f"{path / MANIFEST}: the classifier's labels {missing} are not in the label set")
    embedding = manifest.embedding
    if manifest.features.kind == "embedding" and embedding is not None and embedding.dimension != head.dimension:
        raise BundleError(f"{path}: manifest says dimension {embedding.dimension}, classifier has {head.dimension}")
    version = f"{manifest.name}@{hashlib.sha256(raw).hexdigest()[:12]}"
    return ModelBundle(
        path=path, manifest=manifest, head=head, prototypes=_load_prototypes(path, head), version=version
    )


def _save_prototypes(target: Path, prototypes: Prototypes) -> None:
    arrays: dict[str, Any] = {
        "label_index": prototypes.label_index.astype(np.int32),
        "thresholds": prototypes.thresholds,
    }
    if sp.issparse(prototypes.vectors):
        csr = sp.csr_matrix(prototypes.vectors, dtype=np.float32)
        arrays.update(data=csr.data, indices=csr.indices, indptr=csr.indptr, shape=np.array(csr.shape))
    else:
        arrays["vectors"] = np.asarray(prototypes.vectors, np.float32)
    np.savez_compressed(target, **arrays)


def write_bundle(
    path: str | Path,
    *,
    name: str,
    head: LinearHead,
    features: FeatureSpec,
    prototypes: Prototypes,
    label_set: LabelSet,
    profile: Profile,
    memory: Mapping[str, Mapping[str, int]],
    rules: RulesFile | None,
    masks: Sequence[Mask],
    training_rows: np.ndarray,
    training: TrainingInfo | None = None,
    metrics: MetricsInfo | None = None,
    embedding: EmbeddingInfo | None = None,
    encoder_probe: tuple[Sequence[str], np.ndarray] | None = None,
) -> ModelBundle:
    """Write the data files, then the manifest with their hashes; the manifest is written last so
    that an interrupted write leaves no bundle that loads."""
    import yaml

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MANIFEST).unlink(missing_ok=True)
    np.savez_compressed(
        path / CLASSIFIER, coef=np.asarray(head.coef, np.float32), intercept=np.asarray(head.intercept, np.float32)
    )
    _save_prototypes(path / PROTOTYPES, prototypes)
    entries = [[template, dict(sorted(counts.items()))] for template, counts in sorted(memory.items())]
    (path / MEMORY).write_text(json.dumps({"templates": entries}, ensure_ascii=False) + "\n", encoding="utf-8")
    np.save(path / TRAINING_ROWS, np.asarray(training_rows, dtype=np.uint64))
    names = [CLASSIFIER, PROTOTYPES, MEMORY, TRAINING_ROWS]
    (path / ENCODER_PROBE).unlink(missing_ok=True)
    if encoder_probe is not None:
        texts, vectors = encoder_probe
        np.savez_compressed(path / ENCODER_PROBE, texts=np.asarray(list(texts), dtype=str), vectors=vectors)
        names.append(ENCODER_PROBE)
    (path / RULES).unlink(missing_ok=True)
    if rules is not None:
        text = yaml.safe_dump(rules.to_dict(), sort_keys=False, allow_unicode=True)
        (path / RULES).write_text(text, encoding="utf-8")
        names.append(RULES)
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        name=name,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        labels=label_set.labels,
        label_set=label_set.stored(),
        profile=profile,
        features=features,
        classifier=ClassifierInfo(tuple(head.labels), round(head.temperature, 6)),
        templates=TemplatesInfo(tuple(masks)),
        training=training,
        metrics=metrics,
        embedding=embedding,
        files={name: sha256_file(path / name) for name in names},
    )
    tmp = path / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path / MANIFEST)
    return load_bundle(path)
