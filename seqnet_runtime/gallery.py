"""A search gallery as *units* (an image file, or a whole video) that yield frames.

A unit's signature (size, mtime, and for a video the sampling step) tells the index whether
its stored detections are still valid; a frame is ``(frame, seconds, PIL image)`` with frame
-1 for a still image.
"""

from pathlib import Path

from seqnet_runtime import images, video
from seqnet_runtime.errors import SeqNetError


def _stat(path):
    st = Path(path).stat()
    return [int(st.st_size), int(st.st_mtime_ns)]


class Gallery:
    """What every gallery offers besides its units and frames."""

    def frames_at(self, hits):
        """{(unit, frame): PIL image} for the frames of ``hits`` (dicts with ``unit`` and
        ``frame``), each unit decoded once."""
        wanted = {}
        for h in hits:
            wanted.setdefault(h["unit"], set()).add(h["frame"])
        return {
            (unit, i): im
            for unit, frames in wanted.items()
            for i, _, im in self.frames(unit, frames)
        }


class ImageGallery(Gallery):
    """Image files; each one a unit with one frame."""

    def __init__(self, paths):
        self.paths = [Path(p).resolve() for p in paths]

    def units(self):
        """``{unit key: signature}`` for every image."""
        return {str(p): _stat(p) for p in self.paths}

    def size_hint(self, keys):
        """Frames in the units ``keys``, for the progress bar."""
        return len(keys)

    def frames(self, key, wanted=None):
        """The image's one frame (``wanted`` is for videos)."""
        yield -1, 0.0, images.read_pil(key)

    def check(self):
        """Every image must exist and be an image (headers only): fail before the model loads."""
        images.check_images(self.paths)


class VideoGallery(Gallery):
    """One video file: one unit whose frames are every ``every``-th decoded frame."""

    def __init__(self, path, every):
        if every < 1:
            raise SeqNetError(f"--every must be 1 or more, got {every}")
        self.path, self.every = Path(path).resolve(), every

    def units(self):
        return {str(self.path): _stat(self.path) + [self.every]}

    def size_hint(self, keys):
        """Sampled frames, when the container says how many it holds (else None)."""
        return -(-video.frame_count(self.path) // self.every) or None

    def frames(self, key, wanted=None):
        """Sampled frames; with ``wanted`` (frame indices) only those, stopping after the last."""
        last = max(wanted) if wanted else None
        for i, t, im in video.frames(self.path, self.every if wanted is None else 1):
            if wanted is None or i in wanted:
                yield i, t, im
            if last is not None and i >= last:
                return

    def check(self):
        video.check_video(self.path)


def open_gallery(path, every=1):
    """``--gallery DIR`` -> ImageGallery of its images; a video file -> VideoGallery."""
    path = Path(path)
    if path.is_dir():
        return ImageGallery(images.gallery_images([str(path)]))
    if not path.exists():
        raise SeqNetError(f"gallery not found: {path}")
    if path.suffix.lower() in images.IMAGE_EXTS:
        raise SeqNetError(f"--gallery takes a folder of images or a video, not one image: {path}")
    return VideoGallery(path, every)
