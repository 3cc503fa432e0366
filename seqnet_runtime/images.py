"""Reading and validating user images and query boxes, each failure as one clear line."""

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from seqnet_runtime.errors import SeqNetError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def read_pil(path):
    """The image at ``path`` as an RGB PIL image, upright as viewers show it (EXIF rotation
    applied, so a query box read off a viewer lands on the same pixels)."""
    path = Path(path)
    if not path.is_file():
        raise SeqNetError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return ImageOps.exif_transpose(im).convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise SeqNetError(f"cannot read image {path}: {e.__class__.__name__}") from None


def to_array(pil):
    """RGB PIL image -> H x W x 3 uint8 array, what a session takes."""
    return np.asarray(pil, dtype=np.uint8)


def check_box(box, width, height, what="the query image"):
    """``box`` (x1, y1, x2, y2) as a (4,) float32 array, if it has area and lies inside the
    image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    shown = f"--box {x1:g} {y1:g} {x2:g} {y2:g}"
    if x2 <= x1 or y2 <= y1:
        raise SeqNetError(f"{shown} has zero size: need X1 < X2 and Y1 < Y2")
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise SeqNetError(f"{shown} lies outside {what} ({width} x {height} pixels)")
    return np.array([x1, y1, x2, y2], np.float32)


def list_images(folder):
    """Image files directly inside ``folder`` (by extension, sorted; hidden files skipped)."""
    folder = Path(folder)
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")
    )


def gallery_images(args):
    """The gallery as image paths from ``--gallery IMG... | DIR``; an empty one is an error."""
    if len(args) == 1 and Path(args[0]).is_dir():
        paths = list_images(args[0])
        if not paths:
            exts = " ".join(sorted(IMAGE_EXTS))
            raise SeqNetError(f"empty gallery: no images ({exts}) in {args[0]}")
        return paths
    if not args:
        raise SeqNetError("empty gallery: give --gallery images or a folder")
    return [Path(a) for a in args]


def check_images(paths, limit=10):
    """SeqNetError listing (up to ``limit``) files that are missing or not readable images;
    only headers are read, so a large gallery is checked in moments."""
    bad = []
    for path in map(Path, paths):
        try:
            with Image.open(path) as im:
                im.size  # noqa: B018 - the header is parsed here, pixels are not decoded
        except (OSError, SyntaxError, ValueError) as e:
            bad.append(f"{path} ({'missing' if not path.exists() else type(e).__name__})")
    if bad:
        more = f"; and {len(bad) - limit} more" if len(bad) > limit else ""
        shown = "; ".join(bad[:limit]) + more
        raise SeqNetError(f"{len(bad)} of {len(paths)} images missing or unreadable: {shown}")
