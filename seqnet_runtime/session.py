"""A model package behind the runtime's Session, on any graph runner.

The package logic lives here once: choosing the graph flavour, grouping frames by size,
feeding images and thresholds, slicing the fixed-K outputs by ``count``, CBGM's context mode
and the query path. A backend (``seqnet_runtime.runner``) only runs named feeds to named
outputs. The graphs (DEPLOY.md):

- ``detect``: images (B, 3, H, W) float32 RGB in [0, 1], all of one size; ``context_boxes``
  (B, 4) and ``use_context`` (B,) for CBGM's query-image-as-gallery mode; the thresholds as
  scalars -> ``boxes`` (B, K, 4) in the images' pixels, ``scores`` (B, K), ``embeddings``
  (B, K, D) and ``count`` (B,): the first ``count`` rows are the detections;
- ``embed``: images and ``boxes`` (B, Q, 4) -> ``embeddings`` (B, Q, D).

A graph that computes no size rule itself (the ``engine`` flavour: TensorRT has no float64)
declares inputs that the host computes from the manifest's rule (``Preprocess.host_inputs``:
the resized size, each axis's resize rows and weights), fed here by name.

The NMS thresholds are fed as the largest float32 at most the threshold (``iou_threshold``):
torchvision compares its float32 IoU with the threshold in float64, so ``iou > t`` in float32
is the same test only for that float32 (0.4 rounds up to 0.4000000059604645 otherwise).
"""

import contextlib
from pathlib import Path

import numpy as np

from seqnet_runtime import package as package_format
from seqnet_runtime.backend import Session
from seqnet_runtime.errors import SeqNetError

DETECT_OUTPUTS = ["boxes", "scores", "embeddings", "count"]
HOST_INPUTS = {"resized_hw", "resize_y_index", "resize_y_weight", "resize_x_index",
               "resize_x_weight"}  # fmt: skip
NMS_THRESHOLDS = ("nms_thresh", "nms_thresh_refined", "rpn_nms_thresh")


def iou_threshold(threshold):
    """The float32 ``t`` for which ``iou > t`` (float32) is torchvision's ``iou > threshold``
    (its float32 IoU against the threshold as a double): the largest float32 <= threshold."""
    value = np.float32(threshold)
    if float(value) > float(threshold):
        value = np.nextafter(value, np.float32(-np.inf))
    return value


