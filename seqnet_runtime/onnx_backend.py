"""The ONNX Runtime backend: a model package (``seqnet-export``) behind the runtime's Session.

A package is a folder with ``manifest.json`` and the graphs it lists (DEPLOY.md):

- ``detect``: images (B, 3, H, W) float32 RGB in [0, 1], all of one size; ``context_boxes``
  (B, 4) and ``use_context`` (B,) for CBGM's query-image-as-gallery mode; the score and NMS
  thresholds as scalars -> ``boxes`` (B, K, 4) in the images' pixels, ``scores`` (B, K),
  ``embeddings`` (B, K, D) and ``count`` (B,): the first ``count`` rows are the detections;
- ``embed``: images and ``boxes`` (B, Q, 4) -> ``embeddings`` (B, Q, D).

The graphs resize, normalise and pad on their own (the manifest records the rule), so this
module only converts images to arrays, groups them by size and slices the padded outputs:
numpy and onnxruntime, nothing else.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from seqnet_runtime.backend import Session
from seqnet_runtime.errors import SeqNetError

MANIFEST = "manifest.json"
FORMAT = "seqnet-model-package"
FORMAT_VERSION = 1  # what this runtime reads; seqnet-export writes it
THRESHOLDS = ("score_thresh", "nms_thresh", "nms_thresh_refined", "rpn_nms_thresh")
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def read_manifest(package):
    """The package's manifest as a dict, its format and version checked."""
    path = Path(package) / MANIFEST
    if Path(package).is_file():
        raise SeqNetError(
            f"{package} is a file, not a model package folder (a checkpoint runs on the torch "
            "backend; seqnet-export makes a package of it)"
        )
    if not path.is_file():
        raise SeqNetError(f"{package}: not a model package (no {MANIFEST}); see seqnet-export")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SeqNetError(f"{path}: unreadable ({e.__class__.__name__}: {e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SeqNetError(f"{path}: not a SeqNet model package manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise SeqNetError(
            f"{path}: package format version {version!r} is not supported by this runtime "
            f"(it reads version {FORMAT_VERSION}); export the checkpoint again with this "
            "version's seqnet-export, or use the seqnet version that wrote it"
        )
    return manifest


def session_options(threads=None):
    """ONNX Runtime options, in one place: ``threads`` intra-op threads (default: ORT's)."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no warnings about unused initializers
    return options


def as_batch(images):
    """List of H x W x 3 arrays of one size (uint8 or float32 in [0, 1]) -> (B, 3, H, W)
    float32, uint8 divided by 255 in float32 (as the PyTorch backend)."""
    out = []
    for image in images:
        if image.dtype == np.uint8:
            image = image.astype(np.float32) / np.float32(255)
        out.append(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
    return np.stack(out)


class OnnxSession(Session):
    """A model package on ONNX Runtime: ``OnnxSession(package, device="cpu",
    precision=None)``.

    Args:
        package: the package folder.
        device: ``cpu`` or ``cuda`` (needs onnxruntime-gpu; checked, never a silent fallback).
        precision: ``fp32`` or ``fp16`` (a package exported with ``--fp16``); default fp16 on
            CUDA when the package has it, else fp32.
        threads: intra-op threads (default: ONNX Runtime's choice).
        batch_size: images per graph call (default: the package's).
        thresholds: overrides of the package's ``score_thresh``, ``nms_thresh``,
            ``nms_thresh_refined``, ``rpn_nms_thresh`` (graph inputs, so no re-export).
    """

    name = "onnxruntime"

    def __init__(
        self, package, device="cpu", precision=None, threads=None, batch_size=None, **thresholds
    ):
        self.package = Path(package)
        self.manifest = manifest = read_manifest(self.package)
        graphs = manifest["graphs"]
        if device not in PROVIDERS:
            raise SeqNetError(f"device {device!r} is not one of {sorted(PROVIDERS)}")
        if precision is None:
            precision = "fp16" if device == "cuda" and "fp16" in graphs else "fp32"
        if precision not in graphs:
            raise SeqNetError(
                f"{self.package}: no {precision} graphs in this package (it has "
                f"{', '.join(sorted(graphs))}); export with --fp16 for fp16"
            )
        unknown = set(thresholds) - set(THRESHOLDS)
        if unknown:
            raise SeqNetError(f"unknown options {sorted(unknown)}; thresholds are {THRESHOLDS}")
        self.precision, self.device = precision, device
        self.thresholds = {k: float(v) for k, v in manifest["thresholds"].items()}
        self.thresholds.update({k: float(v) for k, v in thresholds.items() if v is not None})
        self.dim = int(manifest["embedding_dim"])
        self.batch_size = int(batch_size or manifest.get("batch_size", 1))
        self.detections = int(manifest["detections_per_image"])
        options = session_options(threads)
        self._sessions = {
            name: self._open(self.package / spec["file"], options)
            for name, spec in graphs[precision].items()
        }
        h = hashlib.sha256()
        for part in ("source", "preprocess", "detections_per_image", "embedding_dim"):
            h.update(json.dumps(manifest.get(part), sort_keys=True).encode())
        h.update(json.dumps([precision, self.thresholds], sort_keys=True).encode())
        self.key = h.hexdigest()

    def _open(self, path, options):
        if not path.is_file():
            raise SeqNetError(f"{self.package}: the manifest lists {path.name}, which is missing")
        provider = PROVIDERS[self.device]
        if provider not in ort.get_available_providers():
            raise SeqNetError(
                f"ONNX Runtime has no {provider} here (install onnxruntime-gpu for cuda)"
            )
        try:
            session = ort.InferenceSession(str(path), options, providers=[provider])
        except Exception as e:  # ORT raises its own types for corrupt or unsupported graphs
            raise SeqNetError(f"{path}: ONNX Runtime cannot load it: {e}") from None
        if session.get_providers()[0] != provider:  # ORT falls back to the CPU silently
            raise SeqNetError(f"{path}: ONNX Runtime runs it on {session.get_providers()[0]}")
        return session

    def _scalars(self):
        return {k: np.array(v, np.float32) for k, v in self.thresholds.items()}

    def _detect(self, images, context_boxes):
        groups = {}
        for i, image in enumerate(images):
            groups.setdefault(image.shape[:2], []).append(i)
        results = [None] * len(images)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                for i, out in zip(chunk, self._run_detect(images, context_boxes, chunk)):
                    results[i] = out
        return results

    def _run_detect(self, images, context_boxes, chunk):
        if context_boxes is None:
            context = np.zeros((len(chunk), 4), np.float32)
            use = np.zeros(len(chunk), np.float32)
        else:
            context = np.concatenate([context_boxes[i] for i in chunk]).astype(np.float32)
            use = np.ones(len(chunk), np.float32)
        feeds = {
            "images": as_batch([images[i] for i in chunk]),
            "context_boxes": context,
            "use_context": use,
            **self._scalars(),
        }
        boxes, scores, embeddings, count = self._sessions["detect"].run(
            ["boxes", "scores", "embeddings", "count"], feeds
        )
        return [  # copies: a result does not keep the whole padded batch alive
            {
                "boxes": boxes[j, :n].copy(),
                "scores": scores[j, :n].copy(),
                "embeddings": embeddings[j, :n].copy(),
            }
            for j, n in enumerate(int(c) for c in count)
        ]

    def _embed(self, image, boxes):
        feeds = {"images": as_batch([image]), "boxes": boxes[None].astype(np.float32)}
        return self._sessions["embed"].run(["embeddings"], feeds)[0][0]
