"""A model bundle's ``manifest.json`` as typed values.

The manifest describes a bundle: its label set, the router profile, the features and head, the
masks its templates were made with, how it was trained and scored, and the SHA-256 of every other
file. These dataclasses are the one description of its shape: ``logclass train`` writes one with
``Manifest.to_dict``, ``load_bundle`` reads it with ``Manifest.from_dict``, which checks it against
the schema generated from them (committed as ``core/schemas/manifest.schema.json``).

Keys that format 2 gained over time (``training.folds``, ``training.ood.fixed``,
``embedding.backend``...) may be absent: absent reads as None and None is written as absent, so a
manifest reads and writes back byte for byte (its hash is the bundle's version).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from logclass.core.labelset import LabelSet, LabelSetError
from logclass.core.masking import Mask
from logclass.core.schema import load
from logclass.core.typed import ABSENT, EMPTY, Json, MayOmit, doc, to_plain
from logclass.errors import LogclassError

FORMAT_VERSION: Final = 2
FEATURE_KINDS = ("embedding", "lexical", "both")

Sha256 = Annotated[str, Json(pattern="^[0-9a-f]{64}$")]
Probability = Annotated[float, Json(minimum=0, maximum=1)]
Count = Annotated[int, Json(minimum=0)]
NgramRange = Annotated[tuple[int, int], Json(description="lowest and highest n")]


class BundleError(LogclassError):
    """A model bundle that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class FeatureSpec:
    """What the head reads: sentence embeddings of the message, hashed word and character
    n-grams of its template (stateless: no vocabulary), or both, each block L2-normalised and
    the concatenation scaled back to unit length."""

    kind: Annotated[str, Json(enum=list(FEATURE_KINDS))]
    lexical_features: Annotated[int, Json(minimum=1), MayOmit(1 << 14), doc("hashed features per analyser")] = 1 << 14
    word_ngrams: Annotated[NgramRange, MayOmit((1, 2))] = (1, 2)
    char_ngrams: Annotated[NgramRange, MayOmit((3, 5))] = (3, 5)

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise BundleError(f"features.kind {self.kind!r} is unknown; one of {', '.join(FEATURE_KINDS)}")

    @property
    def uses_embedding(self) -> bool:
        return self.kind in ("embedding", "both")

    @property
    def uses_lexical(self) -> bool:
        return self.kind in ("lexical", "both")


@dataclass(frozen=True, slots=True)
class MemoryProfile:
    min_rows: Annotated[int, Json(minimum=1), MayOmit(1), doc("rows a training template needs to be answered")]
    min_purity: Annotated[
        float, Json(exclusiveMinimum=0, maximum=1), MayOmit(1.0), doc("share of its rows the top label needs")
    ]


@dataclass(frozen=True, slots=True)
class Profile:
    """How the router uses this classifier, unless the config says otherwise."""

    source_routes: Annotated[Mapping[str, str], MayOmit(EMPTY), doc("source -> first tier for its records")]
    min_confidence: Annotated[Probability, doc("below this probability a record escalates")]
    label_min_confidence: Annotated[Mapping[str, Probability], MayOmit(EMPTY), doc("per-label min_confidence")]
    memory: Annotated[MemoryProfile, MayOmit(MemoryProfile(1, 1.0))]


@dataclass(frozen=True, slots=True)
class ClassifierInfo:
    labels: Annotated[tuple[str, ...], doc("the head's labels, in the order of classifier.npz's rows")]
    temperature: Annotated[float, Json(exclusiveMinimum=0), MayOmit(1.0), doc("calibration: scores are divided")]


@dataclass(frozen=True, slots=True)
class TemplatesInfo:
    masks: Annotated[tuple[Mask, ...], doc("the masks the memory's templates were made with")]


@dataclass(frozen=True, slots=True)
class RuleCheckInfo:
    kept: Annotated[tuple[str, ...], doc("names of the rules kept in rules.yaml")]
    dropped: Annotated[Mapping[str, str], doc("rule name -> why it was dropped")]


@dataclass(frozen=True, slots=True)
class SplitInfo:
    kind: Annotated[str, Json(enum=["stratified", "random"])]
    test_size: Annotated[float, Json(minimum=0, maximum=1)]
    random_state: int


@dataclass(frozen=True, slots=True)
class HeadRecipe:
    type: str
    C: float
    class_weight: str


