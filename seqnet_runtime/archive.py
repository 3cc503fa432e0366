"""Search a whole archive: many videos (and folders of images) in one ``seqnet-run``.

Videos are cut into segments of ``--segment`` seconds (a whole number of batches of sampled
frames, so that every frame is detected in the batch it would be in without segments: the
results are those of an unsplit run). Segments are detected in this process or, with
``--ray``, by Ray actors that each hold one session (the last segments in pieces, put back
together, so that no worker idles at the end); each segment's detections are written
atomically under ``OUT/.segments/<model key>/`` as it completes, so a run started again with the
same arguments detects only what is missing. When an input's segments are all there, its
outputs (today's ``seqnet-run`` folder: matches, appearances, annotated video, page, index)
are written into ``OUT/inputs/<name>/`` by the same search pass, taking every detection from
the segments; at the end ``OUT/matches.json`` and ``OUT/index.html`` rank each query's
appearances across the archive. A bad input (unreadable, not a video, gone mid-run) is
reported in one line and in the archive report; the rest is still searched.
"""

import glob
import hashlib
import io
import json
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from seqnet_runtime import archive_report, fs, video
from seqnet_runtime.errors import SeqNetError
from seqnet_runtime.gallery import ImageGallery, VideoGallery
from seqnet_runtime.images import IMAGE_EXTS, gallery_images
from seqnet_runtime.index import ARRAYS, Unit, chunk_arrays, load_index
from seqnet_runtime.run import check_options, open_session, read_queries, search_into
from seqnet_runtime.stream import frames_with_detections

log = logging.getLogger(__name__)

VIDEO_EXTS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ts",
                        ".wmv", ".flv", ".3gp"})  # fmt: skip
MARKERS = ("archive.json",)  # an --out holding this is ours to resume or replace
SEGMENTS = ".segments"


@dataclass(frozen=True)
class Segment:
    """Frames ``[start, end)`` (decode order; ``end`` None: to the video's end) of one video,
    every ``every``-th of them."""

    path: str
    key: str  # the input's key: its path, size, modification time, sampling and segments
    start: int
    end: int
    every: int
    frames: int  # sampled frames the container's frame count promises (for progress)

    @property
    def name(self):
        return f"{self.key}_{self.start:010d}.npz"


@dataclass
class Input:
    """One input of the archive: a video (cut into segments) or a folder of images."""

    path: Path
    name: str  # its output folder under OUT/inputs
    gallery: object
    segments: list  # [Segment]; empty for a folder of images (searched in the driver)
    error: str = None  # why it was skipped


def expand(inputs, list_file=None):
    """The archive's inputs from paths, folders, globs and a list file: ``(paths, skipped)``,
    ``skipped`` being ``[(input, reason)]``. A folder holding videos is its videos (its other
    files are reported); a folder of images only is one input."""
    wanted = list(inputs)
    if list_file:
        try:
            text = Path(list_file).read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise SeqNetError(
                f"--inputs {list_file}: cannot read it ({e.__class__.__name__})"
            ) from None
        wanted += [line.strip() for line in text.splitlines() if line.strip()[:1] not in ("", "#")]
    if not wanted:
        raise SeqNetError("give at least one input (a video, a folder, a glob or --inputs FILE)")
    paths, skipped, seen = [], [], set()

    def add(path):
        if path.resolve() not in seen:
            seen.add(path.resolve())
            paths.append(path)

    for item in wanted:
        path = Path(item)
        if not path.exists() and any(c in item for c in "*?["):
            matches = sorted(glob.glob(item))
            if not matches:
                skipped.append((item, "no file matches this pattern"))
            for match in matches:
                add(Path(match))
        elif not path.exists():
            skipped.append((item, "not found"))
        elif path.is_dir() and any(_is_video(p) for p in path.iterdir()):
            for p in sorted(path.iterdir()):
                if _is_video(p):
                    add(p)
                elif p.is_file() and not p.name.startswith("."):
                    skipped.append((str(p), "not a video"))
        else:
            add(path)
    return paths, skipped


def _is_video(path):
    return path.is_file() and path.suffix.lower() in VIDEO_EXTS


