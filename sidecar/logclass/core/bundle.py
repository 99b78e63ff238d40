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
loaded, and every file is checked against the manifest before it is read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import scipy.sparse as sp

from logclass.core.labelset import LabelSet, LabelSetError
from logclass.errors import LogclassError

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
CLASSIFIER = "classifier.npz"
PROTOTYPES = "prototypes.npz"
MEMORY = "memory.json"
RULES = "rules.yaml"
TRAINING_ROWS = "training_rows.npy"
ENCODER_PROBE = "encoder_probe.npz"
FEATURE_KINDS = ("embedding", "lexical", "both")

# A feature matrix: a dense ndarray of embeddings, or a scipy CSR matrix when lexical features
# are part of it (scipy has no type stubs, hence Any).
Matrix: TypeAlias = Any


class BundleError(LogclassError):
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
class FeatureSpec:
    """What the head reads: sentence embeddings of the message, hashed word and character
    n-grams of its template (stateless: no vocabulary), or both, each block L2-normalised and
    the concatenation scaled back to unit length."""

    kind: str
    lexical_features: int = 1 << 14  # per analyser (word, char)
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (3, 5)

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise BundleError(f"features.kind {self.kind!r} is unknown; one of {', '.join(FEATURE_KINDS)}")

    @property
    def uses_embedding(self) -> bool:
        return self.kind in ("embedding", "both")

    @property
    def uses_lexical(self) -> bool:
        return self.kind in ("lexical", "both")

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "lexical_features": self.lexical_features,
            "word_ngrams": list(self.word_ngrams),
            "char_ngrams": list(self.char_ngrams),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureSpec:
        return cls(
            str(data["kind"]),
            int(data.get("lexical_features", 1 << 14)),
            _pair(data.get("word_ngrams", (1, 2))),
            _pair(data.get("char_ngrams", (3, 5))),
        )


def _pair(value: Any) -> tuple[int, int]:
    low, high = value
    return int(low), int(high)


@dataclass(frozen=True)
class LinearHead:
    """Multinomial (or binary) logistic regression evaluated with numpy, with the temperature
    fitted on cross-validated predictions so that its probabilities are calibrated."""

    labels: tuple[str, ...]
    coef: np.ndarray  # (n_labels, dim) or (1, dim) when there are two labels
    intercept: np.ndarray
    temperature: float = 1.0

    def __post_init__(self) -> None:
        n = len(self.labels)
        rows = 1 if n == 2 else n
        if n < 2 or self.coef.ndim != 2 or self.coef.shape[0] != rows or self.intercept.shape != (rows,):
            raise BundleError(
                f"classifier shapes do not fit {n} labels: coef {self.coef.shape}, intercept {self.intercept.shape}"
            )
        if not self.temperature > 0:
            raise BundleError(f"calibration temperature must be positive, not {self.temperature}")

    @property
    def dimension(self) -> int:
        return int(self.coef.shape[1])

    def scores(self, x: Matrix) -> np.ndarray:
        return np.asarray(x @ self.coef.T + self.intercept, dtype=np.float64)

    def predict_proba(self, x: Matrix, temperature: float | None = None) -> np.ndarray:
        scores = self.scores(x) / (self.temperature if temperature is None else temperature)
        return softmax_scores(scores, len(self.labels))


def softmax_scores(scores: np.ndarray, n_labels: int) -> np.ndarray:
    """Probabilities from decision scores (one column for two labels, as scikit-learn gives)."""
    if n_labels == 2:
        p1 = 1.0 / (1.0 + np.exp(-scores[:, 0]))
        return np.stack([1.0 - p1, p1], axis=1)
    scores = scores - scores.max(axis=1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=1, keepdims=True)
    return scores


@dataclass(frozen=True)
class Prototypes:
    """The training templates in feature space: a record far from every one of its predicted
    label (similarity under that label's threshold) is out of distribution."""

    vectors: Matrix  # one unit-length row per training template
    label_index: np.ndarray  # index into the head's labels, per row
    thresholds: np.ndarray  # per head label: lowest similarity still in distribution

    def nearest(self, x: Matrix, predicted: np.ndarray) -> np.ndarray:
        """Per row of ``x``: the highest similarity to a prototype of its predicted label."""
        product = x @ self.vectors.T
        sims = np.asarray(product.toarray() if sp.issparse(product) else product)
        same = self.label_index[None, :] == predicted[:, None]
        return np.asarray(np.where(same, sims, -np.inf).max(axis=1, initial=-np.inf))


@dataclass(frozen=True)
class Profile:
    """How the router uses this classifier, unless the config says otherwise."""

    source_routes: Mapping[str, str]
    min_confidence: float
    label_min_confidence: Mapping[str, float]
    memory_min_rows: int
    memory_min_purity: float

    def to_json(self) -> dict[str, Any]:
        return {
            "source_routes": dict(self.source_routes),
            "min_confidence": self.min_confidence,
            "label_min_confidence": dict(self.label_min_confidence),
            "memory": {"min_rows": self.memory_min_rows, "min_purity": self.memory_min_purity},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Profile:
        memory = data.get("memory") or {}
        return cls(
            {str(k): str(v) for k, v in (data.get("source_routes") or {}).items()},
            float(data["min_confidence"]),
            {str(k): float(v) for k, v in (data.get("label_min_confidence") or {}).items()},
            int(memory.get("min_rows", 1)),
            float(memory.get("min_purity", 1.0)),
        )


@dataclass(frozen=True)
class ModelBundle:
    path: Path
    manifest: dict[str, Any]
    head: LinearHead
    features: FeatureSpec
    prototypes: Prototypes
    label_set: LabelSet
    profile: Profile
    version: str

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.name))

    @property
    def labels(self) -> list[str]:
        return list(self.label_set.labels)

    @property
    def masks(self) -> list[dict[str, str]]:
        """The masks the memory's templates were made with."""
        return list(self.manifest.get("templates", {}).get("masks", []))

    def memory(self) -> dict[str, dict[str, int]]:
        """Template -> label counts of every training template (verified at load)."""
        data = json.loads((self.path / MEMORY).read_text(encoding="utf-8"))
        return {str(t): {str(k): int(v) for k, v in counts.items()} for t, counts in data["templates"]}

    @property
    def rules_file(self) -> Path | None:
        return self.path / RULES if RULES in self.manifest["files"] else None

    @property
    def encoder_backend(self) -> str:
        """The encoder backend the head was trained on; bundles that predate the choice were all
        trained on sentence-transformers (torch)."""
        return str(self.manifest.get("embedding", {}).get("backend", "torch"))

    def encoder_probe(self) -> tuple[list[str], np.ndarray] | None:
        """Probe texts and the training encoder's embeddings of them (verified at load), if recorded."""
        if ENCODER_PROBE not in self.manifest["files"]:
            return None
        try:
            with np.load(self.path / ENCODER_PROBE, allow_pickle=False) as arrays:
                return [str(t) for t in arrays["texts"]], np.asarray(arrays["vectors"], dtype=np.float32)
        except (KeyError, ValueError, OSError) as exc:
            raise BundleError(f"{self.path / ENCODER_PROBE}: not an encoder probe file ({exc})") from exc

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


REQUIRED_FILES = (CLASSIFIER, PROTOTYPES, MEMORY)


def _verify_files(path: Path, manifest: Mapping[str, Any]) -> None:
    files = manifest.get("files")
    if not isinstance(files, dict) or any(name not in files for name in REQUIRED_FILES):
        raise BundleError(f"{path / MANIFEST}: 'files' must list {', '.join(REQUIRED_FILES)} with their SHA-256")
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


def _load_head(path: Path, manifest: Mapping[str, Any]) -> LinearHead:
    classifier = manifest.get("classifier") or {}
    labels = classifier.get("labels")
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise BundleError(f"{path / MANIFEST}: 'classifier.labels' must be a list of strings")
    try:
        with np.load(path / CLASSIFIER, allow_pickle=False) as arrays:
            coef = np.asarray(arrays["coef"], dtype=np.float32)
            intercept = np.asarray(arrays["intercept"], dtype=np.float32)
    except (KeyError, ValueError, OSError) as exc:
        raise BundleError(f"{path / CLASSIFIER}: not a classifier array file ({exc})") from exc
    return LinearHead(tuple(labels), coef, intercept, float(classifier.get("temperature", 1.0)))


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
    try:
        label_set = LabelSet.from_json(manifest["label_set"])
        features = FeatureSpec.from_json(manifest["features"])
        profile = Profile.from_json(manifest["profile"])
    except (KeyError, TypeError, ValueError, LabelSetError) as exc:
        raise BundleError(f"{path / MANIFEST}: label_set, features or profile is missing or malformed ({exc})") from exc
    missing = sorted(set(head.labels) - set(label_set.labels))
    if missing:
        raise BundleError(f"{path / MANIFEST}: the classifier's labels {missing} are not in the label set")
    expected_dim = manifest.get("embedding", {}).get("dimension")
    if features.kind == "embedding" and expected_dim is not None and expected_dim != head.dimension:
        raise BundleError(f"{path}: manifest says dimension {expected_dim}, classifier has {head.dimension}")
    version = f"{manifest.get('name', path.name)}@{hashlib.sha256(raw).hexdigest()[:12]}"
    return ModelBundle(
        path=path,
        manifest=manifest,
        head=head,
        features=features,
        prototypes=_load_prototypes(path, head),
        label_set=label_set,
        profile=profile,
        version=version,
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
    rules: Sequence[Mapping[str, Any]] | None,
    masks: Sequence[Mapping[str, str]],
    training_rows: np.ndarray,
    manifest_extra: Mapping[str, Any],
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
        text = yaml.safe_dump({"rules": [dict(rule) for rule in rules]}, sort_keys=False, allow_unicode=True)
        (path / RULES).write_text(text, encoding="utf-8")
        names.append(RULES)
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "labels": list(label_set.labels),
        "label_set": label_set.to_json(),
        "profile": profile.to_json(),
        "features": features.to_json(),
        "classifier": {"labels": list(head.labels), "temperature": round(head.temperature, 6)},
        "templates": {"masks": [dict(m) for m in masks]},
        **manifest_extra,
        "files": {name: sha256_file(path / name) for name in names},
    }
    tmp = path / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path / MANIFEST)
    return load_bundle(path)
