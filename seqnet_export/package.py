"""Writing a model package: its manifest (``seqnet_runtime.package.Manifest``) from a trained
model, and the folder all or nothing.

A package is staged in a temporary folder beside its destination and renamed into place once
complete and verified (``seqnet_runtime.fs.atomic_dir``); an earlier package at the
destination is replaced only then.
"""

import platform
import tempfile
from importlib import metadata
from pathlib import Path

from seqnet_export.preprocess import SIZE_DIVISIBLE
from seqnet_runtime.errors import SeqNetError
from seqnet_runtime.package import Manifest, Preprocess, is_package


def tool_versions():
    """Versions of what made the package (and the Python it ran on)."""
    out = {"python": platform.python_version()}
    for name in ("seqnet", "torch", "torchvision", "onnx", "onnxscript", "onnxruntime",
                 "openvino"):  # fmt: skip
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def check_destination(out):
    """Fail (one line) unless ``out`` can become the package: absent, or an earlier package,
    with a writable parent folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SeqNetError(f"--out {out} is a file, not a folder")
    if out.is_dir() and not is_package(out) and any(out.iterdir()):
        raise SeqNetError(
            f"--out {out} exists and is not a model package: choose another folder "
            "(only an earlier package is replaced)"
        )
    parent = out.parent
    if not parent.is_dir():
        raise SeqNetError(f"--out {out}: the folder {parent} does not exist")
    try:  # a real write: os.access misses read-only mounts and the like
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise SeqNetError(f"--out {out}: cannot write in {parent} ({e.strerror})") from None
    return out


def preprocess_of(model):
    """The model's size rule and normalisation, as the graphs apply them."""
    transform = model.transform
    if int(transform.size_divisible) != SIZE_DIVISIBLE:
        raise SeqNetError(
            f"the model pads to a multiple of {transform.size_divisible}; the exported graphs "
            f"pad to {SIZE_DIVISIBLE} only"
        )
    return Preprocess(
        min_size=int(transform.min_size[-1]),
        max_size=int(transform.max_size),
        pixel_mean=[float(v) for v in transform.image_mean],
        pixel_std=[float(v) for v in transform.image_std],
        size_divisible=SIZE_DIVISIBLE,
    )


def new_manifest(*, source, config_yaml, model, opset, graphs, batch_size):
    """The Manifest of a package (parity filled in by verification).

    Args:
        source: {"checkpoint": file name, "sha256": its digest}.
        config_yaml: the full training config (recorded for people; runtimes read the
            explicit fields only).
        model: the SeqNet it was exported from (its sizes, normalisation and thresholds).
        opset: ONNX opset of the graphs.
        graphs: {flavour: {graph name: seqnet_runtime.package.Graph}}.
        batch_size: images per call a runtime should use by default.
    """
    heads, rpn = model.roi_heads, model.rpn
    return Manifest(
        source=dict(source),
        preprocess=preprocess_of(model),
        thresholds={
            "score_thresh": float(heads.score_thresh),
            "nms_thresh": float(heads.nms_thresh),
            "nms_thresh_refined": float(heads.nms_thresh_refined),
            "rpn_nms_thresh": float(rpn.nms_thresh),
        },
        detections_per_image=int(heads.detections_per_img),
        embedding_dim=int(heads.embedding_head.dim),
        batch_size=int(batch_size),
        opset=int(opset),
        graphs=graphs,
        rpn={
            "pre_nms_top_n": int(rpn._pre_nms_top_n["testing"]),
            "post_nms_top_n": int(rpn._post_nms_top_n["testing"]),
        },
        pool_size=list(heads.box_roi_pool.output_size),
        tools=tool_versions(),
        config=config_yaml,
    )
