"""Video files with PyAV: decoding every k-th frame, and writing an MP4."""

import importlib
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from seqnet_runtime.errors import SeqNetError


def _av():
    try:
        return importlib.import_module("av")
    except ImportError:
        raise SeqNetError("reading a video needs PyAV: pip install av") from None


def frame_count(path):
    """Frames the container declares (0 when it does not say): for the progress bar only."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            return container.streams.video[0].frames if container.streams.video else 0
    except (av.error.FFmpegError, OSError):
        return 0


def count_frames(path):
    """Frames of a video counted by decoding it (not converted): for containers that do not
    declare their count (0 when it cannot be read)."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            return sum(1 for _ in container.decode(container.streams.video[0]))
    except (av.error.FFmpegError, OSError, IndexError):
        return 0


def frame_rate(path):
    """Frames per second the container declares (25 when it does not say)."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate if container.streams.video else None
            return Fraction(rate) if rate else Fraction(25)
    except (av.error.FFmpegError, OSError):
        return Fraction(25)


def frames(path, every=1, start=0, end=None):
    """Yield ``(frame_index, seconds, PIL RGB image)`` for frames 0, k, 2k, ... of ``path``
    (``every`` = k), those in ``[start, end)`` only when given: a segment of a long video, read
    from the keyframe before ``start`` (frame indices count from the video's start either way).

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
            for i, frame in _indexed(container, stream, start):
                if end is not None and i >= end:
                    break
                if i >= start and i % every == 0:
                    got = True
                    yield i, float(frame.time or 0.0), frame.to_image().convert("RGB")
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise SeqNetError(
            f"cannot decode video {path}: not a video, or damaged ({e.__class__.__name__})"
        ) from None
    if not got and start == 0:
        raise SeqNetError(f"cannot decode video {path}: no frames")


def _indexed(container, stream, start):
    """``(index, frame)`` in decode order. From ``start`` > 0 the stream is first sought to the
    keyframe before it, and indices come from the frames' timestamps; that needs a constant
    frame rate and timestamps on every frame: otherwise it decodes from the first frame."""
    rate, base = stream.average_rate, stream.time_base
    seekable = start > 0 and rate and base and stream.guessed_rate == rate
    if seekable:
        origin = stream.start_time or 0
        container.seek(origin + int((start - 1) / rate / base), stream=stream, backward=True)
        decoded = container.decode(stream)
        first = next(decoded, None)
        if first is not None and first.pts is not None:
            index = round((first.pts - origin) * base * rate)
            if index <= start:
                yield index, first
                for frame in decoded:
                    if frame.pts is None:
                        raise ValueError("a frame without a timestamp after seeking")
                    yield round((frame.pts - origin) * base * rate), frame
                return
        container.seek(0, stream=stream)
    yield from enumerate(container.decode(stream))


def check_video(path):
    """Fail early (before the model loads) when the first frame cannot be decoded."""
    first = frames(path, 1)
    next(first)
    first.close()


class VideoWriter:
    """An H.264 (or, without libx264, MPEG-4) MP4 written frame by frame: memory stays flat
    however long the video. Frames of another size than the first are letterboxed to it."""

    def __init__(self, path, fps):
        self.av, self.path, self.fps = _av(), Path(path), Fraction(fps).limit_denominator(1001)
        self.container = self.stream = None
        self.frames = 0

    def _open(self, height, width):
        codec = "libx264" if "libx264" in self.av.codecs_available else "mpeg4"
        self.container = self.av.open(str(self.path), "w")
        self.stream = self.container.add_stream(codec, rate=self.fps)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            self.stream.options = {"crf": "23", "preset": "veryfast"}

    def write(self, image):
        """Append one H x W x 3 uint8 RGB frame."""
        if self.container is None:  # yuv420p needs even sizes
            self._open(image.shape[0] // 2 * 2 or 2, image.shape[1] // 2 * 2 or 2)
        frame = _fit(image, self.stream.height, self.stream.width)
        video_frame = self.av.VideoFrame.from_ndarray(frame, format="rgb24")
        for packet in self.stream.encode(video_frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self):
        if self.container is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()


def _fit(image, height, width):
    """``image`` scaled (aspect kept) and centred on a black ``height`` x ``width`` frame."""
    if image.shape[:2] == (height, width):
        return np.ascontiguousarray(image)
    scale = min(height / image.shape[0], width / image.shape[1])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    out = np.zeros((height, width, 3), np.uint8)
    top, left = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return out
