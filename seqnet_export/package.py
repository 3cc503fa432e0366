"""The model package on disk: its manifest, and writing it all or nothing.

A package is a folder (DEPLOY.md): the ONNX graphs, their shared ``weights.bin`` and
``manifest.json``, the one file a runtime reads to know everything else (sizes, normalisation,
thresholds, graph inputs and outputs, precision, parity figures, tool versions). It is staged in
a temporary folder beside its destination and renamed into place once complete and verified;
an earlier package at the destination is replaced only then.
"""

import contextlib
import datetime
import hashlib
import json
import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from seqnet_runtime.errors import SeqNetError
from seqnet_runtime.onnx_backend import FORMAT, FORMAT_VERSION, MANIFEST


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def tool_versions():
    """Versions of what made the package (and the Python it ran on)."""
    out = {"python": platform.python_version()}
    for name in ("seqnet", "torch", "torchvision", "onnx", "onnxscript", "onnxruntime"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def is_package(path):
    """Whether ``path`` is a folder holding a SeqNet package manifest (any format version)."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


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


@contextlib.contextmanager
def staged(out):
    """A temporary folder beside ``out``; renamed to ``out`` when the block succeeds (replacing
    an earlier package or an empty folder), removed when it fails."""
    out = Path(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's folder is private; a package is not
    try:
        yield tmp
        _fsync_tree(tmp)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.{os.getpid()}.old")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_tree(folder):
    for path in Path(folder).iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(folder, manifest):
    path = Path(folder) / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def new_manifest(*, source, config_yaml, model, opset, graphs, batch_size):
    """The manifest of a package (parity filled in by verification).

    Args:
        source: {"checkpoint": file name, "sha256": its digest}.
        config_yaml: the full training config (recorded for people; runtimes read the
            explicit fields only).
        model: the SeqNet it was exported from (its sizes, normalisation and thresholds).
        opset: ONNX opset of the graphs.
        graphs: {precision: {graph name: {"file", "inputs", "outputs"}}}.
        batch_size: images per call a runtime should use by default.
    """
    heads, rpn, transform = model.roi_heads, model.rpn, model.transform
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": dict(source),
        "preprocess": {
            "in_graph": True,
            "input": "images: (B, 3, H, W) float32 RGB in [0, 1], one size per call",
            "min_size": int(transform.min_size[-1]),
            "max_size": int(transform.max_size),
            "pixel_mean": [float(v) for v in transform.image_mean],
            "pixel_std": [float(v) for v in transform.image_std],
            "size_divisible": int(transform.size_divisible),
            "rule": (
                "normalise; scale = min(min_size / min(H, W), max_size / max(H, W)) in float64; "
                "resize bilinear (align_corners=False, no antialias) to floor(H * scale) x "
                "floor(W * scale); pad bottom/right with zeros to a multiple of size_divisible"
            ),
        },
        "thresholds": {
            "score_thresh": float(heads.score_thresh),
            "nms_thresh": float(heads.nms_thresh),
            "nms_thresh_refined": float(heads.nms_thresh_refined),
            "rpn_nms_thresh": float(rpn.nms_thresh),
        },
        "detections_per_image": int(heads.detections_per_img),
        "embedding_dim": int(heads.embedding_head.dim),
        "rpn": {
            "pre_nms_top_n": int(rpn._pre_nms_top_n["testing"]),
            "post_nms_top_n": int(rpn._post_nms_top_n["testing"]),
        },
        "pool_size": list(heads.box_roi_pool.output_size),
        "batch_size": int(batch_size),
        "opset": int(opset),
        "precisions": sorted(graphs),
        "graphs": graphs,
        "parity": {},
        "tools": tool_versions(),
        "engines": [],
        "config": config_yaml,
    }
