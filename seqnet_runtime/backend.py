"""The runtime's one interface to a model: a *session* that detects and embeds people.

Every backend (ONNX Runtime, OpenVINO, TensorRT, PyTorch) implements ``Session``; the search
app, the evaluation and the benchmarks talk to nothing else. Backends are registered, not
named here: the runtime's own below, any other through the ``seqnet.backends`` entry point
group (the training package registers ``torch`` so). ``load`` opens one by name, importing
its module (and its heavy libraries) only then.
"""

import importlib
from importlib import metadata

import numpy as np

from seqnet_runtime.errors import SeqNetError

ENTRY_POINTS = "seqnet.backends"
# name -> "module:factory"; a factory takes (model, **options) and returns a Session
RUNTIME_BACKENDS = {
    "onnxruntime": "seqnet_runtime.onnx_backend:OnnxSession",
    "openvino": "seqnet_runtime.openvino_backend:OpenVinoSession",
    "tensorrt": "seqnet_runtime.tensorrt_backend:TensorRTSession",
}
AUTO_ORDER = ("onnxruntime", "openvino")  # then the others: what ``backend="auto"`` tries


def backends():
    """{name: "module:factory"} of every registered backend, the runtime's first."""
    found = dict(RUNTIME_BACKENDS)
    for entry in metadata.entry_points(group=ENTRY_POINTS):
        found.setdefault(entry.name, entry.value)
    return found


class Session:
    """A loaded model. Subclasses set ``name``, ``key`` and ``dim`` and implement ``_detect``
    and ``_embed``; inputs are validated here, once for every backend.

    Attributes:
        name: the backend's name (``"torch"``, ...), for messages and reports.
        key: hex digest of everything that decides the outputs (weights, config, precision):
            the gallery index cache is valid only for the same key.
        dim: embedding size.
        batch_size: images per ``detect`` call that the backend runs best with.
    """

    name = "?"
    key = ""
    dim = 256
    batch_size = 1

    def detect(self, images, context_boxes=None):
        """Detect and embed every person in each image.

        Args:
            images: list of H x W x 3 RGB arrays, uint8 or float32 in [0, 1]; any sizes.
            context_boxes: optional list of one (4,) or (1, 4) box per image (x1y1x2y2
                pixels): the query-image-as-gallery mode of CBGM (the box is kept first with
                score 1 and its own embedding, no confidence weighting).
        Returns:
            One dict per image: ``boxes`` (N, 4) float32 x1y1x2y2 in the image's pixels,
            ``scores`` (N,) float32, ``embeddings`` (N, dim) float32 (confidence-weighted
            unit vectors, as the released model's gallery path). Independent of the batch.
        """
        images = [as_image(im) for im in images]
        if context_boxes is not None:
            if len(context_boxes) != len(images):
                raise SeqNetError(
                    f"{len(context_boxes)} context boxes for {len(images)} images: one each"
                )
            context_boxes = [as_boxes(b).reshape(1, 4) for b in context_boxes]
        return self._detect(images, context_boxes) if images else []

    def embed(self, image, boxes):
        """(k, dim) float32 L2-normalised embeddings of the people in ``boxes`` (k, 4)."""
        boxes = as_boxes(boxes)
        if not len(boxes):
            return np.zeros((0, self.dim), np.float32)
        return self._embed(as_image(image), boxes)

    def _detect(self, images, context_boxes):
        raise NotImplementedError

    def _embed(self, image, boxes):
        raise NotImplementedError


def as_image(image):
    """``image`` checked: an H x W x 3 array, uint8 or float32 in [0, 1]."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise SeqNetError(f"an image must be H x W x 3 RGB, got shape {image.shape}")
    if image.dtype != np.uint8 and image.dtype != np.float32:
        raise SeqNetError(f"an image must be uint8 or float32 in [0, 1], got {image.dtype}")
    return image


def as_boxes(boxes):
    """``boxes`` as a (k, 4) float32 array."""
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.size % 4 or (boxes.ndim == 2 and boxes.shape[1] != 4) or boxes.ndim > 2:
        raise SeqNetError(f"boxes must be (k, 4) x1y1x2y2, got shape {boxes.shape}")
    return boxes.reshape(-1, 4)


def load(model, backend="auto", **options):
    """Open ``model`` on ``backend`` (registered, or ``auto``: the first that loads).

    ``model`` is what the backend reads (a model package; for ``torch`` a checkpoint);
    ``options`` are the backend's own (device, precision, config ...).
    """
    registry = backends()
    if backend == "auto":
        names = [n for n in AUTO_ORDER if n in registry]
        names += [n for n in registry if n not in names and n != "tensorrt"]
    elif backend in registry:
        names = [backend]
    else:
        raise SeqNetError(f"unknown backend {backend!r}; expected one of {sorted(registry)}")
    missing = []
    for name in names:
        module, factory = registry[name].split(":")
        try:
            cls = getattr(importlib.import_module(module), factory)
        except ImportError as e:
            missing.append(f"{name} ({e.name or e} is not installed)")
            continue
        return cls(model, **options)
    raise SeqNetError("no backend could be loaded: " + "; ".join(missing))
