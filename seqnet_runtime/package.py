"""The model package format, in one place: what ``seqnet-export`` writes and every runtime reads.

A package is a folder (DEPLOY.md): ONNX graphs sharing one ``weights.bin``, TensorRT engines
where built, and ``manifest.json``, described here by ``Manifest``. ``read`` checks the format,
its version and every field a runtime uses, once, each problem in one line; ``write`` stores a
manifest atomically. No torch, no onnxruntime: any backend, benchmark or tool can read it.
"""

import dataclasses
import datetime
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seqnet_runtime import fs
from seqnet_runtime.errors import SeqNetError

MANIFEST = "manifest.json"
FORMAT = "seqnet-model-package"
FORMAT_VERSION = 2  # 2: graph flavours (fp32, fp16, engine_*), engine entries, the size rule
THRESHOLDS = ("score_thresh", "nms_thresh", "nms_thresh_refined", "rpn_nms_thresh")
GRAPHS = ("detect", "embed")


@dataclass(frozen=True)
class Graph:
    """One ONNX file of a flavour: its inputs and outputs ``[{name, dtype, shape}]``."""

    file: str
    inputs: list
    outputs: list

    @property
    def input_names(self):
        return [v["name"] for v in self.inputs]


@dataclass(frozen=True)
class Engine:
    """A TensorRT engine built from one graph of a flavour, for one GPU architecture."""

    file: str
    graph: str  # detect | embed
    flavour: str  # the graphs it was built from, e.g. engine_fp16
    target: str  # compute capability, e.g. sm86
    library: str  # tensorrt | tensorrt_rtx
    version: str  # the library's version: an engine runs only on the same one
    seconds: float = 0.0
    bytes: int = 0
    profile: dict = field(default_factory=dict)  # input -> [min, opt, max] shapes


@dataclass(frozen=True)
class Preprocess:
    """The size rule and normalisation the graphs apply (they take images in [0, 1])."""

    min_size: int
    max_size: int
    pixel_mean: list
    pixel_std: list
    size_divisible: int
    rule: str = (
        "normalise; scale = min(min_size / min(H, W), max_size / max(H, W)) in float64; "
        "resize bilinear (align_corners=False, no antialias) to floor(H * scale) x "
        "floor(W * scale); pad bottom/right with zeros to a multiple of size_divisible"
    )

    def resized_size(self, height, width):
        """(h, w) of an H x W image after the resize step (torchvision's rule, float64)."""
        return resized_size(height, width, self.min_size, self.max_size)

    @staticmethod
    def resize_axis(size_in, size_out):
        """One axis of the bilinear resize from ``size_in`` to ``size_out`` pixels as PyTorch's
        ``upsample_bilinear2d`` computes it (align_corners=False, no scale given): (index (2,
        size_out) int64 source rows i0, i1; weight (2, size_out) float32 l0, l1). What the
        ``engine`` graphs take as ``resize_{y,x}_{index,weight}``; the standard graphs compute
        the same in-graph (seqnet_export.preprocess).

        ``scale = in / out`` in float32; ``src = max(scale * (dst + 0.5) - 0.5, 0)`` with one
        rounding (PyTorch's fused multiply-add: exact in float64, then cast); ``i0 =
        floor(src)``, ``i1 = i0 + (i0 < in - 1)``, ``l1 = clamp(src - i0, 0, 1)``, ``l0 = 1 -
        l1``."""
        scale = np.float32(size_in) / np.float32(size_out)
        dst = np.arange(size_out, dtype=np.float64)
        src = (np.float64(scale) * (dst + 0.5) - 0.5).astype(np.float32)
        src = np.maximum(src, np.float32(0))
        i0 = np.floor(src).astype(np.int64)
        i1 = i0 + (i0 < size_in - 1)
        l1 = np.clip(src - i0.astype(np.float32), np.float32(0), np.float32(1))
        l0 = np.float32(1) - l1
        return np.stack([i0, i1]), np.stack([l0, l1]).astype(np.float32)

    def host_inputs(self, height, width):
        """{input name: array} of what a graph may take from the host for an H x W image:
        ``resized_hw`` (2,) int64 (the size rule) and the engine flavour's per-axis resize
        (``resize_axis``); a session feeds the ones its graph declares."""
        new_h, new_w = self.resized_size(height, width)
        if min(new_h, new_w) < 1:
            raise SeqNetError(
                f"a {height} x {width} image resizes to {new_h} x {new_w} pixels under the "
                f"package's size rule ({self.min_size}/{self.max_size}): too thin to search"
            )
        y_index, y_weight = self.resize_axis(height, new_h)
        x_index, x_weight = self.resize_axis(width, new_w)
        return {
            "resized_hw": np.array((new_h, new_w), np.int64),
            "resize_y_index": y_index,
            "resize_y_weight": y_weight,
            "resize_x_index": x_index,
            "resize_x_weight": x_weight,
        }