@dataclass(frozen=True, slots=True)
class CvResult:
    C: Annotated[float, doc("the C chosen for this feature kind")]
    mean: Annotated[float | None, doc("mean cross-validated macro-F1 at that C; null: not finite")]
    by_c: Annotated[Mapping[str, float], doc("C -> mean macro-F1")]


@dataclass(frozen=True, slots=True)
class Ece:
    before: float | None
    after: float | None


@dataclass(frozen=True, slots=True)
class CalibrationInfo:
    method: str
    temperature: float
    out_of_fold_ece: Ece


@dataclass(frozen=True, slots=True)
class OodInfo:
    quantile: float
    fixed: Annotated[bool | None, ABSENT, doc("the thresholds were given (distill keeps the current ones)")]
    thresholds: Annotated[Mapping[str, float], doc("head label -> lowest similarity still in distribution")]


@dataclass(frozen=True, slots=True)
class TrainingInfo:
    """How the bundle was trained: with ``features`` and ``classifier.C``, the recipe
    `logclass distill` retrains with."""

    data_file: str
    data_sha256: Sha256
    rows_total: Count
    rows_training_side: Count
    extra_files: Annotated[Mapping[str, Sha256], doc("teacher file name -> its SHA-256")]
    label_counts: Mapping[str, Count]
    few_row_labels: Mapping[str, Count]
    rules: RuleCheckInfo
    memory_templates: Count
    head_templates: Count
    split: SplitInfo
    folds: Annotated[int | None, ABSENT]
    rule_min_precision: Annotated[float | None, ABSENT]
    classifier: HeadRecipe
    features: Annotated[str, Json(enum=list(FEATURE_KINDS))]
    cv_macro_f1: Annotated[Mapping[str, CvResult], doc("feature kind -> its cross-validation")]
    calibration: CalibrationInfo
    ood: OodInfo


@dataclass(frozen=True, slots=True)
class HoldoutMetrics:
    """Scores on the hold-out; every key absent when there was none."""

    rows: Annotated[int | None, ABSENT]
    accuracy: Annotated[float | None, ABSENT]
    macro_f1: Annotated[float | None, ABSENT]
    per_class: Annotated[
        Mapping[str, Mapping[str, float]] | None, ABSENT, doc("label -> precision, recall, f1-score, support")
    ]


@dataclass(frozen=True, slots=True)
class MetricsInfo:
    holdout: HoldoutMetrics


@dataclass(frozen=True, slots=True)
class EmbeddingInfo:
    """The encoder the head was trained on."""

    model: str
    backend: Annotated[str | None, ABSENT, doc("absent: torch (bundles from before the choice)")]
    precision: Annotated[str | None, ABSENT]
    dimension: Annotated[int, Json(minimum=1)]
    weights_sha256: Annotated[
        str, Json(pattern="^([0-9a-f]{64})?$"), doc("of model.safetensors; empty: the folder had none")
    ]
    max_seq_length: Annotated[int, Json(minimum=1)]


@dataclass(frozen=True, slots=True)
class Manifest:
    format_version: Annotated[Literal[2], doc("bundles of another format are refused: retrain them")]
    name: str
    created_at: Annotated[str, doc("ISO 8601, UTC")]
    labels: Annotated[tuple[str, ...], doc("the label set's labels")]
    label_set: LabelSet
    profile: Profile
    features: FeatureSpec
    classifier: ClassifierInfo
    templates: TemplatesInfo
    training: Annotated[TrainingInfo | None, ABSENT]
    metrics: Annotated[MetricsInfo | None, ABSENT]
    embedding: Annotated[EmbeddingInfo | None, ABSENT, doc("absent: the head reads no embeddings")]
    files: Annotated[Mapping[str, Sha256], doc("file name in the bundle -> its SHA-256")]

    @classmethod
    def from_dict(cls, data: object, origin: str) -> Manifest:
        """``data`` read from ``origin`` (the manifest's path, for messages), checked."""
        if not isinstance(data, Mapping):
            raise BundleError(f"{origin} must hold a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(
                f"{origin}: bundle format {version!r} is not supported (expected {FORMAT_VERSION}); "
                "retrain with this version of logclass"
            )
        try:
            return load(cls, data, origin, BundleError)
        except LabelSetError as exc:
            raise BundleError(f"{origin}: label_set is malformed ({exc}); retrain or restore the bundle") from exc

    def to_dict(self) -> dict[str, Any]:
        """Plain data in the key order the file has."""
        out: dict[str, Any] = to_plain(self)
        return out
