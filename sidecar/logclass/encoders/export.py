"""ONNX exports of the sentence-transformers model, made offline from the installed weights into
the cache, keyed by what they were made from and verified by SHA-256 on every load.

The graph is the whole sentence-transformers pipeline (transformer, pooling, normalisation), so
serving needs neither torch nor sentence-transformers; only making the export does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from logclass.encoders.base import Precision
from logclass.encoders.model import EncoderError, weights_sha256

Variant = Precision
VARIANTS: tuple[Variant, ...] = ("fp32", "int8", "fp16")
MODEL_FILE = "model.onnx"
RECORD_FILE = "export.json"
# Bumped whenever the export recipe changes, so old exports are not reused.
RECIPE = 1
OPSET = 17


def encoders_cache_dir(cache_dir: str | Path | None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    # XDG says an empty XDG_CACHE_HOME counts as unset.
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "logclass" / "encoders"


def export_key(model_path: Path, variant: Variant) -> str:
    import onnxruntime

    weights = weights_sha256(model_path) or _folder_digest(model_path)
    parts = f"recipe {RECIPE}|{weights}|{variant}|opset {OPSET}|onnxruntime {onnxruntime.__version__}"
    return hashlib.sha256(parts.encode()).hexdigest()[:16]


def _folder_digest(model_path: Path) -> str:
    """For a model folder without model.safetensors: the names, sizes and mtimes of its files."""
    digest = hashlib.sha256()
    for path in sorted(p for p in model_path.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(model_path)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def export_dir(model_path: Path, variant: Variant, cache_dir: str | Path | None) -> Path:
    # The packaged model's folder is just "model": name it by its package instead.
    name = model_path.parent.name if model_path.name == "model" else model_path.name
    return encoders_cache_dir(cache_dir) / f"{name}-{variant}-{export_key(model_path, variant)}"


def ensure_export(
    model_path: Path, variant: Variant, cache_dir: str | Path | None, log: Callable[[str], object] = print
) -> Path:
    """The verified ONNX file of ``variant``, exporting it first when the cache lacks it or holds
    a copy whose SHA-256 no longer matches its record."""
    target = export_dir(model_path, variant, cache_dir)
    if verified(target):
        return target / MODEL_FILE
    if target.exists():
        log(f"encoder export {target} does not match its recorded SHA-256; exporting it again")
    log(f"exporting {model_path} to ONNX ({variant}) into {target.parent} (once; a few seconds)")
    try:
        build(model_path, variant, target)
    except OSError as exc:
        raise EncoderError(
            f"cannot write the ONNX export into {target.parent} ({exc.strerror or exc}): set embedding.cache_dir "
            "to a writable folder, or run `logclass export-encoder` where it is writable"
        ) from exc
    return target / MODEL_FILE


def verified(target: Path) -> bool:
    from logclass.core.hashing import sha256_file

    try:
        record = json.loads((target / RECORD_FILE).read_text(encoding="utf-8"))
        return bool(sha256_file(target / MODEL_FILE) == record["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def build(model_path: Path, variant: Variant, target: Path) -> None:
    """Export into a temporary folder beside ``target`` and rename it into place, so a reader never
    sees half an export and two processes exporting at once both end with a whole one."""
    from logclass.core.hashing import sha256_file

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        fp32 = work / "fp32.onnx"
        config = _export_fp32(model_path, fp32)
        final = work / MODEL_FILE
        optimized = work / "optimized.onnx"
        _optimize(fp32, optimized, config, fp16=variant == "fp16")
        if variant == "int8":
            _quantize(optimized, final)
        else:
            optimized.replace(final)
        for leftover in (fp32, optimized):
            leftover.unlink(missing_ok=True)
        record = {
            "recipe": RECIPE,
            "variant": variant,
            "source": str(model_path),
            "source_weights_sha256": weights_sha256(model_path),
            "sha256": sha256_file(final),
            "bytes": final.stat().st_size,
        }
        (work / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        work.chmod(0o755)
        shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(work, target)
        except OSError:
            # Another process renamed its export into place first: theirs is as good as ours.
            if not verified(target):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _export_fp32(model_path: Path, out: Path) -> dict[str, Any]:
    """The sentence-transformers pipeline as one fp32 graph with dynamic batch and sequence axes.
    Eager attention exports as plain MatMul/Softmax, which ONNX Runtime's optimiser fuses into
    its Attention kernel (the SDPA export does not fuse)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        model = SentenceTransformer(
            str(model_path), device="cpu", local_files_only=True, model_kwargs={"attn_implementation": "eager"}
        ).eval()
    except Exception as exc:
        raise EncoderError(f"cannot load {model_path} to export it to ONNX: {exc}") from exc
    names = list(model.tokenizer.model_input_names)
    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if "token_type_ids" in names else [])

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            features = dict(zip(inputs, tensors, strict=True))
            embedding = self.model(features)["sentence_embedding"]
            return torch.nn.functional.normalize(embedding, p=2.0, dim=1)

    sample = model.tokenizer(["a sample line", "and a second, longer sample line"], padding=True, return_tensors="pt")
    args = tuple(sample[name] for name in inputs)
    axes = {name: {0: "batch", 1: "tokens"} for name in inputs} | {"embedding": {0: "batch"}}
    # The tracer warns about every data-dependent branch in the model code; they are all shape
    # checks that hold for any batch, and the export is checked against torch by the probe.
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Pipeline().eval(),
            args,
            str(out),
            input_names=inputs,
            output_names=["embedding"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    transformer: Any = model[0]
    config = transformer.auto_model.config
    return {
        "model_type": getattr(config, "model_type", ""),
        "num_heads": int(getattr(config, "num_attention_heads", 0) or 0),
        "hidden_size": int(getattr(config, "hidden_size", 0) or 0),
    }


# Model types ONNX Runtime's transformer optimiser knows how to fuse.
_FUSABLE = {"bert": "bert", "roberta": "bert", "distilbert": "bert", "xlm-roberta": "bert", "mpnet": "bert"}


def _optimize(src: Path, out: Path, config: dict[str, Any], fp16: bool) -> None:
    """Fused attention, layer norm and GELU where the optimiser knows the architecture; the graph
    as exported otherwise (ONNX Runtime still applies its generic optimisations at load)."""
    model_type = _FUSABLE.get(str(config["model_type"]))
    if model_type is None:
        if fp16:
            raise EncoderError(f"fp16 export supports {sorted(_FUSABLE)} models, not {config['model_type']!r}")
        shutil.copyfile(src, out)
        return
    from onnxruntime.transformers import optimizer

    optimized = optimizer.optimize_model(
        str(src), model_type=model_type, num_heads=config["num_heads"], hidden_size=config["hidden_size"], opt_level=0
    )
    if fp16:
        # Inputs and output stay int64/fp32 so callers feed and read the same arrays.
        optimized.convert_float_to_float16(keep_io_types=True)
    optimized.save_model_to_file(str(out))


def _quantize(src: Path, out: Path) -> None:
    """Dynamic int8 weights, one scale per output channel: per-tensor scales put the embeddings'
    mean cosine to fp32 at 0.93, per-channel at 0.99 (make bench-encoder)."""
    # It logs a hint about pre-processing on the root logger on every call; we fuse first instead.
    logging.disable(logging.WARNING)
    try:
        _quantize_dynamic(src, out)
    finally:
        logging.disable(logging.NOTSET)


def _quantize_dynamic(src: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(out),
        weight_type=QuantType.QInt8,
        per_channel=True,
        # Fused ops come from the com.microsoft domain, whose outputs shape inference cannot type.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