def plan(paths, *, every, segment, batch):
    """``[Input]``: each video cut into segments of ``segment`` seconds (None: one segment),
    each a multiple of ``batch`` sampled frames; what cannot be read gets its ``error``."""
    names, out = set(), []
    for path in paths:
        name, n = path.stem, 2
        while name in names:
            name, n = f"{path.stem}_{n}", n + 1
        names.add(name)
        try:
            if path.is_dir() or path.suffix.lower() in IMAGE_EXTS:
                files = gallery_images([str(path)]) if path.is_dir() else [path]
                gallery = ImageGallery(files)
                gallery.check()
                out.append(Input(path, name, gallery, []))
                continue
            if path.suffix.lower() not in VIDEO_EXTS:
                raise SeqNetError(f"{path.name} is not a video or a folder of images")
            gallery = VideoGallery(path, every)
            gallery.check()
            out.append(Input(path, name, gallery, _segments(gallery, every, segment, batch)))
        except SeqNetError as e:
            out.append(Input(path, name, None, [], error=str(e)))
    return out


def _segments(gallery, every, seconds, batch):
    total = video.frame_count(gallery.path) or video.count_frames(gallery.path)
    ((key, sig),) = gallery.units().items()
    step = total
    if seconds:
        rate = float(video.frame_rate(gallery.path))
        step = max(1, math.ceil(seconds * rate / (every * batch))) * every * batch
    digest = hashlib.sha256(json.dumps([key, sig, step]).encode()).hexdigest()[:16]
    starts = list(range(0, max(total, 1), max(step, 1)))
    ends = [*starts[1:], None]  # the last runs to the end, whatever the container declared
    return [
        Segment(key, digest, a, b, every, -(-((b or max(total, a)) - a) // every))
        for a, b in zip(starts, ends)
    ]


class SegmentGallery(VideoGallery):
    """A segment of a video, as a gallery of one unit."""

    def __init__(self, segment):
        super().__init__(segment.path, segment.every)
        self.segment = segment

    def size_hint(self, keys):
        return self.segment.frames

    def frames(self, key, wanted=None):
        s = self.segment
        yield from video.frames(self.path, s.every, s.start, s.end)


def detect_segment(session, segment, batch):
    """``(segment, npz bytes of its detections, frames, error)``: the work of a segment, in
    this process or on a Ray actor. A video that cannot be read is an error, not a raise."""
    try:
        gallery = SegmentGallery(segment)
        rows = [(i, t, d) for _, i, t, _, d in
                frames_with_detections(session, gallery, {}, batch, False)]  # fmt: skip
    except SeqNetError as e:
        return segment, None, 0, str(e)
    except OSError as e:  # gone or unreadable since the run began
        return segment, None, 0, f"cannot read {segment.path} ({e.strerror or e})"
    buffer = io.BytesIO()
    np.savez(buffer, **chunk_arrays(rows, session.dim))
    return segment, buffer.getvalue(), len(rows), None


class InProcess:
    """Segments detected one after another by this process's session."""

    name = "in-process"
    startup_s, workers, threads = 0.0, 1, None  # threads None: the runner's choice

    def __init__(self, session, batch):
        self.session, self.batch = session, batch
        self.segments = {"here": 0, "workers": 0}  # detected by this process / by workers

    def map(self, segments):
        for segment in segments:
            self.segments["here"] += 1
            yield detect_segment(self.session, segment, self.batch)

    def close(self):
        pass


class SegmentWorker:
    """A Ray actor: one session, loaded once, detecting segment after segment."""

    def __init__(self, model, backend, options, batch):
        from seqnet_runtime.backend import load

        self.session = load(model, backend, **options)
        self.batch = batch

    def ready(self):
        return True

    def detect(self, segment):
        return detect_segment(self.session, segment, self.batch)


MAX_PIECES = 4  # a segment is cut into at most so many pieces, at the archive's end


def cut(segment, pieces, batch):
    """``segment`` as at most ``pieces`` consecutive segments, each a whole number of batches of
    sampled frames as segments are (every frame is detected in the batch it is in unsplit); the
    last keeps the segment's end."""
    if pieces < 2:
        return [segment]
    per = -(-segment.frames // pieces)
    per = -(-per // batch) * batch * segment.every  # decoded frames of each piece but the last
    starts = list(range(segment.start, segment.start + segment.frames * segment.every, per))
    if len(starts) < 2:
        return [segment]
    out = [replace(segment, start=a, end=a + per, frames=per // segment.every) for a in starts]
    out[-1] = replace(out[-1], end=segment.end,
                      frames=segment.frames - sum(p.frames for p in out[:-1]))  # fmt: skip
    return out


class Work:
    """An archive's segments as Ray's workers take them: whole while much is left, then cut in
    pieces, so that at the end no worker waits while another finishes a whole segment (5 s of
    the demo's 10 frames/s video keep one core busy 15 s; W workers left (W - 1) / 2 such
    segments of idle cores at the end, on average). A piece's share follows guided
    self-scheduling: what is left, spread over every worker's two places, at most
    ``MAX_PIECES`` to a segment. ``complete`` joins a segment's pieces, in frame order, into
    the detections of the whole segment. Thread-safe: this process takes whole segments
    while the workers start."""

    def __init__(self, segments, batch):
        self.batch, self.lock = batch, threading.Lock()
        self.todo = list(segments)[::-1]  # popped from the end: in order
        self.left = sum(s.frames for s in self.todo)  # sampled frames not handed out
        self.pending = []  # the pieces of the segment being handed out, the next one last
        self.whole = {}  # piece: its segment, while out
        self.parts = {}  # segment: (how many pieces, {piece's start: result})
        self.cut = [0, 0]  # segments cut, pieces they made

    def segment(self):
        """The next whole segment (None when none is left)."""
        with self.lock:
            if self.pending or not self.todo:
                return None
            segment = self.todo.pop()
            self.left -= segment.frames
            return segment

    def piece(self, places):
        """The next piece of work for a worker (None when none is left); ``places``: how many
        pieces the workers hold at once."""
        with self.lock:
            if not self.pending:
                if not self.todo:
                    return None
                segment = self.todo.pop()
                share = max(1, -(-self.left // places))
                pieces = cut(segment, min(MAX_PIECES, -(-segment.frames // share)), self.batch)
                if len(pieces) > 1:
                    self.whole |= {p: segment for p in pieces}
                    self.parts[segment] = (len(pieces), {})
                    self.cut = [self.cut[0] + 1, self.cut[1] + len(pieces)]
                self.pending = pieces[::-1]
            piece = self.pending.pop()
            self.left -= piece.frames
            return piece

    def complete(self, result):
        """A worker's result; the whole segment's once its last piece is in (else None)."""
        with self.lock:
            segment = self.whole.pop(result[0], None)
            if segment is None:
                return result
            count, parts = self.parts[segment]
            parts[result[0].start] = result
            if len(parts) < count:
                return None
            del self.parts[segment]
        results = [parts[start] for start in sorted(parts)]
        errors = [r[3] for r in results if r[3] is not None]
        if errors:
            return segment, None, 0, errors[0]
        chunks = []
        for r in results:
            with np.load(io.BytesIO(r[1]), allow_pickle=False) as data:
                chunks.append({a: data[a] for a in ARRAYS})
        buffer = io.BytesIO()
        np.savez(buffer, **{a: np.concatenate([c[a] for c in chunks]) for a in ARRAYS})
        return segment, buffer.getvalue(), sum(r[2] for r in results), None


class RayPool:
    """Segments spread over Ray actors (``--ray auto`` starts or joins a local Ray; an address
    joins that cluster); ``workers`` None: one per CPU that Ray has free (a GPU each with
    ``device="cuda"``). A worker that dies is restarted and its segment run again. While the
    actors start (seconds: a process, imports and a model each), this process detects segments
    with its own ``session``, so that the start-up costs little throughput."""

    name = "ray"

    def __init__(self, address, workers, model, backend, options, session, batch):
        try:
            import ray
        except ImportError:
            raise SeqNetError("--ray needs Ray: pip install 'seqnet[cluster]'") from None
        self.ray, self.address, self.workers = ray, address, workers
        self.model, self.backend, self.options = model, backend, options
        self.session, self.batch = session, batch
        self.actors, self.startup_s, self.owns_ray, self.threads = [], 0.0, False, None
        self.segments = {"here": 0, "workers": 0}  # detected by this process / by the actors
        self.unit = "GPU" if options.get("device") == "cuda" else "CPU"  # each actor takes one

    def _init(self):
        """Ray, started here or joined, with room for the workers; before this process decodes
        anything. Ray starts its processes from this one with a ``preexec_fn``, and a child
        forked so frees the other threads' objects: were one of them decoding video, PyAV's
        frame converter (swscale) would wait for ever on worker threads that the child does
        not have (a CI run hung so, in ``ray.init``)."""
        self.owns_ray = not self.ray.is_initialized()
        try:
            self.ray.init(address=None if self.address == "auto" else self.address,
                          include_dashboard=False, log_to_driver=False,
                          ignore_reinit_error=True)  # fmt: skip
        except (ConnectionError, self.ray.exceptions.AuthenticationError) as e:
            raise SeqNetError(
                f"cannot join Ray at {self.address}: {str(e).splitlines()[0]} (a cluster "
                "started with token authentication needs RAY_AUTH_MODE=token and its token, "
                "~/.ray/auth_token or RAY_AUTH_TOKEN, here)"
            ) from None
        if self.workers is None:
            self.workers = max(1, int(self.ray.available_resources().get(self.unit, 0)))
        self._check_room()

    def _start_actors(self):
        """The actors, each with its model loaded."""
        cpus = int(self.unit == "CPU")
        # no more threads than the actor's CPUs: left to itself ONNX Runtime takes every core
        # of the node, for each actor there (it does not read Ray's OMP_NUM_THREADS)
        self.threads = cpus or None
        actor = self.ray.remote(num_cpus=cpus, num_gpus=1 - cpus, max_restarts=-1,
                                max_task_retries=-1)(SegmentWorker)  # fmt: skip
        options = {**self.options, "threads": self.threads}
        self.actors = [
            actor.remote(self.model, self.backend, options, self.batch) for _ in range(self.workers)
        ]
        self.ray.get([a.ready.remote() for a in self.actors])

    def _check_room(self):
        """Actors (one ``self.unit`` each) that the cluster can never place would be waited for
        forever: ask for no more than it has."""
        unit = self.unit
        has = int(self.ray.cluster_resources().get(unit, 0))
        if not has:
            device = " (--device cuda)" if unit == "GPU" else ""
            raise SeqNetError(
                f"a Ray worker takes a {unit}{device} and Ray has none: join a cluster with "
                f"{unit}s (--ray ADDRESS)"
            )
        if has < self.workers:
            raise SeqNetError(
                f"--workers {self.workers} needs {self.workers} {unit}s and Ray has {has}: "
                f"ask for at most {has}, or join a larger cluster (--ray ADDRESS)"
            )

    def map(self, segments):
        """Results as segments complete: first those this process detected while the actors
        started, then the actors'. Each actor holds two pieces of work (one running, one
        queued), so it never waits while the driver writes an input's outputs; towards the end
        the work is segments cut in pieces (``Work``)."""
        work, started = Work(segments, self.batch), threading.Event()
        local = queue.Queue()  # (result or None, exception or None)

        def detect_until_started():
            try:
                while not started.is_set() and (segment := work.segment()) is not None:
                    local.put((detect_segment(self.session, segment, self.batch), None))
            except BaseException as e:  # raised in the driver's thread below
                local.put((None, e))

        began = time.perf_counter()
        self._init()  # first: see _init
        meanwhile = threading.Thread(target=detect_until_started, daemon=True)
        meanwhile.start()
        try:
            self._start_actors()
        except BaseException:
            started.set()
            meanwhile.join()  # its segment done: no thread is left inside the model at exit
            raise
        started.set()
        self.startup_s = time.perf_counter() - began
        log.info("Ray: %d workers on %s, %s thread(s) each (%.1f s to start them)",
                 self.workers, self.ray.get_runtime_context().gcs_address,
                 self.threads or "the runner's", self.startup_s)  # fmt: skip
        running = {}

        def submit(actor):
            piece = work.piece(2 * len(self.actors))
            if piece is not None:
                running[actor.detect.remote(piece)] = actor

        for actor in self.actors * 2:
            submit(actor)
        meanwhile.join()  # its segment under way, while the actors work
        while not local.empty():
            result, error = local.get()
            if error is not None:
                raise error
            self.segments["here"] += 1
            yield result
        if self.segments["here"]:
            log.info("while the workers started, this process detected %d segments",
                     self.segments["here"])  # fmt: skip
        while running:
            (done,), _ = self.ray.wait(list(running), num_returns=1)
            submit(running.pop(done))
            result = work.complete(self.ray.get(done))
            if result is not None:
                self.segments["workers"] += 1
                yield result
        if work.cut:
            log.info("the last %d segments went to the workers in %d pieces", *work.cut)

    def close(self):
        for actor in self.actors:
            self.ray.kill(actor)
        if self.owns_ray:
            self.ray.shutdown()


def detect(inputs, workers, root, on_input):
    """Detect every missing segment of ``inputs`` with ``workers`` (InProcess or RayPool),
    writing each to ``root``; ``on_input(input)`` runs as soon as an input is complete."""
    root.mkdir(parents=True, exist_ok=True)
    missing = {}
    for item in inputs:
        if item.error is None:
            missing[item.name] = {s for s in item.segments if not (root / s.name).is_file()}
    by_segment = {s: item for item in inputs for s in missing.get(item.name, ())}
    for item in inputs:  # complete already (resumed), or images only
        if item.error is None and not missing[item.name]:
            on_input(item)
    todo = [s for item in inputs for s in missing.get(item.name, ()) if item.error is None]
    todo.sort(key=lambda s: (inputs.index(by_segment[s]), s.start))
    bar = tqdm(total=sum(s.frames for s in todo), desc="archive", unit="frame")
    try:
        for segment, data, _, error in workers.map(todo):
            item = by_segment[segment]
            bar.update(segment.frames)
            if item.error is not None:
                continue
            if error is not None:
                item.error = error
                log.warning("skipping %s: %s", item.path, error)
                continue
            fs.write_bytes(root / segment.name, data)
            missing[item.name].discard(segment)
            if not missing[item.name]:
                on_input(item)
    finally:
        bar.close()


def stored_unit(item, root):
    """An input's segments as one stored index unit (its detections, in frame order)."""
    ((key, sig),) = item.gallery.units().items()
    return {
        key: Unit(root, sig, tuple(s.name for s in sorted(item.segments, key=lambda s: s.start)))
    }


def is_archive(inputs, list_file=None, segment=None, ray=None):
    """Whether a ``seqnet-run`` is an archive search: several inputs, a list file, a glob, a
    folder holding videos, or segments or Ray asked for."""
    if len(inputs) != 1 or list_file or segment or ray:
        return True
    path = Path(inputs[0])
    if not path.exists():
        return any(c in inputs[0] for c in "*?[")
    return path.is_dir() and any(_is_video(p) for p in path.iterdir())


def search_archive(inputs, query_paths, *, list_file=None, box=None, model=None, backend="auto",
                   device="cpu", precision=None, graphs="standard", every=1, batch=None,
                   threshold=0.5, gap=2.0, topk=10, out="run_output", annotate=True,
                   segment=None, ray=None, workers=None):  # fmt: skip
    """``seqnet-run`` over an archive. Returns the archive report (matches.json's contents)."""
    check_options(every=every, batch=batch, threshold=threshold, gap=gap, topk=topk)
    if segment is not None and segment <= 0:
        raise SeqNetError(f"--segment is in seconds, more than 0, got {segment}")
    if workers is not None and workers < 1:
        raise SeqNetError(f"--workers must be 1 or more, got {workers}")
    out = Path(out)
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / MARKERS[0]).exists())
    ):
        raise SeqNetError(f"--out {out} holds other files; choose a new or empty folder")
    queries = read_queries(query_paths, box)
    paths, skipped = expand(inputs, list_file)
    start = time.perf_counter()
    session, model = open_session(model, backend, device, precision, graphs, queries)
    batch = batch or session.batch_size
    items = plan(paths, every=every, segment=segment, batch=batch)
    settings = {"model": str(model.resolve()), "every": every, "threshold": threshold, "gap": gap}
    fs.write_json(
        out / MARKERS[0], {"version": archive_report.FORMAT_VERSION, **settings, "segment": segment}
    )
    root = out / SEGMENTS / session.key[:16]
    reports = {}

    def write_input(item):
        try:
            search_input(item)
        except (SeqNetError, OSError) as e:  # gone or damaged since its segments were read
            item.error = str(e) if isinstance(e, SeqNetError) else f"cannot read it ({e})"
            log.warning("skipping %s: %s", item.path, item.error)

    def search_input(item):
        cached = (
            stored_unit(item, root)
            if item.segments
            else load_index(out / "inputs" / item.name / "index", session.key)
        )
        meta = {"input": str(item.path.resolve()), **settings}
        with fs.atomic_dir(out / "inputs" / item.name) as tmp:
            _, reports[item.name] = search_into(
                tmp, session, item.gallery, queries, cached, meta, batch=batch, topk=topk,
                annotate=annotate,
            )  # fmt: skip

    options = {"device": device, "precision": precision}
    options |= {} if graphs == "standard" else {"graphs": graphs}
    workers_ = (
        RayPool(ray, workers, model, backend, options, session, batch)
        if ray
        else InProcess(session, batch)
    )
    try:
        detect(items, workers_, root, write_input)
    finally:
        workers_.close()
    for item in items:
        if item.error is not None:
            skipped.append((str(item.path), item.error))
    frames = sum(r["frames"] for r in reports.values())
    seconds = time.perf_counter() - start
    report = archive_report.write(out, settings, items, reports, skipped, queries, topk)
    fs.write_json(out / "run.json", {
        "mode": workers_.name, "workers": workers_.workers, "threads": workers_.threads,
        "frames": frames, "seconds": round(seconds, 2), "startup_s": round(workers_.startup_s, 2),
        "segments": workers_.segments,
    })  # fmt: skip
    log.info("%d inputs, %d frames in %.1f s (%.2f frames/s, %s); %d skipped; wrote %s",
             len(reports), frames, seconds, frames / max(seconds, 1e-9), workers_.name,
             len(skipped), out / "index.html")  # fmt: skip
    return report