def as_batch(images):
    """List of H x W x 3 arrays of one size (uint8 or float32 in [0, 1]) -> (B, 3, H, W)
    float32, uint8 divided by 255 in float32 (as the PyTorch backend)."""
    out = []
    for image in images:
        if image.dtype == np.uint8:
            image = image.astype(np.float32) / np.float32(255)
        out.append(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
    return np.stack(out)


class PackageSession(Session):
    """A model package on the graph runner ``runner`` (set by each backend's subclass).

    Args:
        package: the package folder.
        device: ``cpu`` or ``cuda`` (as the runner supports; never a silent fallback).
        precision: ``fp32``, ``fp16`` or ``int8`` (as the package has them); default fp16 on
            CUDA when the package has it, else fp32.
        graphs: ``standard`` (the default graphs) or ``engine`` (the flavour TensorRT builds).
        threads: intra-op threads (default: the runner's choice).
        batch_size: images per graph call (default: the package's).
        thresholds: overrides of the package's ``score_thresh``, ``nms_thresh``,
            ``nms_thresh_refined``, ``rpn_nms_thresh`` (graph inputs, so no re-export).
    """

    runner = None  # a seqnet_runtime.runner.GraphRunner subclass

    def __init__(self, package, device="cpu", precision=None, graphs="standard", threads=None,
                 batch_size=None, **thresholds):  # fmt: skip
        self.package = Path(package)
        self.manifest = manifest = package_format.read(self.package)
        self.runner.check_device(device)
        if graphs not in ("standard", "engine"):
            raise SeqNetError(f"graphs must be 'standard' or 'engine', got {graphs!r}")
        if precision is None:
            fp16 = manifest.flavour("fp16", graphs)
            precision = "fp16" if device == "cuda" and fp16 in manifest.graphs else "fp32"
        if precision == "bf16":  # no graphs of its own: OpenVINO runs the fp32 trunk in bf16
            raise SeqNetError(
                f"--precision bf16 runs on the openvino backend only (the fp32 graphs with a "
                f"bf16 trunk), not on {self.runner.name}"
            )
        self.flavour = manifest.flavour(precision, graphs)
        if self.flavour not in manifest.graphs:
            raise SeqNetError(
                f"{self.package}: no {self.flavour} graphs in this package (it has "
                f"{', '.join(sorted(manifest.graphs))}); seqnet-export writes fp16 with --fp16, "
                "engine graphs with --engine, int8 with --int8"
            )
        unknown = set(thresholds) - set(package_format.THRESHOLDS)
        if unknown:
            raise SeqNetError(
                f"unknown options {sorted(unknown)}; thresholds are {package_format.THRESHOLDS}"
            )
        self.precision, self.device = precision, device
        self.thresholds = dict(manifest.thresholds)
        self.thresholds.update({k: float(v) for k, v in thresholds.items() if v is not None})
        self.dim = manifest.embedding_dim
        self.batch_size = int(batch_size or manifest.batch_size)
        self._graphs, self._inputs = {}, {}
        for name, spec in manifest.graphs[self.flavour].items():
            path = self.runner.graph_file(self.package, manifest, self.flavour, name, device)
            if not path.is_file():
                raise SeqNetError(f"{self.package}: {path.name} is listed but missing")
            self._graphs[name] = self.runner(path, device=device, threads=threads)
            self._inputs[name] = set(spec.input_names)
        if self._graphs["detect"].max_batch:  # an engine's profile: calls of at most that
            self.batch_size = min(self.batch_size, self._graphs["detect"].max_batch)
        self.key = manifest.key(self.flavour, self.thresholds)

    @property
    def name(self):
        return self.runner.name

    @contextlib.contextmanager
    def override(self, **thresholds):
        """The session with some thresholds changed for the block (the export's verification
        compares every candidate at score threshold 0); the key is not changed."""
        unknown = set(thresholds) - set(self.thresholds)
        if unknown:
            raise SeqNetError(f"unknown thresholds {sorted(unknown)}")
        saved = dict(self.thresholds)
        self.thresholds.update({k: float(v) for k, v in thresholds.items()})
        try:
            yield self
        finally:
            self.thresholds = saved

    def _run(self, graph, outputs, images, **feeds):
        """Run ``graph`` on ``images`` (one size) with ``feeds``, feeding only what it takes."""
        feeds["images"] = batch = as_batch(images)
        inputs = self._inputs[graph]
        if HOST_INPUTS & inputs:
            host = self.manifest.preprocess.host_inputs(*batch.shape[2:])
            feeds |= {k: v for k, v in host.items() if k in inputs}
        feeds |= {
            k: np.array(iou_threshold(v) if k in NMS_THRESHOLDS else v, np.float32)
            for k, v in self.thresholds.items()
        }
        feeds = {k: v for k, v in feeds.items() if k in inputs}
        return self._graphs[graph].run(outputs, feeds)

    def _detect(self, images, context_boxes):
        groups = {}
        for i, image in enumerate(images):
            groups.setdefault(image.shape[:2], []).append(i)
        results = [None] * len(images)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                for i, out in zip(chunk, self._detect_batch(images, context_boxes, chunk)):
                    results[i] = out
        return results

    def _detect_batch(self, images, context_boxes, chunk):
        if context_boxes is None:
            context = np.zeros((len(chunk), 4), np.float32)
            use = np.zeros(len(chunk), np.float32)
        else:
            context = np.concatenate([context_boxes[i] for i in chunk]).astype(np.float32)
            use = np.ones(len(chunk), np.float32)
        boxes, scores, embeddings, count = self._run(
            "detect", DETECT_OUTPUTS, [images[i] for i in chunk],
            context_boxes=context, use_context=use,
        )  # fmt: skip
        return [  # copies: a result does not keep the whole padded batch alive
            {
                "boxes": boxes[j, :n].astype(np.float32),
                "scores": scores[j, :n].astype(np.float32),
                "embeddings": embeddings[j, :n].astype(np.float32),
            }
            for j, n in enumerate(int(c) for c in count)
        ]

    def _embed(self, image, boxes):
        step = self._graphs["embed"].max_boxes or len(boxes)
        parts = [
            self._run("embed", ["embeddings"], [image], boxes=boxes[None, i : i + step])[0][0]
            for i in range(0, len(boxes), step)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