def resized_size(height, width, min_size, max_size):
    """(h, w) after torchvision's resize: scale = min(min_size / min(H, W), max_size /
    max(H, W)) in float64 (Python floats), then floor(H * scale) x floor(W * scale)."""
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return math.floor(height * scale), math.floor(width * scale)


@dataclass
class Manifest:
    """Everything a runtime needs to know about a package, and nothing it must guess."""

    source: dict  # {"checkpoint": file name, "sha256": its digest}
    preprocess: Preprocess
    thresholds: dict  # THRESHOLDS -> float: the defaults, graph inputs (overridable)
    detections_per_image: int
    embedding_dim: int
    batch_size: int  # images per call a runtime should use by default
    opset: int
    graphs: dict  # {flavour: {"detect": Graph, "embed": Graph}}
    rpn: dict = field(default_factory=dict)
    pool_size: list = field(default_factory=list)
    parity: dict = field(default_factory=dict)  # verification figures, per flavour/backend
    tools: dict = field(default_factory=dict)
    engines: list = field(default_factory=list)  # [Engine]
    config: str = ""  # the full training config, for people
    created_utc: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        )
    )

    def flavour(self, precision, graphs="standard"):
        """The ``graphs`` key for ``precision`` (fp32, fp16, int8) of ``graphs`` (standard or
        engine): ``fp16`` or ``engine_fp16``."""
        return precision if graphs == "standard" else f"{graphs}_{precision}"

    def key(self, flavour, thresholds):
        """Hex digest of what decides a session's outputs: the source weights, sizes, the
        graph flavour and the thresholds (the gallery index is valid only for the same key)."""
        h = hashlib.sha256()
        parts = (self.source, dataclasses.asdict(self.preprocess), self.detections_per_image,
                 self.embedding_dim, flavour, thresholds)  # fmt: skip
        for part in parts:
            h.update(json.dumps(part, sort_keys=True).encode())
        return h.hexdigest()

    def to_dict(self):
        out = {"format": FORMAT, "format_version": FORMAT_VERSION}
        out |= dataclasses.asdict(self)
        return out

    @classmethod
    def from_dict(cls, data, where="manifest"):
        """A Manifest from its JSON form; a missing or mistyped field is a one-line error."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise SeqNetError(f"{where}: not a SeqNet model package manifest")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise SeqNetError(
                f"{where}: package format version {version!r} is not supported by this runtime "
                f"(it reads version {FORMAT_VERSION}); export the checkpoint again with this "
                "version's seqnet-export, or use the seqnet version that wrote it"
            )
        try:
            graphs = {
                flavour: {name: Graph(**spec) for name, spec in files.items()}
                for flavour, files in data["graphs"].items()
            }
            for flavour, files in graphs.items():
                if set(files) != set(GRAPHS):
                    raise ValueError(f"flavour {flavour} has graphs {sorted(files)}")
            thresholds = {k: float(data["thresholds"][k]) for k in THRESHOLDS}
            manifest = cls(
                **{k: data[k] for k in ("source", "rpn", "pool_size", "parity", "tools")},
                preprocess=Preprocess(**data["preprocess"]),
                thresholds=thresholds,
                detections_per_image=_int(data["detections_per_image"]),
                embedding_dim=_int(data["embedding_dim"]),
                batch_size=_int(data["batch_size"]),
                opset=_int(data["opset"]),
                graphs=graphs,
                engines=[Engine(**e) for e in data["engines"]],
                config=data["config"],
                created_utc=data["created_utc"],
            )
        except KeyError as e:
            raise SeqNetError(f"{where}: malformed manifest: no field {e}") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise SeqNetError(f"{where}: malformed manifest: {e}") from None
        if not graphs:
            raise SeqNetError(f"{where}: malformed manifest: it lists no graphs")
        return manifest


def _int(value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def read(package):
    """The package's Manifest, checked; every problem a one-line SeqNetError."""
    package = Path(package)
    if package.is_file():
        raise SeqNetError(
            f"{package} is a file, not a model package folder (a checkpoint runs on the torch "
            "backend; seqnet-export makes a package of it)"
        )
    path = package / MANIFEST
    if not path.is_file():
        raise SeqNetError(f"{package}: not a model package (no {MANIFEST}); see seqnet-export")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SeqNetError(f"{path}: unreadable ({e.__class__.__name__}: {e})") from None
    return Manifest.from_dict(data, str(path))


def write(folder, manifest):
    """Store ``manifest`` in ``folder`` (atomically); returns the file's path."""
    return fs.write_json(Path(folder) / MANIFEST, manifest.to_dict(), indent=2)


def is_package(path):
    """Whether ``path`` is a folder holding a SeqNet package manifest (any format version)."""
    try:
        data = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT
