"""Decoding every k-th frame of a video with PyAV."""

import importlib
from pathlib import Path

from seqnet_runtime.errors import SeqNetError


def _av():
    try:
        return importlib.import_module("av")
    except ImportError:
        raise SeqNetError(
            "reading a video needs PyAV: pip install av"
        ) from None


def frame_count(path):
    """Frames the container declares (0 when it does not say): for the progress bar only."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            return container.streams.video[0].frames if container.streams.video else 0
    except (av.error.FFmpegError, OSError):
        return 0


def frames(path, every=1):
    """Yield ``(frame_index, seconds, PIL RGB image)`` for frames 0, k, 2k, ... of ``path``.

    A file that is not a video, has no video stream, yields no frame or breaks while decoding
    raises one SeqNetError line.
    """
    av = _av()
    path = Path(path)
    if not path.is_file():
        raise SeqNetError(f"video not found: {path}")
    got = False
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise SeqNetError(f"cannot decode video {path}: it has no video stream")
            stream = container.streams.video[0]
            for i, frame in enumerate(container.decode(stream)):
                if i % every == 0:
                    got = True
                    yield i, float(frame.time or 0.0), frame.to_image().convert("RGB")
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise SeqNetError(
            f"cannot decode video {path}: not a video, or damaged ({e.__class__.__name__})"
        ) from None
    if not got:
        raise SeqNetError(f"cannot decode video {path}: no frames")


def check_video(path):
    """Fail early (before the model loads) when the first frame cannot be decoded."""
    first = frames(path, 1)
    next(first)
    first.close()
