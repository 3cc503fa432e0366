"""The model as the apps use it: config + checkpoint -> a fast eval copy on the right device."""

import hashlib
import logging
from pathlib import Path

import torch

from seqnet.apps.images import to_tensor
from seqnet.modeling import build_model, load_checkpoint
from seqnet.modeling.inference import optimize_for_inference

log = logging.getLogger(__name__)


def pick_device(name):
    """``cfg.DEVICE``; "cuda" falls back to the CPU, with a warning, when there is no GPU."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        log.warning("DEVICE %s is not available; running on the CPU", name)
        return torch.device("cpu")
    return torch.device(name)


def load_model(cfg, ckpt):
    """The configured SeqNet with ``ckpt``'s weights, optimised for inference.

    A missing or corrupt checkpoint, or one that does not fit the config, raises SeqNetError.
    """
    device = pick_device(cfg.DEVICE)
    model = build_model(cfg, load_imagenet=False)
    load_checkpoint(model, ckpt)
    model.to(device)
    return optimize_for_inference(model, cfg.INFERENCE.PRECISION, cfg.INFERENCE.COMPILE), device


def model_key(cfg, ckpt):
    """A digest of what decides the detections and embeddings: the checkpoint's bytes and the
    model, input-size and inference config keys. The index is rebuilt when it changes."""
    h = hashlib.sha256()
    with open(Path(ckpt), "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    for node in (cfg.MODEL, cfg.INFERENCE):
        h.update(node.dump().encode())
    h.update(f"{cfg.INPUT.MIN_SIZE} {cfg.INPUT.MAX_SIZE}".encode())
    return h.hexdigest()


def detect(model, device, pil_images):
    """``model.predict`` on a batch of PIL images; results on the CPU."""
    out = model.predict([to_tensor(im).to(device) for im in pil_images])
    return [{k: v.cpu() for k, v in o.items()} for o in out]


def embed_query(model, device, pil_image, box):
    """The (256,) L2-normalised embedding of the person in ``box`` (x1y1x2y2 pixels)."""
    image = to_tensor(pil_image).to(device)
    return model.embed_boxes([image], [box.reshape(1, 4).to(device)])[0][0].cpu()
